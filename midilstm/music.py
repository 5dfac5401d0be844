"""The bundled music in ``music/``, checked against ``music/SHA256SUMS`` before use."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import MidiInputError


def data_dir(name: str, marker: str) -> Path:
    """A folder of data shipped with midilstm: ``midilstm/_<name>`` in an installed wheel (see
    pyproject.toml), else ``<name>/`` beside the package in a checkout. ``marker`` is a file the
    folder must hold; without one, the path it should be at (errors then name it)."""
    package = Path(__file__).resolve().parent
    candidates = (package / f"_{name}", package.parent / name)
    return next((c for c in candidates if (c / marker).is_file()), candidates[-1])


MUSIC_DIR = data_dir("music", "SHA256SUMS")
DEFAULT_PIECE = "weber_clarinet_concertino_allegro.mid"
CORPUS = "josquin"  # the multi-piece set, a folder of music/


def expected_hashes(music_dir: Path = MUSIC_DIR) -> dict[str, str]:
    """``{relative path: sha256}`` from the SHA256SUMS file."""
    sums = music_dir / "SHA256SUMS"
    if not sums.is_file():
        raise MidiInputError(sums, "the bundled music is missing: reinstall midilstm, or run "
                                   "from a checkout that has music/")
    lines = sums.read_text().splitlines()
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

    if is_bundled(piece):
        paths = [_short(p) for p in bundled(DEFAULT_PIECE if piece == "default" else piece)]
    else:
        paths = [Path(p) for p in expand_sources(piece)]  # as the user typed them
    if not paths:
        raise FileNotFoundError(f"no MIDI files found for piece={piece!r}")
    return paths


def _short(path: Path) -> Path:
    """A bundled file relative to the current folder when that is in the checkout holding it
    (``music/x.mid``, ``../music/x.mid`` from notebooks/); else its full path (installed)."""
    home, here = MUSIC_DIR.parent, Path.cwd().resolve()
    return Path(os.path.relpath(path)) if here == home or home in here.parents else path
