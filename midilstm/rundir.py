"""A run directory: how the notebooks hand their results to each other, through files.

Each notebook reads what the previous one wrote and writes its own artifacts, so any of them
can run alone given the earlier outputs::

    run_dir/
      manifest.json        parameters of every step, seed, git commit, versions, input hashes
      metrics.json         every step's figures, one section per notebook
      events.npz           01: the parsed pieces (EVENT_DTYPE arrays) and their names
      parse_report.json    01: what was read, kept and dropped, per file
      events_train.npz     02: the training pieces (events), and events_val.npz
      codec.json           02: the fitted codec (time-bin edges)
      codes_train.npz      02: encoded training pieces, and codes_val.npz
      model.pt             03: the best checkpoint
      history.json         03: per-epoch training and validation metrics
      generated/           04: sample_<i>.mid and .wav (emptied first, listed in metrics.json)
      notebooks/           the executed notebooks (when run by `python -m midilstm run`)

Every write is atomic, so an interrupted step never leaves a half-written artifact.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import subprocess
from pathlib import Path

import numpy as np

from .files import write_bytes_atomic, write_json_atomic


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name) -> Path:
        return self.path / name

    # --- artifacts -----------------------------------------------------------------------------
    def save_pieces(self, name: str, pieces: list, labels: list[str]) -> Path:
        """Several arrays (one per piece) in one .npz, in order, with their labels."""
        arrays = {f"piece_{i:04d}": p for i, p in enumerate(pieces)}
        buffer = io.BytesIO()
        np.savez(buffer, labels=np.array(labels, dtype=str), **arrays)
        return write_bytes_atomic(self / name, buffer.getvalue())

    def load_pieces(self, name: str) -> tuple[list, list[str]]:
        path = self / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the notebook that writes it first")
        with np.load(path) as data:
            keys = sorted(k for k in data.files if k.startswith("piece_"))
            return [data[k] for k in keys], data["labels"].tolist()

    def save_json(self, name: str, obj) -> Path:
        return write_json_atomic(self / name, obj)

    def load_json(self, name: str):
        path = self / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the notebook that writes it first")
        return json.loads(path.read_text())

    # --- bookkeeping ---------------------------------------------------------------------------
    def record_step(self, step: str, params: dict) -> None:
        """Note a step's parameters (and, once, versions and git commit) in the manifest."""
        manifest = self._read("manifest.json")
        manifest.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        from .checkpoint import library_versions  # imports torch: only when a step records

        manifest["versions"] = library_versions()
        manifest["git"] = git_commit()
        manifest.setdefault("steps", {})[step] = params
        self.save_json("manifest.json", manifest)

    def update_metrics(self, section: str, values: dict) -> dict:
        """Replace one section of metrics.json; returns the whole file's content."""
        metrics = self._read("metrics.json")
        metrics[section] = values
        self.save_json("metrics.json", metrics)
        return metrics

    def finish(self, extra: dict | None = None) -> dict:
        """Add input hashes and output hashes to the manifest (called at the end of a run)."""
        manifest = self._read("manifest.json")
        if (self / "parse_report.json").exists():
            manifest["inputs"] = {r["path"]: r["sha256"] for r in self.load_json("parse_report.json")}
        manifest["outputs"] = {
            str(p.relative_to(self.path)): _sha256(p)
            for p in sorted(self.path.rglob("*"))
            if p.is_file() and p.name != "manifest.json"
            and p.relative_to(self.path).parts[0] != "notebooks"}
        manifest.update(extra or {})
        self.save_json("manifest.json", manifest)
        return manifest

    def _read(self, name: str) -> dict:
        path = self / name
        return json.loads(path.read_text()) if path.exists() else {}


def git_commit() -> dict:
    """The commit the code came from, and whether the working tree had changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
