"""The ``Corpus`` container and its on-disk format: pieces back to back, memory-mappable.

A corpus is one ``EVENT_DTYPE`` array of all pieces back to back, int64 piece offsets and a
list of names (with the bad files, the duplicates and the counts of the read that made it).
``Corpus.save`` writes three files: ``events.npy`` (every event, 12 bytes each),
``offsets.npy`` and ``corpus.json``, the manifest, last (a folder with it is complete).
``load_corpus`` opens ``events.npy`` memory-mapped, so a corpus larger than memory costs only
the pages in use. ``midilstm.corpus.read_corpus`` makes one from MIDI files.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MidiInputError
from .events import EVENT_DTYPE
from .files import write_bytes_atomic, write_json_atomic

CORPUS_FORMAT = 1


@dataclass
class Corpus:
    """Pieces back to back: piece ``i`` is ``events[offsets[i]:offsets[i + 1]]``."""

    events: np.ndarray  # EVENT_DTYPE, possibly a read-only memory map
    offsets: np.ndarray  # int64, len(names) + 1, offsets[0] == 0
    names: list  # one path per piece (the first of identical files)
    bad: list = field(default_factory=list)  # [(path, reason)]
    duplicates: list = field(default_factory=list)  # [(path, same content as this path)]
    stats: dict = field(default_factory=dict)  # files, parsed, cached, duplicates, bad

    def __len__(self) -> int:
        return len(self.names)

    def piece(self, i: int) -> np.ndarray:
        return self.events[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, indices) -> "Corpus":
        """The pieces ``indices`` (in that order) as a new in-memory corpus."""
        indices = [int(i) for i in indices]
        pieces = [self.piece(i) for i in indices]
        return Corpus(events=concatenate_pieces(pieces), offsets=piece_offsets(pieces),
                      names=[self.names[i] for i in indices])

    def save(self, directory) -> Path:
        """``events.npy``, ``offsets.npy`` and ``corpus.json``, each written atomically;
        ``corpus.json`` last, so a directory with it is complete."""
        directory = Path(directory)
        write_bytes_atomic(directory / "events.npy", _npy_bytes(np.ascontiguousarray(self.events)))
        write_bytes_atomic(directory / "offsets.npy", _npy_bytes(self.offsets.astype(np.int64)))
        write_json_atomic(directory / "corpus.json", {
            "format": CORPUS_FORMAT, "names": list(self.names), "bad": self.bad,
            "duplicates": self.duplicates, "stats": self.stats,
            "n_events": int(self.offsets[-1])})
        return directory


def load_corpus(directory, mmap: bool = True) -> Corpus:
    """A corpus written by ``Corpus.save``; its events memory-mapped unless ``mmap=False``."""
    directory = Path(directory)
    manifest_path = directory / "corpus.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise MidiInputError(directory, "not a corpus (no corpus.json; make one with "
                                        "python -m midilstm.batch corpus)") from None
    except (OSError, ValueError) as err:
        raise MidiInputError(manifest_path, f"unreadable corpus manifest ({err})") from None
    if manifest.get("format") != CORPUS_FORMAT:
        raise MidiInputError(manifest_path, f"unknown corpus format {manifest.get('format')!r}")
    events = np.load(directory / "events.npy", mmap_mode="r" if mmap else None)
    offsets = np.load(directory / "offsets.npy")
    if events.dtype != EVENT_DTYPE or len(offsets) != len(manifest["names"]) + 1 \
            or offsets[-1] != len(events):
        raise MidiInputError(directory, "events.npy, offsets.npy and corpus.json disagree")
    return Corpus(events=events, offsets=offsets, names=manifest["names"],
                  bad=[tuple(b) for b in manifest["bad"]],
                  duplicates=[tuple(d) for d in manifest["duplicates"]], stats=manifest["stats"])


# --- arrays -----------------------------------------------------------------------------------

def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def concatenate_pieces(pieces) -> np.ndarray:
    """The pieces' events back to back, one ``EVENT_DTYPE`` array."""
    if not pieces:
        return np.zeros(0, EVENT_DTYPE)
    # as bytes: concatenating structured arrays compares their fields once per piece
    return np.concatenate([np.ascontiguousarray(p, EVENT_DTYPE).view(np.uint8)
                           for p in pieces]).view(EVENT_DTYPE)


def piece_offsets(pieces) -> np.ndarray:
    """int64 ``[0, len(p0), len(p0) + len(p1), ...]``: where each piece starts, and the end."""
    return np.concatenate([[0], np.cumsum([len(p) for p in pieces], dtype=np.int64)]).astype(
        np.int64)
