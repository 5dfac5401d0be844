"""After a kernel restart, the setup cell alone brings a notebook's parameters back.

A student who restarts the kernel and runs the setup cell (the one after the parameters) would
meet ``NameError: run_dir``: the parameters cell has not run. ``recover_parameters`` fills in
every parameter the namespace lacks with the value the notebook's saved ``parameters`` cell
gives it, read as data (``ast.literal_eval``: nothing in the file runs). Under papermill and
nbval, and whenever the parameters cell ran, every name is there and nothing changes.

The notebook file is the one the kernel was started for (``JPY_SESSION_NAME``, set by the
Jupyter server), else the package's copy of the step's notebook.
"""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

from . import params as parameters


def recover_parameters(namespace: dict, step: str) -> dict:
    """Put the saved value of each of ``step``'s parameters missing from ``namespace`` into
    it; returns what was filled in (``{}`` when nothing was missing)."""
    missing = [name for name in parameters.names(step) if name not in namespace]
    if not missing:
        return {}
    path = _notebook_file(step)
    saved = saved_parameters(path)
    filled = {name: saved[name] for name in missing if name in saved}
    namespace.update(filled)
    print(f"the parameters cell had not run (a kernel restart?): using its saved values from "
          f"{path.name}: " + ", ".join(f"{k}={v!r}" for k, v in filled.items()))
    return filled


def saved_parameters(path) -> dict:
    """``{name: value}`` of the notebook's cell tagged ``parameters``: each ``name = value``
    (annotated or not) whose value is a literal."""
    cells = json.loads(Path(path).read_text())["cells"]
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    values = {}
    for node in ast.parse("".join(cell["source"])).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and getattr(node, "value", None) is not None:
            try:
                values[target.id] = ast.literal_eval(node.value)
            except ValueError:  # not a literal: left for the student to run
                continue
    return values


def _notebook_file(step: str) -> Path:
    from .runs import NOTEBOOK_DIR

    session = os.environ.get("JPY_SESSION_NAME", "")
    if session.endswith(".ipynb") and Path(session).is_file():
        return Path(session)
    return NOTEBOOK_DIR / f"{step}.ipynb"
