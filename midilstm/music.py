"""The bundled music in ``music/``, checked against ``music/SHA256SUMS`` before use."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import MidiInputError

MUSIC_DIR = Path(__file__).resolve().parent.parent / "music"
DEFAULT_PIECE = "weber_clarinet_concertino_allegro.mid"
CORPUS = "josquin"  # the multi-piece set, a folder of music/


def expected_hashes(music_dir: Path = MUSIC_DIR) -> dict[str, str]:
    """``{relative path: sha256}`` from the SHA256SUMS file."""
    lines = (music_dir / "SHA256SUMS").read_text().splitlines()
    return {name.strip().lstrip("*"): digest for digest, name in
            (line.split(maxsplit=1) for line in lines if line.strip())}


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def bundled(name: str = DEFAULT_PIECE, music_dir: Path = MUSIC_DIR) -> list[Path]:
    """Verified paths of a bundled piece or folder (``"josquin"`` -> every file in it)."""
    hashes = expected_hashes(music_dir)
    names = sorted(n for n in hashes if n == name or n.startswith(name.rstrip("/") + "/"))
    if not names:
        raise KeyError(f"{name!r} is not in {music_dir}/SHA256SUMS; bundled: {sorted(hashes)}")
    paths = []
    for n in names:
        path = music_dir / n
        if not path.exists():
            raise MidiInputError(path, "bundled file is missing")
        if sha256_of(path) != hashes[n]:
            raise MidiInputError(path, "sha256 does not match music/SHA256SUMS (file changed?)")
        paths.append(path)
    return paths


def default_piece() -> Path:
    return bundled(DEFAULT_PIECE)[0]


def is_bundled(name: str) -> bool:
    """``"default"`` or a folder of the bundled music (e.g. ``"josquin"``)."""
    return name == "default" or name in {n.split("/")[0] for n in expected_hashes()}


def resolve(piece: str) -> list[Path]:
    """What a notebook's ``piece`` parameter names: ``"default"`` (the default piece), a
    bundled name such as ``"josquin"`` (hash-checked), or your own files, folders or globs."""
    from .parse import expand_sources

    if piece == "default":
        paths = [default_piece()]
    elif is_bundled(piece):
        paths = bundled(piece)
    else:
        paths = expand_sources(piece)
    if not paths:
        raise FileNotFoundError(f"no MIDI files found for piece={piece!r}")
    return [Path(os.path.relpath(p)) for p in paths]  # short, machine-independent names
