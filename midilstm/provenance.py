"""Where a run's results came from: the library versions, the git commit, the files' hashes
(recorded in each run's manifest.json)."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from .lock import now


def stamp(manifest: dict) -> None:
    """Created time (once), library versions and git commit."""
    manifest.setdefault("created", now())
    from .checkpoint import library_versions  # imports torch: only when a step records

    manifest["versions"] = library_versions()
    manifest["git"] = git_commit()


def git_commit() -> dict:
    """The commit the code came from, and whether the working tree had changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10,
                               check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty)}


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
