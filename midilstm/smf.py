"""The bytes of a Standard MIDI File: from a path to what the rest of reading needs, in one pass.

* **Bytes.** Only regular files are read (a FIFO or a device is refused before reading), at most
  ``ReadLimits.max_bytes``. A RIFF wrapper (``.rmi``) is unwrapped. Chunks other than ``MTrk``
  (e.g. Yamaha XF ``XFIH``) are skipped, as the standard asks, and counted. The header's track
  count is read unsigned (mido reads it signed: 32768 tracks would be none).
* **Messages.** The tracks are decoded in one pass, by ``midilstm.smf_decode``, into what the
  tempo map (``midilstm.tempo``) and the pairing of notes (``midilstm.pairing``) need
  (``MessageScan``), as mido decodes them, without building a Python object per message. Key
  signatures mido refuses are neutralised (``to_mido``).
* **Limits.** Files over ``ReadLimits.max_bytes``, with more than ``ReadLimits.max_messages``
  messages or more than ``ReadLimits.max_notes`` note-ons are refused with one line. Reading
  stops at the first message over the limit, so time and memory are bounded per file (see
  ``ReadLimits`` for what the defaults cost at worst).

``load_file`` gives the file's header, its hash, what was repaired or skipped and the scan of
its messages; ``to_mido`` gives the same file as a ``mido.MidiFile`` (``parse.open_midi``).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import mido
from mido.midifiles.meta import meta_charset
from mido.midifiles.midifiles import read_track

from .errors import MidiInputError
# the one-pass decoder of the tracks' messages; its names stay importable from here
from .smf_decode import (MAX_DATA_LENGTH, MAX_DELTA_TICKS, MessageScan, _Corrupt,  # noqa: F401
                         _decode, _decode_track, _note_ons)


@dataclass(frozen=True)
class ReadLimits:
    """What ``read_midi`` refuses to read, so one file cannot exhaust time or memory.

    Each is checked before the work it bounds; decoding stops at the first message over
    ``max_messages``. Measured on crafted worst cases (bench/README.md, "The reader against
    hostile files"), a file just under the defaults takes ``read_midi`` at most ~4 s and
    ~550 MB (1M tempo changes), and ``open_midi``, which builds a mido object per message,
    ~12 s and ~400 MB; the defaults are still far above real music (a large orchestral file is
    ~1 MB, ~300k messages and ~100k notes).
    """

    max_bytes: int = 16 * 2**20
    max_notes: int = 500_000
    max_messages: int = 1_000_000


def short_text(text, digits: int = 24) -> str:
    """``text`` with every number longer than ``digits`` digits cut to its first digits and
    its length (error lines stay short whatever the file holds)."""
    return re.sub(r"\d{%d,}" % (digits + 1),
                  lambda m: f"{m.group()[:12]}...({len(m.group())} digits)", str(text))


# --- bytes to chunks --------------------------------------------------------------------------

@dataclass
class TrackInfo:
    """One track as the report needs it: its name (the first ``track_name`` meta, as mido)."""

    name: str = ""


@dataclass
class SmfFile:
    """The header of a file and its tracks' names: what reading needs besides the messages
    (``type`` as written, 0-2 in a standard file; ``ticks_per_beat`` negative for SMPTE, as
    mido gives it)."""

    type: int
    ticks_per_beat: int
    tracks: list


@dataclass
class LoadedFile:
    """A file as read: its header and track names, the SHA-256 of the file's own bytes, the
    repairs it needed (in words), the chunks skipped (type -> count), the scan of its messages
    and its ``MTrk`` chunks (for ``to_mido``)."""

    midi: SmfFile
    sha256: str
    repairs: list
    skipped: dict
    scan: MessageScan
    chunks: list = field(repr=False, default_factory=list)
    key_patches: list = field(repr=False, default_factory=list)  # (chunk, offset of 0x59)


def load_file(path: Path, limits: ReadLimits) -> LoadedFile:
    """Read, unwrap, clean and decode one file; ``MidiInputError`` for what cannot be read."""
    data = _standard_file(path, read_file_bytes(path, limits.max_bytes))
    midi_type, tpb, chunks, repairs, skipped = _standard_chunks(path, data)
    if tpb == 0:
        raise MidiInputError(path, "corrupt header: time division is 0 ticks per beat")
    try:
        scan, names, key_patches = _decode(path, chunks, limits)
    except MemoryError:
        raise MidiInputError(path, "out of memory while decoding its messages (lower "
                                   "ReadLimits.max_messages or free memory)") from None
    if key_patches:
        repairs = repairs + [f"ignored {len(key_patches)} invalid key signature(s)"]
    return LoadedFile(SmfFile(midi_type, tpb, [TrackInfo(n) for n in names]),
                      hashlib.sha256(data).hexdigest(), repairs, skipped, scan, chunks,
                      key_patches)


def read_file_bytes(path: Path, max_bytes: int = ReadLimits().max_bytes) -> bytes:
    """The file's bytes, as they are, refusing what is not a regular file (a FIFO would hang, a
    link to /dev/zero would never end) or is over the size limit."""
    try:
        info = os.stat(path)  # follows links: a link to /dev/zero is a device
        if not stat.S_ISREG(info.st_mode):
            kind = ("a folder" if stat.S_ISDIR(info.st_mode) else
                    "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else
                    "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                    "a socket or other special file")
            raise MidiInputError(path, f"not a regular file: it is {kind}")
        if info.st_size > max_bytes:
            raise MidiInputError(path, _too_big(info.st_size, max_bytes))
        with open(path, "rb") as file:  # the size it has (a read of max_bytes sets up 16 MB)
            data = file.read(info.st_size + 1)
            if len(data) > info.st_size:  # it grew since stat: the rest, up to the limit
                data += file.read(max_bytes + 1 - len(data))
    except FileNotFoundError:
        raise MidiInputError(path, "no such file") from None
    except OSError as err:
        raise MidiInputError(path, f"cannot read the file ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise MidiInputError(path, _too_big(len(data), max_bytes))
    return data


def _standard_file(path: Path, data: bytes) -> bytes:
    """The standard MIDI file in ``data`` (unwrapped from RIFF), or a clear refusal."""
    if not data:
        raise MidiInputError(path, "empty file (0 bytes)")
    if data[:4] == b"RIFF" and data[8:12] == b"RMID" and b"MThd" in data:
        data = data[data.index(b"MThd"):]  # RIFF-wrapped MIDI: the standard file is inside
    if data[:4] != b"MThd":
        raise MidiInputError(path, "not a MIDI file (no 'MThd' header)")
    return data


def _too_big(size: int, max_bytes: int) -> str:
    return (f"file too large ({size:,} bytes; the limit is {max_bytes:,}: "
            f"pass limits=ReadLimits(max_bytes=...) to read it)")


def _standard_chunks(path: Path, data: bytes) -> tuple[int, int, list, list, dict]:
    """The header's type and division, the ``MTrk`` chunks (header included), the repairs the
    file needed and the other chunks skipped (type -> count). Checks the header's track count
    (unsigned: up to 65535) against the file."""
    if len(data) < 14:
        raise MidiInputError(path, "truncated: the file ends inside its header")
    header_size, midi_type, ntrks, tpb = struct.unpack(">IHHh", data[4:14])
    if header_size < 6:
        raise MidiInputError(path, f"corrupt header: length {header_size}, expected 6")
    if ntrks == 0:
        raise MidiInputError(path, "the file has zero tracks (its header says 0)")
    pos, tracks, skipped, repairs = 8 + header_size, [], Counter(), []
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], struct.unpack(">I", data[pos + 4:pos + 8])[0]
        if not all(0x20 <= b <= 0x7E for b in kind):  # not a chunk: padding or junk at the end
            repairs.append(f"ignored {len(data) - pos} bytes after the last chunk")
            break
        if kind == b"MTrk" and len(tracks) < ntrks:
            if pos + 8 + size > len(data):
                raise MidiInputError(path, f"truncated: the file ends inside track {len(tracks)} "
                                           f"({pos + 8 + size - len(data):,} of its {size:,} "
                                           f"bytes missing)")
            tracks.append(data[pos:pos + 8 + size])
        else:
            skipped["MTrk beyond the header's count" if kind == b"MTrk" else kind.decode()] += 1
        pos += 8 + size
    if len(tracks) < ntrks:
        raise MidiInputError(path, f"the header claims {ntrks} tracks but the file holds "
                                   f"{len(tracks)} (truncated or corrupt header)")
    return midi_type, tpb, tracks, repairs, dict(skipped)


def to_mido(loaded: LoadedFile) -> mido.MidiFile:
    """The file as a ``mido.MidiFile``: its ``MTrk`` chunks read by mido's own track reader,
    key signatures mido refuses turned into sequencer-specific metas. ``load_file`` has
    refused whatever mido would refuse, within the limits."""
    midi = mido.MidiFile(type=1, ticks_per_beat=loaded.midi.ticks_per_beat)
    midi.type = loaded.midi.type  # as written (mido keeps a header's type unchecked too)
    patches = {}
    for t, at in loaded.key_patches:
        patches.setdefault(t, []).append(at)
    with meta_charset("latin1"):
        for t, chunk in enumerate(loaded.chunks):
            if t in patches:
                chunk = bytearray(chunk)
                for at in patches[t]:
                    chunk[at] = 0x7F  # meta type 0x59 (key) -> 0x7f (sequencer specific)
            midi.tracks.append(read_track(io.BytesIO(bytes(chunk))))
    return midi
