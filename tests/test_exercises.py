"""Exercises: checks that do not show their answers, and a student edition without solutions
that still runs from start to end."""
import json
import math

import pytest

from midilstm import exercises
from midilstm.events import make_events
from midilstm.params import SERIES
from midilstm.runs import NOTEBOOK_DIR

EVENTS = make_events([(60, 80, 0.0), (64, 80, 0.5), (60, 0, 0.5), (64, 0, 0.0), (67, 70, 0.2)])


def test_an_unanswered_exercise_says_so_and_does_not_fail(capsys):
    assert exercises.check("03_train/2", None) is False
    assert "not answered yet" in capsys.readouterr().out


@pytest.mark.parametrize("key, right, wrong, data", [
    ("01_parse/2", 2, 3, {"events": EVENTS}),
    ("02_encode/2", 33, 32, {}),
    ("03_train/2", (1 / (1 + math.exp(-2))) ** 10, 0.5, {}),
    ("04_generate/2", 720, 768, {}),
    ("05_evaluate/2", 3, 5, {"sample": EVENTS}),  # C, E, G
])
def test_a_right_answer_passes_and_a_wrong_one_gets_a_hint_not_the_answer(key, right, wrong, data,
                                                                          capsys):
    assert exercises.check(key, right, **data)
    assert "correct" in capsys.readouterr().out
    for bad in (wrong, "text", [right]):
        with pytest.raises(AssertionError, match="not quite") as err:
            exercises.check(key, bad, **data)
        assert f"{right}" not in str(err.value).replace(key, "")  # a hint, never the answer


def cells(path):
    return json.loads(path.read_text())["cells"]


def test_every_notebook_has_its_solution_apart_and_its_check_tagged():
    for name in SERIES:
        nb = cells(NOTEBOOK_DIR / f"{name}.ipynb")
        solutions = [c for c in nb if exercises.SOLUTION_TAG in c["metadata"].get("tags", [])]
        checks = [c for c in nb if exercises.EXERCISE_TAG in c["metadata"].get("tags", [])]
        assert any(c["cell_type"] == "code" for c in solutions), name
        assert any(c["cell_type"] == "markdown" and "Answer key" in "".join(c["source"])
                   for c in solutions), name
        assert len(checks) == 1 and "exercises.check(" in "".join(checks[0]["source"]), name
        intro = "".join(nb[0]["source"])
        assert "minutes" in intro and "Prerequisites" in intro, name
        # no check cell spells out its answer: the teacher's solution sits in its own cell
        assert not any("answer ==" in "".join(c["source"]) for c in nb if c not in solutions), name


def test_the_student_edition_has_no_solutions_and_runs_with_the_checks_unanswered(tmp_path):
    import papermill

    out = tmp_path / "student"
    written = exercises.write_student_edition(out)
    assert [p.name for p in written] == [f"{name}.ipynb" for name in SERIES]
    for path in written:
        for cell in cells(path):
            assert exercises.SOLUTION_TAG not in cell["metadata"].get("tags", [])
            if exercises.EXERCISE_TAG in cell["metadata"].get("tags", []):
                assert cell["outputs"] == []
    small = {"03_train": {"epochs": 2}, "04_generate": {"n_events": 40, "n_variations": 2},
             "05_evaluate": {"temperatures": [1.0], "top_ks": [0], "grid_variations": 1,
                             "grid_events": 40, "long_events": 60}}
    run_dir = tmp_path / "run"
    for name in SERIES:
        executed = tmp_path / f"{name}.out.ipynb"
        papermill.execute_notebook(str(out / f"{name}.ipynb"), str(executed), cwd=str(out),
                                   parameters={"run_dir": str(run_dir), **small.get(name, {})},
                                   progress_bar=False, kernel_name="python3")
        check = next(c for c in cells(executed)
                     if exercises.EXERCISE_TAG in c["metadata"].get("tags", []))
        text = "".join("".join(o.get("text", "")) for o in check["outputs"])
        assert "not answered yet" in text, name
    steps = json.loads((run_dir / "manifest.json").read_text())["steps"]
    assert all("completed" in steps[name] for name in SERIES), steps  # the whole series ran


def test_the_command_writes_the_student_edition(tmp_path):
    from midilstm.cli import main
    assert main(["student-edition", "--out", str(tmp_path / "copy")]) == 0
    for name in SERIES:
        tags = [c["metadata"].get("tags", []) for c in cells(tmp_path / "copy" / f"{name}.ipynb")]
        assert not any(exercises.SOLUTION_TAG in t for t in tags) and tags, name
