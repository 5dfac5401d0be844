"""The committed notebooks, re-executed in place (the maintainer's ``refresh-notebooks``).

After an intended change the notebooks are executed again with their own defaults, so their
stored outputs match what nbval will see; what changes from one execution to the next (times,
durations, absolute paths, widget ids) is dropped, and a notebook whose checked outputs did not
change is left as it was.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

from . import runs
from .files import write_bytes_atomic
from .runs import KERNEL_ARGS, SERIES, ProgressLines


def refresh_notebooks(series=SERIES, log=print, force: bool = False) -> None:
    """Re-execute the committed notebooks with their own defaults (after an intended change), so
    their stored outputs match what nbval will see. What changes from one execution to the next
    (times, durations, absolute paths) is dropped, and a notebook whose sources and checked
    outputs (those nbval compares) did not change is left as it was, so nothing changed gives
    no diff: only cells tagged ``nbval-ignore-output`` (timings, progress bars) would differ.
    ``force`` writes every notebook anyway: after a source edit made in the file itself, whose
    ignored outputs would otherwise stay those of the old source."""
    import tempfile

    import papermill

    for name in series:
        path = runs.NOTEBOOK_DIR / f"{name}.ipynb"
        log(f"executing {path.name}")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            executed = Path(scratch) / path.name
            papermill.execute_notebook(str(path), str(executed), cwd=str(runs.NOTEBOOK_DIR),
                                       kernel_name="python3", progress_bar=False,
                                       extra_arguments=KERNEL_ARGS,
                                       stdout_file=ProgressLines(name, log))
            new = stable_notebook(executed.read_text())
        if not force and _checked_view(new) == _checked_view(path.read_text()):
            log(f"{name}: no checked output changed; left as it was")
        else:
            write_bytes_atomic(path, new.encode())
        log(f"{name} done in {time.perf_counter() - start:.1f} s")


def _checked_view(text: str) -> list:
    """What a re-execution must keep for the notebook to count as unchanged: every cell's type,
    tags and source, every figure, and the text outputs nbval checks (those of cells not tagged
    ``nbval-ignore-output``; the others hold timings and progress bars)."""
    view = []
    for cell in json.loads(text)["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        outputs = [str(bool(cell.get("outputs")))]  # a cell that lost its outputs has changed
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            outputs.append("".join(data.get("image/png", "")))
            if "nbval-ignore-output" not in tags:
                outputs.append("".join(out.get("text", "")) + "".join(data.get("text/plain", "")))
        view.append((cell["cell_type"], tags, "".join(cell["source"]), "".join(outputs)))
    return view


def stable_notebook(text: str) -> str:
    """An executed notebook's JSON without papermill's and Jupyter's timing and path metadata."""
    import nbformat

    nb = nbformat.reads(_with_cell_ids(text), as_version=4)
    for key in ("start_time", "end_time", "duration", "input_path", "output_path"):
        nb.metadata.get("papermill", {}).pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    text = nbformat.writes(nb)
    for i, model_id in enumerate(_widget_ids(nb)):
        text = text.replace(model_id, f"{i + 1:032x}")
    return nbformat.writes(nbformat.reads(text, as_version=4)) + "\n"  # keys sorted again


def _with_cell_ids(text: str) -> str:
    """Give cells without an id one made from their content (nbformat would draw a random one)."""
    nb = json.loads(text)
    if (nb.get("nbformat"), nb.get("nbformat_minor", 0)) < (4, 5):
        return text
    taken = {c["id"] for c in nb["cells"] if "id" in c}
    for index, cell in enumerate(nb["cells"]):
        if "id" not in cell:
            cell_id = hashlib.sha1("".join(cell.get("source", "")).encode()).hexdigest()[:8]
            cell["id"] = cell_id if cell_id not in taken else f"{cell_id}-{index}"
            taken.add(cell["id"])
    return json.dumps(nb)


def _widget_ids(nb) -> list[str]:
    """The random ids of the notebook's widget models (progress bars), in an order that does not
    depend on them: those shown in outputs, then the models they refer to, then any others."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    state = state.get("state", {})
    queue = re.findall(r'"model_id": "([0-9a-f]{32})"', json.dumps(nb.cells, sort_keys=True))
    queue += sorted(state, key=lambda k: re.sub("[0-9a-f]{32}", "", json.dumps(state[k], sort_keys=True)))
    seen = {}
    while queue:
        model_id = queue.pop(0)
        if model_id not in seen:
            seen[model_id] = None
            queue[:0] = re.findall(r"IPY_MODEL_([0-9a-f]{32})", json.dumps(state.get(model_id, {}),
                                                                          sort_keys=True))
    return list(seen)
