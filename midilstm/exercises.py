"""Exercises: a student's answer checked without the answer in sight, and the student edition.

Each notebook ends with exercises. Where one has an answer to check, three cells follow it:
``answer = None`` for the student, the teacher's solution (a cell tagged ``solution``), and
``exercises.check(key, answer, ...)``. ``check`` says "not answered yet" while ``answer`` is None,
"correct!" when it matches, and fails with a hint (never the answer) otherwise. A fixed answer is
compared by a hash of its rounded value; one that depends on the run (the piece, the model) is
worked out here from the data the notebook passes in, so the notebook never shows it.

``write_student_edition(out)`` copies the notebooks without their ``solution`` cells (nbconvert's
``TagRemovePreprocessor``, the ecosystem's way) and without the outputs of the ``exercise``
cells, which would say "correct!" for an answer the student has not given yet.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

SOLUTION_TAG = "solution"  # the teacher's answers: cells left out of the student edition
EXERCISE_TAG = "exercise"  # check cells: kept, their (teacher's) outputs cleared


def _digest(value, digits: int) -> str:
    return hashlib.sha256(f"{round(float(value), digits):.{digits}f}".encode()).hexdigest()


def _hashed(digest: str, digits: int):
    """A fixed answer, known only by the hash of its value rounded to ``digits`` decimals."""
    return lambda answer, **_: _digest(answer, digits) == digest


def _note_offs(answer, events, **_) -> bool:
    return answer == int((np.asarray(events)["velocity"] == 0).sum())


def _pitch_classes(answer, sample, **_) -> bool:
    sample = np.asarray(sample)
    return answer == len({int(p) % 12 for p in sample["pitch"][sample["velocity"] > 0]})


# key -> (is this answer right?, the hint given when it is not)
CHECKS = {
    "01_parse/2": (_note_offs, "count the events whose velocity is 0"),
    "02_encode/2": (_hashed("c6f3ac57944a531490cd39902d0f777715fd005efac9a30622d5f5205e7f6894", 0),
                    "32 bins for the note-ons, and one class more"),
    "03_train/2": (_hashed("76a5b6c6329b03ab1103eae583af61f6c8191f10dc05012b0a90d74a15d806f7", 2),
                   "the forget gate keeps sigma(b) of the memory at each step"),
    "04_generate/2": (_hashed("d829857eb1366e70be857a69886d1555af0d32681beab068afb93492c2e2b843", 0),
                      "90 quarter notes a minute, 480 ticks each"),
    "05_evaluate/2": (_pitch_classes, "the pitch classes of the first sample's note-ons"),
}


def check(key: str, answer, **data) -> bool:
    """Check the student's ``answer`` to exercise ``key`` ("03_train/2"); ``data``: what the
    checker needs from the notebook (``events=...``). Returns whether it is right; raises
    ``AssertionError`` with a hint when it is wrong."""
    if key not in CHECKS:
        raise KeyError(f"no exercise {key!r}; known: {', '.join(CHECKS)}")
    if answer is None:
        print(f"exercise {key}: not answered yet (put your answer in `answer` above)")
        return False
    right, hint = CHECKS[key]
    try:
        ok = bool(right(answer, **data))
    except (TypeError, ValueError):  # an answer of the wrong kind: a list for a number, ...
        ok = False
    assert ok, f"exercise {key}: not quite ({hint})"
    print(f"exercise {key}: correct!")
    return True


def write_student_edition(out, notebooks=None) -> list[Path]:
    """Write the student copy of ``notebooks`` (default: the series) into the folder ``out``:
    no ``solution`` cells, the ``exercise`` cells' outputs cleared. Returns the files written."""
    import nbformat
    from nbconvert.preprocessors import TagRemovePreprocessor

    from .files import write_bytes_atomic
    from .params import SERIES
    from .runs import NOTEBOOK_DIR

    remove = TagRemovePreprocessor(remove_cell_tags={SOLUTION_TAG}, enabled=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in notebooks or SERIES:
        nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        nb, _ = remove.preprocess(nb, {})
        for cell in nb.cells:
            if EXERCISE_TAG in cell.metadata.get("tags", []):
                cell.outputs, cell.execution_count = [], None
        path = out / f"{name}.ipynb"
        write_bytes_atomic(path, nbformat.writes(nb).encode() + b"\n")
        written.append(path)
    return written
