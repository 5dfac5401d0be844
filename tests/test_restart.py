"""After a kernel restart the setup cell alone brings the parameters back, as data: the values
of the notebook's saved parameters cell fill in what is missing, and nothing else changes."""
import json

from midilstm.params import SERIES, names
from midilstm.restart import recover_parameters, saved_parameters
from midilstm.runs import NOTEBOOK_DIR


def test_every_notebook_declares_its_parameters_as_literals():
    for step in SERIES:
        saved = saved_parameters(NOTEBOOK_DIR / f"{step}.ipynb")
        assert set(names(step)) <= set(saved), step


def test_missing_parameters_come_from_the_notebook_the_kernel_runs(tmp_path, monkeypatch, capsys):
    nb = json.loads((NOTEBOOK_DIR / "04_generate.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = [line.replace("temperature: float = 1.0", "temperature: float = 0.5")
                      for line in cell["source"]] + ["\nodd = __import__('os').getcwd()\n"]
    edited = tmp_path / "04_generate.ipynb"
    edited.write_text(json.dumps(nb))
    monkeypatch.setenv("JPY_SESSION_NAME", str(edited))
    namespace = {"seed": 7}  # what the student's kernel still holds is kept
    filled = recover_parameters(namespace, "04_generate")
    assert namespace["temperature"] == 0.5 and namespace["seed"] == 7 and "seed" not in filled
    assert set(names("04_generate")) <= set(namespace) and "odd" not in namespace  # data only
    assert "kernel restart" in capsys.readouterr().out
    assert recover_parameters(namespace, "04_generate") == {}  # all there: nothing changes
