"""The three descriptions of the environment must agree: pyproject.toml (what the code imports),
requirements.lock (every package pinned) and environment.yml (the same, for conda users)."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(lines) -> dict:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[_name(name)] = version.strip()
    return pins


def _pyproject_names() -> set:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {_name(r) for r in requirements}


def _environment_pins() -> dict:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return _pins(p for p in pip_section if not p.startswith("-"))


def test_environment_yml_names_the_same_packages_as_pyproject():
    assert set(_environment_pins()) == _pyproject_names()


def test_environment_yml_pins_the_lock_file_versions():
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    for name, version in _environment_pins().items():
        assert lock.get(name) == version, f"{name}: environment.yml {version}, lock {lock.get(name)}"


def test_every_direct_dependency_is_locked_and_torch_is_pinned_to_the_cpu_build():
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    assert _pyproject_names() <= set(lock)
    assert lock["torch"] == "2.13.0"
    assert _environment_pins()["torch"] == "2.13.0"


def test_the_readme_gives_the_commands_that_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make run" in readme
    assert "make test" in ci
