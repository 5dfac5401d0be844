"""The bytes of a Standard MIDI File: from a path to a ``mido.MidiFile`` and one pass over it.

* **Bytes.** Only regular files are read (a FIFO or a device is refused before reading), at most
  ``ReadLimits.max_bytes``. A RIFF wrapper (``.rmi``) is unwrapped. Chunks other than ``MTrk``
  (e.g. Yamaha XF ``XFIH``) are skipped, as the standard asks, and counted. Key signatures mido
  refuses are neutralised. mido decodes the track data itself (variable-length quantities,
  running status); a delta time longer than the 4-byte maximum is refused.
* **Limits.** Files over ``ReadLimits.max_bytes`` or with more than ``ReadLimits.max_notes``
  note-ons are refused with one line; both limits are generous and adjustable.

``load_file`` gives the repaired file, its hash and what was repaired or skipped;
``scan_messages`` gathers, in one pass, what the tempo map (``midilstm.tempo``) and the pairing
of notes (``midilstm.pairing``) need from the messages.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
from mido.midifiles.meta import KeySignatureError

from .errors import MidiInputError

MAX_DELTA_TICKS = 0x0FFFFFFF  # the largest variable-length quantity of 4 bytes (the standard's)


@dataclass(frozen=True)
class ReadLimits:
    """What ``read_midi`` refuses to read, so one file cannot exhaust memory.

    The defaults are far above real music (a large orchestral file is ~1 MB and ~100k notes):
    reading 5 million notes takes minutes and a few GB, mostly inside mido.
    """

    max_bytes: int = 64 * 2**20
    max_notes: int = 5_000_000


# --- bytes to a mido file ---------------------------------------------------------------------

@dataclass
class LoadedFile:
    """A file as read: the repaired ``mido.MidiFile``, the SHA-256 of the file's own bytes, the
    repairs it needed (in words) and the chunks skipped (type -> count)."""

    midi: mido.MidiFile
    sha256: str
    repairs: list
    skipped: dict


def load_file(path: Path, limits: ReadLimits) -> LoadedFile:
    """Read, unwrap, clean and open one file; ``MidiInputError`` for what cannot be read."""
    data = _standard_file(path, read_file_bytes(path, limits.max_bytes))
    clean, repairs, skipped = _standard_chunks(path, data)
    midi, key_repairs = _open_mido(path, clean)
    return LoadedFile(midi, hashlib.sha256(data).hexdigest(), repairs + key_repairs, skipped)


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
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)  # the file may have grown since stat
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


def _standard_chunks(path: Path, data: bytes) -> tuple[bytes, list, dict]:
    """The file rebuilt from its header and ``MTrk`` chunks only, the repairs it needed and the
    other chunks skipped (type -> count). Checks the header's track count against the file."""
    if len(data) < 14:
        raise MidiInputError(path, "truncated: the file ends inside its header")
    header_size, midi_type, ntrks = struct.unpack(">IHH", data[4:12])
    division = data[12:14]
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
    header = b"MThd" + struct.pack(">IHH", 6, midi_type, ntrks) + division
    return header + b"".join(tracks), repairs, dict(skipped)


def _open_mido(path: Path, data: bytes) -> tuple[mido.MidiFile, list]:
    """The parsed file and the list of repairs it needed."""
    try:
        return _parse_bytes(path, data), []
    except KeySignatureError:
        # Some sequencers write key signatures mido refuses (e.g. 9 sharps). The key plays no
        # part here, so such events are turned into harmless sequencer-specific metas.
        patched, count = _neutralise_key_signatures(data)
        try:
            return _parse_bytes(path, patched), [f"ignored {count} invalid key signature(s)"]
        except KeySignatureError as err:
            raise MidiInputError(path, f"corrupt MIDI data ({err})") from None


def _neutralise_key_signatures(data: bytes) -> tuple[bytes, int]:
    patched, count = bytearray(data), 0
    for match in re.finditer(rb"\xff\x59\x02(.)(.)", data, flags=re.DOTALL):
        sharps, mode = int.from_bytes(match.group(1), "big", signed=True), match.group(2)[0]
        if not (-7 <= sharps <= 7 and mode in (0, 1)):
            patched[match.start() + 1] = 0x7F  # meta type 0x59 (key) -> 0x7f (sequencer specific)
            count += 1
    return bytes(patched), count


def _parse_bytes(path: Path, data: bytes) -> mido.MidiFile:
    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
    except KeySignatureError:
        raise
    except EOFError:
        raise MidiInputError(path, "truncated: the file ends inside a header or track") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, struct.error,
            OverflowError, MemoryError, UnicodeError) as err:
        raise MidiInputError(path, f"corrupt MIDI data ({err})") from None
    if midi.ticks_per_beat == 0:
        raise MidiInputError(path, "corrupt header: time division is 0 ticks per beat")
    return midi


# --- one pass over the messages ---------------------------------------------------------------

@dataclass
class MessageScan:
    """What the rest of reading needs from the messages, gathered in one pass."""

    note_tick: np.ndarray  # every note message, track after track, in file order
    note_track: np.ndarray
    note_channel: np.ndarray
    note_pitch: np.ndarray
    note_velocity: np.ndarray  # 0 for a note-off
    tempos: list  # (tick, track, us per beat)
    programs: list  # (tick, track, order, channel, program)
    pedals: list  # (tick, track, order, channel, down)
    ignored: Counter  # channel messages that carry no notes
    end_ticks: np.ndarray  # last tick of each track


def scan_messages(path: Path, midi: mido.MidiFile, limits: ReadLimits) -> MessageScan:
    """Every message once, in file order; refuses over-long delta times and too many notes."""
    ticks, tracks, channels, pitches, velocities = [], [], [], [], []
    tempos, programs, pedals, ignored, end_ticks = [], [], [], Counter(), []
    for t, track in enumerate(midi.tracks):
        tick = 0
        for order, msg in enumerate(track):
            delta = msg.time
            if delta > MAX_DELTA_TICKS:
                raise MidiInputError(path, f"corrupt delta time {delta} in track {t}, message "
                                           f"{order}: longer than the 4-byte maximum")
            tick += delta
            kind = msg.type
            if kind == "note_on" or kind == "note_off":
                ticks.append(tick)
                tracks.append(t)
                channels.append(msg.channel)
                pitches.append(msg.note)
                velocities.append(msg.velocity if kind == "note_on" else 0)
            elif kind == "set_tempo":
                tempos.append((tick, t, msg.tempo))
            elif kind == "program_change":
                programs.append((tick, t, order, msg.channel, msg.program))
            elif not msg.is_meta:
                ignored[kind] += 1
                if kind == "control_change" and msg.control == 64:
                    pedals.append((tick, t, order, msg.channel, msg.value >= 64))
        end_ticks.append(tick)
    n_ons = sum(v > 0 for v in velocities)
    if n_ons > limits.max_notes:
        raise MidiInputError(path, f"too many notes ({n_ons:,}; the limit is {limits.max_notes:,}:"
                                   f" pass limits=ReadLimits(max_notes=...) to read it)")
    return MessageScan(np.array(ticks, np.int64), np.array(tracks, np.int64),
                 np.array(channels, np.int64), np.array(pitches, np.int64),
                 np.array(velocities, np.int64), tempos, programs, pedals, ignored,
                 np.array(end_ticks, np.int64))

