"""A notebook run out of order records what its cells used: 04_generate driven cell by cell in
a real kernel, as a tinkering student drives it (a parameter changed and the setup cell
skipped, every cell run twice in a row)."""
import hashlib
import json

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from midilstm.runs import NOTEBOOK_DIR, run_series

SMALL = {"epochs": 2, "n_events": 40, "n_variations": 2}


def hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """04_generate in a live kernel over a run whose 01..03 are done."""
    run_dir = tmp_path_factory.mktemp("order") / "run"
    run_series(SMALL, run_dir, series=("01_parse", "02_encode", "03_train"))
    nb = nbformat.read(NOTEBOOK_DIR / "04_generate.ipynb", as_version=4)
    where = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(where + 1, nbformat.v4.new_code_cell(  # as papermill injects parameters
        f"run_dir = {str(run_dir)!r}\nn_events = 40\nn_variations = 2"))
    client = NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    with client.setup_kernel():
        def run(i):
            return client.execute_cell(nb.cells[i], i)
        yield nb, run, run_dir


def index(nb, text):
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and text in c.source)


def test_a_changed_parameter_is_refused_before_any_file_changes_then_recorded(student):
    nb, run, run_dir = student
    for i in range(len(nb.cells)):
        if nb.cells[i].cell_type == "code":
            run(i)
    generated = run_dir / "generated"
    before = hashes(generated)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["steps"]["04_generate"]["params"]["temperature"] == 1.0

    # the student edits the parameters cell (temperature = 0.5), runs it, and skips the setup cell
    nb.cells.append(nbformat.v4.new_code_cell("temperature = 0.5"))
    run(len(nb.cells) - 1)
    generation = index(nb, "samples = generate(")
    with pytest.raises(CellExecutionError, match="temperature is 0.5 now but 04_generate began "
                                                 "with 1.0: re-run its setup cell"):
        run(generation)
    assert hashes(generated) == before  # refused before writing
    with pytest.raises(CellExecutionError, match="temperature is 0.5"):
        run(index(nb, 'run.complete("04_generate"'))

    # with the setup cell re-run, the music is made at 0.5 and recorded so
    run(index(nb, 'run.begin("04_generate"'))
    run(generation)
    run(index(nb, 'run.complete("04_generate"'))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["steps"]["04_generate"]["params"]["temperature"] == 0.5
    assert hashes(generated) != before
    assert manifest["steps"]["04_generate"]["outputs"] == {
        f"generated/{name}": digest for name, digest in hashes(generated).items()}


def test_every_cell_run_twice_in_a_row_is_harmless(student):
    nb, run, run_dir = student
    for i in range(len(nb.cells)):
        if nb.cells[i].cell_type == "code":
            run(i)
            run(i)  # raises CellExecutionError on any error
    steps = json.loads((run_dir / "manifest.json").read_text())["steps"]
    assert "completed" in steps["04_generate"]


def test_after_a_restart_the_setup_cell_alone_brings_the_parameters_back(student, tmp_path):
    from midilstm.params import names
    nb, run, run_dir = student
    saved = nbformat.read(NOTEBOOK_DIR / "04_generate.ipynb", as_version=4)
    cell = next(c for c in saved.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace('run_dir: str = "../runs/notebooks"',
                                      f"run_dir: str = {str(run_dir)!r}")
    nbformat.write(saved, tmp_path / "04_generate.ipynb")  # the student's notebook, as saved
    nb.cells.append(nbformat.v4.new_code_cell(  # a restart: the parameters are gone
        f"import os\nos.environ['JPY_SESSION_NAME'] = {str(tmp_path / '04_generate.ipynb')!r}\n"
        f"for name in {names('04_generate')!r}:\n    globals().pop(name, None)"))
    run(len(nb.cells) - 1)
    out = run(index(nb, 'run.begin("04_generate"'))  # the setup cell alone: no NameError
    text = "".join(o.get("text", "") for o in out.outputs)
    assert "the parameters cell had not run" in text and "temperature=1.0" in text
