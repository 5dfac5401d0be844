"""What a run owns in its directory: our files, our folders and the patterns of our files in
them, found, removed and kept from links, so that ``--force`` deletes only what a run wrote and
nothing is reached through a symbolic link."""
from __future__ import annotations

from pathlib import Path

from .files import make_folder, refuse_link, remove_in
from .lock import LOCK_FILE
from .staleness import GENERATED, STEPS

# Everything a run writes, for prepare(): flat files, and the patterns of files in our folders.
OUR_FILES = ("manifest.json", "metrics.json", "error.txt",
             *sorted({f for s in STEPS.values() for f in s.outputs if f != GENERATED}))
OUR_FOLDERS = {"generated": ("sample_*.mid", "sample_*.wav"),
               "notebooks": ("[0-9][0-9]_*.ipynb", "kernel.log")}


def artefacts(root: Path) -> list[str]:
    """Our artefacts present in the directory (folders end with "/")."""
    found = [name for name in OUR_FILES if (root / name).is_file()]
    found += [f"{folder}/" for folder, patterns in OUR_FOLDERS.items()
              if any(any((root / folder).glob(p)) for p in patterns)]
    return found


def refuse_links(root: Path, names=None) -> None:
    """Refuse (``RunDirError``, one line naming it) when one of ``names`` (default: every
    file and folder of ours, the lock and the files in our folders) is a symbolic link."""
    if names is None:
        names = [*OUR_FILES, *OUR_FOLDERS, LOCK_FILE, *(f".{n}.partial" for n in OUR_FILES)]
        for folder, patterns in OUR_FOLDERS.items():
            refuse_link(root, folder)
            if (root / folder).is_dir():
                names += [f"{folder}/{p.name}" for p in (root / folder).iterdir()
                          if any(p.match(pattern) for pattern in patterns)]
    for name in names:
        refuse_link(root, name.rstrip("/"))


def fresh_folder(root: Path, folder: str = GENERATED) -> Path:
    """Our folder ``folder`` (``generated/``) made ready for a step to write into: created
    when missing, our earlier files in it removed (``sample_*``), no link followed (a link
    in its place is refused). Returns its path, for ``write_midi(..., path / name)``."""
    folder = folder.rstrip("/")
    make_folder(root / folder, root)
    remove_in(root, folder, OUR_FOLDERS.get(folder, ()), keep_folder=True)
    return root / folder


def remove_artefacts(root: Path) -> None:
    """Our files and our folders' files, each removed from its folder's descriptor: a link
    is removed itself, never its target, and a folder that is a link is refused."""
    for name in OUR_FILES:
        remove_in(root, name)
    for folder, patterns in OUR_FOLDERS.items():
        remove_in(root, folder, patterns)


def remove_temporaries(root: Path) -> None:
    """Hidden ``.<name>.*.tmp`` files left by an atomic write that was killed midway (in
    every mode), and the partial checkpoints (``.model.pt.partial``) a killed step left."""
    remove_in(root, ".", [".*.tmp", *(f".{n}.partial" for n in OUR_FILES)])
    for folder in OUR_FOLDERS:
        remove_in(root, folder, [".*.tmp", ".*.tmp.ipynb"], keep_folder=True)
