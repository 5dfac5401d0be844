"""The public API: ``midilstm.__all__`` resolves, ``import midilstm`` leaves torch out, every error
type is exported under one base, and README's Python example runs as written."""
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import midilstm
from midilstm import errors

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## The Python API"


def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (nothing imported yet); it prints one JSON object."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_midilstm_leaves_torch_out_and_every_public_name_resolves():
    seen = run_python("""
import json, sys
import midilstm
after_import = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
listed = sorted(midilstm.__dir__())
resolved = {name: type(getattr(midilstm, name)).__name__ for name in midilstm.__all__}
star = {}
exec("from midilstm import *", star)
print(json.dumps(dict(after_import=after_import, listed=listed, resolved=resolved,
                      star=sorted(k for k in star if k != "__builtins__"),
                      torch_now="torch" in sys.modules)))
""")
    assert seen["after_import"] == [], "import midilstm must not import torch"
    assert set(seen["resolved"]) == set(midilstm.__all__)
    assert "module" not in seen["resolved"].values()
    assert seen["star"] == sorted(midilstm.__all__)
    assert set(midilstm.__all__) <= set(seen["listed"])  # dir() shows the lazy names too
    assert seen["torch_now"]  # resolving them did import it: they are the torch-backed ones


def test_a_lazy_name_is_imported_on_first_use_only():
    seen = run_python("""
import json, sys
from midilstm import read_midi, TrainConfig
print(json.dumps(dict(torch="torch" in sys.modules, name=TrainConfig.__module__)))
""")
    assert seen == {"torch": True, "name": "midilstm.train"}


def test_all_has_no_duplicates_and_names_only_what_the_package_provides():
    assert len(midilstm.__all__) == len(set(midilstm.__all__))
    lazy = set(midilstm._LAZY)
    assert lazy <= set(midilstm.__all__)
    for name in midilstm.__all__:
        assert name in lazy or name in vars(midilstm), name
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        midilstm.no_such_name  # noqa: B018


def test_no_public_name_shadows_a_submodule():
    """``midilstm.train`` and ``midilstm.generate`` are modules (``import midilstm.train as m``,
    ``mock.patch("midilstm.train.x")``); a function of the same name here would replace one or
    the other depending on what was imported first."""
    submodules = {m.name for m in pkgutil.iter_modules(midilstm.__path__)}
    assert {"train", "generate"} <= submodules
    assert not set(midilstm.__all__) & submodules


def test_every_error_type_is_exported_under_one_base():
    defined = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, Exception) and cls.__module__ == errors.__name__]
    assert len(defined) >= 6
    for cls in defined:
        assert cls.__name__ in midilstm.__all__, cls
        assert getattr(midilstm, cls.__name__) is cls
        assert issubclass(cls, midilstm.MidilstmError)
        assert cls.__doc__ and "raise" in cls.__doc__.lower(), f"{cls.__name__}: say when raised"
        err = cls("music/song.mid", "truncated:\n  the track ends\tearly")
        assert str(err).endswith("music/song.mid: truncated: the track ends early"), str(err)
        assert "\n" not in str(err)
    for cls in defined:  # the narrower types keep what existing handlers catch
        if cls is not midilstm.MidilstmError:
            assert issubclass(cls, (ValueError, RuntimeError)), cls
    assert str(midilstm.ParameterError("epochs", "must be >= 1")) == "parameter epochs: must be >= 1"


def readme_python_example() -> tuple[str, int]:
    """The first ```python block of README's Python API section, and the line it starts on."""
    text = README.read_text(encoding="utf-8")
    assert SECTION + "\n" in text, f"README.md has no {SECTION!r} section"
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end >= 0 else len(text)]
    match = re.search(r"^```python\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert match, f"README.md's {SECTION!r} section has no ```python block"
    first_line = text[:start + match.start(1)].count("\n") + 1
    return match.group(1), first_line


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    code, first_line = readme_python_example()
    for step in ("read_midi", "train(", "load_checkpoint", "generate(", "write_midi"):
        assert step in code, f"the README example no longer shows {step}"
    monkeypatch.chdir(tmp_path)  # it writes model.pt and improvised.mid where it runs
    # padded so that a traceback points at README.md's own line numbers
    program = compile("\n" * (first_line - 1) + code, str(README), "exec")
    namespace: dict = {"__name__": "readme_example"}
    exec(program, namespace)  # noqa: S102  (the README code, run as a reader would)
    assert (tmp_path / "model.pt").is_file()
    written = tmp_path / "improvised.mid"
    back = midilstm.read_midi(written)
    assert len(back.notes) > 0
    assert len(namespace["samples"]) == 4
    assert namespace["samples"][0]["velocity"].any()
