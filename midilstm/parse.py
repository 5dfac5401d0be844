"""Read standard MIDI files into note events, with a report of what was kept and dropped.

Real files end notes with ``note_off`` (or ``note_on`` velocity 0), keep tempo changes in any
track, spread music over tracks and channels and put drums on channel 10. This module reads
all of that faithfully, by these rules:

* **Bytes.** Only regular files are read (a FIFO or a device is refused before reading), at most
  ``ReadLimits.max_bytes``. A RIFF wrapper (``.rmi``) is unwrapped. Chunks other than ``MTrk``
  (e.g. Yamaha XF ``XFIH``) are skipped, as the standard asks, and counted in the report.
  Key signatures mido refuses are neutralised. ``open_midi`` gives that repaired file.
* **Time.** Ticks become seconds through the file's whole tempo map (every ``set_tempo``, any
  track); SMPTE divisions are read as frame subdivisions. Any legal tempo is read (outside
  ``MIN_BPM``..``MAX_BPM`` with a warning); a tempo of 0 is refused. Type 2 files (independent
  sequences) are read track after track, each with its own tempo map.
* **Pairing.** A note-off ends a note of the same (track, channel, pitch), first in first out,
  as pretty_midi and symusic pair within a track. Where some note-on of a (track, channel,
  pitch) never gets an off (a *dangling* note-on, e.g. a grace note written note-off then
  note-on at one tick), first-in-first-out would shift every later note of that pitch by one;
  there, an off ends every note of the key sounding since an earlier tick (pretty_midi's rule),
  so the dangling note lasts only until the key is struck again (below). Notes still sounding
  at the end of their track are closed there; offs with nothing to end are dropped; both are
  counted.
* **One stream.** The selected notes (drums left out by default) merge into one stream of
  ``(pitch, velocity, delta_s)`` events that knows pitch only. To make it mean exactly the
  notes, overlaps on one pitch follow the piano's rule (``events.strike_again``): a key struck
  again while it sounds ends the earlier note at the new strike, and notes struck at the same
  instant merge. Every note shortened or merged is counted. So
  ``events_to_notes(parsed.events)[0]`` equals ``parsed.notes`` exactly, for every file.
* **Limits.** Files over ``ReadLimits.max_bytes`` or with more than ``ReadLimits.max_notes``
  note-ons are refused with one line; both limits are generous and adjustable.

Usage::

    parsed = read_midi("music/piece.mid")              # all melodic notes
    parsed = read_midi(path, Selection(channels=(0,)))  # the lesson's "channel 0 only"
    parsed.events, parsed.report.to_dict()
    midi = open_midi(path)                              # the mido.MidiFile read_midi reads
"""
from __future__ import annotations

import bisect
import glob
import hashlib
import io
import os
import re
import stat
import struct
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mido
import numpy as np
from mido.midifiles.meta import KeySignatureError

from .constants import (DRUM_CHANNEL, MAX_BPM, MICROSECONDS_PER_MINUTE, MIN_BPM, PITCH_HIGH,
                        PITCH_LOW)
from .errors import MidiInputError
from .events import NOTE_DTYPE, events_to_notes, fold_pitches, notes_to_events, strike_again

# Bump whenever the notes a file gives could change (caches of parsed files key on it).
READER_VERSION = 2

DEFAULT_TEMPO_US = 500_000  # 120 bpm: the MIDI standard's tempo until the first set_tempo
MAX_DELTA_TICKS = 0x0FFFFFFF  # the largest variable-length quantity of 4 bytes (the standard's)


@dataclass(frozen=True)
class ReadLimits:
    """What ``read_midi`` refuses to read, so one file cannot exhaust memory.

    The defaults are far above real music (a large orchestral file is ~1 MB and ~100k notes):
    reading 5 million notes takes minutes and a few GB, mostly inside mido.
    """

    max_bytes: int = 64 * 2**20
    max_notes: int = 5_000_000


@dataclass(frozen=True)
class Selection:
    """Which notes of a file to keep. Channels are 0-based (the drum channel "10" is 9).

    ``channels``/``tracks``/``programs`` of ``None`` keep everything. Drums are left out unless
    ``include_drums`` is set or channel 9 is asked for by name. ``out_of_range`` says what
    happens to pitches outside [pitch_low, pitch_high]: ``"fold"`` moves them by octaves into
    the range (the pitch class survives), ``"drop"`` removes the note.
    """

    channels: tuple[int, ...] | None = None
    tracks: tuple[int, ...] | None = None
    programs: tuple[int, ...] | None = None
    include_drums: bool = False
    sustain_pedal: bool = False  # hold notes while the pedal (controller 64) is down
    out_of_range: str = "fold"
    pitch_low: int = PITCH_LOW
    pitch_high: int = PITCH_HIGH

    def __post_init__(self):
        if self.out_of_range not in ("fold", "drop"):
            raise ValueError(f"out_of_range must be 'fold' or 'drop', not {self.out_of_range!r}")
        for name in ("channels", "tracks", "programs"):  # accept any iterable, store a tuple
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in np.atleast_1d(value)))


@dataclass
class ParseReport:
    """What a file contains and what reading it kept, dropped and fixed (JSON-ready)."""

    path: str
    sha256: str
    midi_type: int
    division: str
    tracks: list = field(default_factory=list)  # [{index, name, notes, channels}]
    channels: list = field(default_factory=list)  # [{channel, notes, programs, drums}]
    tempo_changes: list = field(default_factory=list)  # [{time_s, bpm}]
    kept_notes: int = 0
    dropped: dict = field(default_factory=dict)  # reason -> notes (or messages)
    fixed: dict = field(default_factory=dict)  # what was repaired -> count
    repairs: list = field(default_factory=list)  # oddities of the file worked around, in words
    warnings: list = field(default_factory=list)  # legal but unusual, in words (extreme tempo)
    skipped_chunks: dict = field(default_factory=dict)  # chunk type -> count (e.g. {"XFIH": 1})
    ignored_messages: dict = field(default_factory=dict)  # e.g. {"control_change": 812} (pedal)
    duration_s: float = 0.0
    n_events: int = 0
    reader_version: int = READER_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """A few human-readable lines for the CLI and notebooks."""
        chans = ", ".join(f"{c['channel']}{'(drums)' if c['drums'] else ''}:{c['notes']}"
                          for c in self.channels) or "none"
        tempos = ", ".join(f"{t['bpm']:.1f}bpm@{t['time_s']:.1f}s" for t in self.tempo_changes[:6])
        if len(self.tempo_changes) > 6:
            tempos += f", ... ({len(self.tempo_changes)} in all)"
        dropped = ", ".join(f"{k}={v}" for k, v in self.dropped.items() if v) or "nothing"
        fixed = ", ".join([f"{k}={v}" for k, v in self.fixed.items() if v] + self.repairs) \
            or "nothing"
        skipped = ", ".join(f"{k}={v}" for k, v in self.skipped_chunks.items())
        ignored = ", ".join(f"{k}={v}" for k, v in self.ignored_messages.items()) or "nothing"
        lines = [f"{self.path}: type {self.midi_type}, {len(self.tracks)} tracks, {self.division}",
                 f"  notes per channel: {chans}", f"  tempo: {tempos or 'default 120bpm'}",
                 f"  kept {self.kept_notes} notes = {self.n_events} events, "
                 f"{self.duration_s:.1f} s", f"  dropped: {dropped}", f"  fixed: {fixed}",
                 f"  ignored: {ignored}"]
        lines += [f"  skipped chunks: {skipped}"] if skipped else []
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass
class Parsed:
    """One file read: its events (``EVENT_DTYPE``), its notes and its report."""

    events: np.ndarray
    notes: np.ndarray
    report: ParseReport


def read_midi(path, selection: Selection = Selection(), *,
              limits: ReadLimits = ReadLimits()) -> Parsed:
    """Read one MIDI file into events. Raises ``MidiInputError`` naming the file and reason."""
    path = Path(path)
    loaded = _load(path, limits)
    midi = loaded.midi
    scan = _scan(path, midi, limits)
    seconds_of, tempo_changes, warnings = _timing(path, midi, scan)
    raw_notes, fixed, orphan_offs = _pair_notes(midi, scan, seconds_of, selection.sustain_pedal)
    report = ParseReport(
        path=str(path), sha256=loaded.sha256, midi_type=midi.type,
        division=_division_text(midi.ticks_per_beat), tempo_changes=tempo_changes,
        tracks=_track_table(midi, raw_notes), channels=_channel_table(raw_notes),
        ignored_messages=dict(sorted(scan.ignored.items())),
        duration_s=round(float(seconds_of(max(scan.end_ticks))), 6),
        repairs=loaded.repairs, warnings=warnings, skipped_chunks=loaded.skipped)
    if not raw_notes:
        raise MidiInputError(path, "no note events in the file")
    notes, dropped = _select(raw_notes, selection)
    if len(notes) == 0:
        raise MidiInputError(path, f"no notes left after selection {_selection_text(selection)};"
                                   f" the file has {_contents_text(raw_notes)}")
    notes, folded = _apply_pitch_policy(notes, selection, dropped)
    fixed["folded_pitch"] = folded
    dropped["orphan_note_off"] = orphan_offs
    zero = notes["end_s"] <= notes["start_s"]
    dropped["zero_length"] = int(zero.sum())
    notes = notes[~zero]
    if len(notes) == 0:
        raise MidiInputError(path, "every selected note has zero length")
    notes, struck = strike_again(notes)
    fixed.update(struck)
    events = notes_to_events(notes)
    # The notes as the event stream gives them back: the same notes, with times through the
    # same float arithmetic (running sums of deltas), so the two views agree exactly.
    decoded, _ = events_to_notes(events)
    report.kept_notes, report.dropped, report.fixed = len(decoded), dropped, fixed
    report.n_events = len(events)
    return Parsed(events=events, notes=decoded, report=report)


def read_midi_files(sources, selection: Selection = Selection(), *,
                    limits: ReadLimits = ReadLimits()):
    """Read files, folders (all ``*.mid``/``*.midi`` inside, recursively) or glob patterns.

    Bad files are skipped, not fatal: returns ``(parsed_list, errors)`` where ``errors`` is a
    list of ``MidiInputError``.
    """
    parsed, errors = [], []
    for path in expand_sources(sources):
        try:
            parsed.append(read_midi(path, selection, limits=limits))
        except MidiInputError as err:
            errors.append(err)
    return parsed, errors


def open_midi(path, *, limits: ReadLimits = ReadLimits()) -> mido.MidiFile:
    """The ``mido.MidiFile`` that ``read_midi`` reads: RIFF unwrapped, unknown chunks skipped,
    invalid key signatures neutralised. Raises ``MidiInputError`` for what it cannot read."""
    path = Path(path)
    loaded = _load(path, limits)
    _scan(path, loaded.midi, limits)  # the same checks of delta times and note counts
    return loaded.midi


def expand_sources(sources) -> list[Path]:
    """Paths named by files, folders or glob patterns, in a stable (sorted) order."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    paths = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            paths += sorted(p for p in source.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
        elif any(ch in str(source) for ch in "*?["):
            paths += sorted(Path(p) for p in glob.glob(str(source), recursive=True))
        else:
            paths.append(source)
    return paths


# --- bytes to a mido file ---------------------------------------------------------------------

@dataclass
class _Loaded:
    midi: mido.MidiFile
    sha256: str
    repairs: list
    skipped: dict


def _load(path: Path, limits: ReadLimits) -> _Loaded:
    data = _standard_file(path, read_file_bytes(path, limits.max_bytes))
    clean, repairs, skipped = _standard_chunks(path, data)
    midi, key_repairs = _open_mido(path, clean)
    return _Loaded(midi, hashlib.sha256(data).hexdigest(), repairs + key_repairs, skipped)


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
class _Scan:
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


def _scan(path: Path, midi: mido.MidiFile, limits: ReadLimits) -> _Scan:
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
    return _Scan(np.array(ticks, np.int64), np.array(tracks, np.int64),
                 np.array(channels, np.int64), np.array(pitches, np.int64),
                 np.array(velocities, np.int64), tempos, programs, pedals, ignored,
                 np.array(end_ticks, np.int64))


# --- time: ticks to seconds through the tempo map ---------------------------------------------

def _timing(path, midi, scan: _Scan):
    """A function mapping absolute ticks (per track for type 2) to seconds, the tempo map and
    warnings about legal but extreme tempos."""
    tpb = midi.ticks_per_beat
    if tpb < 0:  # SMPTE: high byte -frames per second, low byte ticks per frame
        fps, ticks_per_frame = -(tpb >> 8), tpb & 0xFF
        if fps not in (24, 25, 29, 30) or ticks_per_frame == 0:
            raise MidiInputError(path, f"corrupt SMPTE time division ({fps} fps, "
                                       f"{ticks_per_frame} ticks per frame)")
        seconds_per_tick = 1.0 / ((29.97 if fps == 29 else fps) * ticks_per_frame)
        return lambda ticks, track=None: np.asarray(ticks) * seconds_per_tick, [], []
    warnings = _tempo_warnings(path, scan.tempos)
    if midi.type == 2:  # each track is its own sequence with its own tempo map
        maps = [_tempo_map([tt for tt in scan.tempos if tt[1] == t], tpb)
                for t in range(len(midi.tracks))]
        offsets = np.cumsum([0.0] + [m[0](e)[()] for m, e in zip(maps, scan.end_ticks)])

        def seconds_of(ticks, track=None):
            if track is None:  # the whole file: the end of the last sequence
                return offsets[-1]
            return offsets[track] + maps[track][0](ticks)

        changes = [{"time_s": round(float(offsets[i]) + c["time_s"], 6), "bpm": c["bpm"]}
                   for i, m in enumerate(maps) for c in m[1]]
        return seconds_of, changes, warnings
    to_seconds, changes = _tempo_map(scan.tempos, tpb)
    return lambda ticks, track=None: to_seconds(ticks), changes, warnings


def _tempo_warnings(path, tempos) -> list:
    """Tempo 0 is not legal (refused); tempos outside MIN_BPM..MAX_BPM are legal but odd."""
    warnings = []
    for tick, track, tempo in tempos:
        if tempo == 0:
            raise MidiInputError(path, f"illegal tempo 0 us per beat at tick {tick} of track "
                                       f"{track}")
        bpm = MICROSECONDS_PER_MINUTE / tempo
        if not MIN_BPM <= bpm <= MAX_BPM:
            warnings.append(f"extreme tempo {tempo} us per beat ({bpm:.4g} bpm) at tick {tick} "
                            f"of track {track}; read as written")
    if len(warnings) > 3:
        warnings = warnings[:3] + [f"... {len(warnings) - 3} more extreme tempos"]
    return warnings


def _tempo_map(tempos, tpb):
    """Piecewise-linear ticks -> seconds from ``tempos`` [(tick, track, us per beat)]."""
    tempos = sorted(tempos, key=lambda tt: tt[0])  # stable: at equal ticks the later one wins
    change_ticks, tempos_us = [0], [DEFAULT_TEMPO_US]
    for tick, _, tempo in tempos:
        if tick == change_ticks[-1]:
            tempos_us[-1] = tempo
        else:
            change_ticks.append(tick)
            tempos_us.append(tempo)
    change_ticks = np.array(change_ticks, np.int64)
    seconds_per_tick = np.array(tempos_us, np.float64) / 1e6 / tpb
    change_seconds = np.concatenate([[0.0],
                                     np.cumsum(np.diff(change_ticks) * seconds_per_tick[:-1])])

    def to_seconds(ticks):
        ticks = np.asarray(ticks, np.int64)
        i = np.searchsorted(change_ticks, ticks, side="right") - 1
        return change_seconds[i] + (ticks - change_ticks[i]) * seconds_per_tick[i]

    changes = [{"time_s": round(float(s), 6), "bpm": round(MICROSECONDS_PER_MINUTE / t, 3)}
               for s, t, tick in zip(change_seconds, tempos_us, change_ticks)
               if tick > 0 or tempos]
    return to_seconds, changes


# --- notes: pair offs with ons ----------------------------------------------------------------

def _pair_notes(midi, scan: _Scan, seconds_of, sustain_pedal=False):
    """All notes of the file as a dict of columns, the repair counts and the orphan offs.

    Pairs per (track, channel, pitch): first in first out where every note-on of the key gets
    an off, else an off ends every note of the key sounding since an earlier tick."""
    if len(scan.note_tick) == 0:
        return {}, {}, 0
    key = (scan.note_track * 16 + scan.note_channel) * 128 + scan.note_pitch
    order = np.argsort(key, kind="stable")  # by key, each key's messages in file order
    keys, ticks, velocities = key[order], scan.note_tick[order], scan.note_velocity[order]
    bounds = np.flatnonzero(np.diff(keys)) + 1
    starts, ends, note_keys, note_velocities = [], [], [], []
    orphans = closed = dangling_keys = 0
    end_ticks = scan.end_ticks.tolist()
    for lo, hi in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(keys)].tolist()):
        k = int(keys[lo])
        group_ticks, group_velocities = ticks[lo:hi].tolist(), velocities[lo:hi].tolist()
        pairs, open_notes, orphan = _pair_first_in_first_out(group_ticks, group_velocities)
        if open_notes:  # a dangling note-on: first in first out would shift later notes
            dangling_keys += 1
            pairs, open_notes, orphan = _pair_flush(group_ticks, group_velocities)
        end = end_ticks[k // (16 * 128)]
        pairs += [(start, end, velocity) for start, velocity in open_notes]
        closed += len(open_notes)
        orphans += orphan
        for start, stop, velocity in pairs:
            starts.append(start)
            ends.append(stop)
            note_velocities.append(velocity)
        note_keys += [k] * len(pairs)
    note_keys = np.array(note_keys, np.int64)
    columns = {"start": np.array(starts, np.int64), "end": np.array(ends, np.int64),
               "track": note_keys // (16 * 128), "channel": note_keys // 128 % 16,
               "pitch": note_keys % 128, "velocity": np.array(note_velocities, np.int64)}
    fixes = {"closed_at_end": closed, "keys_with_dangling_note_on": dangling_keys}
    if sustain_pedal:
        columns, fixes["held_by_pedal"] = _hold_by_pedal(columns, scan.pedals, midi.type == 2)
    return _to_note_table(columns, scan.programs, seconds_of, midi.type == 2), fixes, orphans


def _pair_first_in_first_out(ticks, velocities):
    """One key's messages -> (start, end, velocity) notes, still-open (start, velocity), orphans."""
    sounding, pairs, orphans = deque(), [], 0
    for tick, velocity in zip(ticks, velocities):
        if velocity > 0:
            sounding.append((tick, velocity))
        elif sounding:
            start, on_velocity = sounding.popleft()
            pairs.append((start, tick, on_velocity))
        else:
            orphans += 1
    return pairs, list(sounding), orphans


def _pair_flush(ticks, velocities):
    """As pretty_midi: an off ends every note of the key struck at an earlier tick. An off with
    nothing to end, followed at its tick by an on, is that on's own off written first: the pair
    is a zero-length note (a grace note), dropped later and counted."""
    sounding, pairs, orphans, orphan_tick = [], [], 0, None
    for tick, velocity in zip(ticks, velocities):
        if velocity > 0:
            if tick == orphan_tick:
                pairs.append((tick, tick, velocity))
                orphans, orphan_tick = orphans - 1, None
            else:
                sounding.append((tick, velocity))
            continue
        earlier = [(start, v) for start, v in sounding if start < tick]
        if earlier:
            pairs += [(start, tick, v) for start, v in earlier]
            sounding = sounding[len(earlier):]  # starts never decrease: the earlier come first
        elif sounding:  # only notes struck at this very tick: the oldest ends (zero length)
            start, v = sounding.pop(0)
            pairs.append((start, tick, v))
        else:
            orphans, orphan_tick = orphans + 1, tick
    return pairs, sounding, orphans


def _hold_by_pedal(columns, pedals, per_track):
    """As on a piano: a key released while the sustain pedal is down sounds on until the pedal
    comes up, or until the same key is struck again. Returns the notes and how many were held."""
    pedals = sorted(pedals, key=(lambda m: (m[1], m[0], m[2])) if per_track
                    else (lambda m: (m[0], m[1], m[2])))
    up_ticks = defaultdict(list)  # (track or 0, channel) -> ticks where the pedal goes up
    down_at = defaultdict(list)  # (track or 0, channel) -> [(tick, is_down)] in order
    for tick, track, _, channel, down in pedals:
        where = (track if per_track else 0, channel)
        down_at[where].append((tick, down))
        if not down:
            up_ticks[where].append(tick)
    notes = list(zip(*(columns[name].tolist() for name in
                       ("start", "end", "track", "channel", "pitch"))))
    starts = defaultdict(list)  # same key struck again: (track or 0, channel, pitch) -> starts
    for start, _, track, channel, pitch in notes:
        starts[(track if per_track else 0, channel, pitch)].append(start)
    for key in starts:
        starts[key].sort()
    held, new_ends = 0, []
    for start, end, track, channel, pitch in notes:
        where = (track if per_track else 0, channel)
        changes = down_at.get(where, [])
        i = bisect.bisect_right(changes, (end, True)) - 1  # the pedal's state at the release
        if i >= 0 and changes[i][1]:
            ups = up_ticks[where]
            j = bisect.bisect_right(ups, end)
            release = ups[j] if j < len(ups) else end
            again = starts[(where[0], channel, pitch)]
            k = bisect.bisect_right(again, start)
            if k < len(again):
                release = min(release, max(again[k], end))
            held += release > end
            end = max(end, release)
        new_ends.append(end)
    return dict(columns, end=np.array(new_ends, np.int64)), held


def _to_note_table(columns, program_changes, seconds_of, per_track):
    if len(columns["start"]) == 0:
        return {}
    start, end, track = columns["start"], columns["end"], columns["track"]
    if per_track:
        start_s, end_s = np.empty(len(start)), np.empty(len(start))
        for t in np.unique(track):
            sel = track == t
            start_s[sel], end_s[sel] = seconds_of(start[sel], t), seconds_of(end[sel], t)
    else:
        start_s, end_s = seconds_of(start), seconds_of(end)
    return {"start_s": start_s, "end_s": end_s, "track": track, "channel": columns["channel"],
            "pitch": columns["pitch"], "velocity": columns["velocity"],
            "program": _programs_at(sorted(program_changes), start, track, columns["channel"],
                                    per_track)}


def _programs_at(program_changes, start, track, channel, per_track):
    """The program (instrument) each note's channel had when the note started (default 0)."""
    program = np.zeros(len(start), np.int64)
    for ch in np.unique(channel):
        changes = [(tick, trk, prog) for tick, trk, _, c, prog in program_changes if c == ch]
        if not changes:
            continue
        ticks = np.array([c[0] for c in changes])
        progs = np.array([c[2] for c in changes])
        sel = channel == ch
        if per_track:  # type 2: a change counts only within its own track
            for trk in np.unique(track[sel]):
                mine = np.array([c[1] == trk for c in changes])
                if mine.any():
                    s = sel & (track == trk)
                    i = np.searchsorted(ticks[mine], start[s], side="right") - 1
                    program[s] = np.where(i >= 0, progs[mine][np.maximum(i, 0)], 0)
            continue
        i = np.searchsorted(ticks, start[sel], side="right") - 1
        program[sel] = np.where(i >= 0, progs[np.maximum(i, 0)], 0)
    return program


# --- selection and pitch policy ---------------------------------------------------------------

def _select(table, selection: Selection):
    channel, track, program = table["channel"], table["track"], table["program"]
    drums_wanted = selection.include_drums or (selection.channels is not None
                                               and DRUM_CHANNEL in selection.channels)
    rules = [("drums", (channel == DRUM_CHANNEL) & (not drums_wanted))]
    if selection.channels is not None:
        rules.append(("channel_not_selected", ~np.isin(channel, selection.channels)))
    if selection.tracks is not None:
        rules.append(("track_not_selected", ~np.isin(track, selection.tracks)))
    if selection.programs is not None:
        rules.append(("program_not_selected", ~np.isin(program, selection.programs)))
    keep = np.ones(len(channel), bool)
    dropped = {}
    for reason, drop in rules:  # each note is counted under the first rule that drops it
        dropped[reason] = int((keep & drop).sum())
        keep &= ~drop
    notes = np.empty(int(keep.sum()), NOTE_DTYPE)
    for name in NOTE_DTYPE.names:
        notes[name] = table[name][keep]
    return notes[np.lexsort((notes["pitch"], notes["start_s"]))], dropped


def _apply_pitch_policy(notes, selection: Selection, dropped):
    low, high = selection.pitch_low, selection.pitch_high
    outside = (notes["pitch"] < low) | (notes["pitch"] > high)
    if selection.out_of_range == "drop":
        dropped["out_of_range"] = int(outside.sum())
        return notes[~outside], 0
    dropped["out_of_range"] = 0
    notes = notes.copy()
    notes["pitch"] = fold_pitches(notes["pitch"], low, high)
    return notes, int(outside.sum())


# --- report helpers ---------------------------------------------------------------------------

def _division_text(tpb: int) -> str:
    if tpb < 0:
        return f"SMPTE {-(tpb >> 8)} fps x {tpb & 0xFF} ticks per frame"
    return f"{tpb} ticks per beat"


def _track_table(midi, table):
    counts = Counter(table["track"].tolist()) if table else Counter()
    rows = []
    for i, track in enumerate(midi.tracks):
        channels = sorted(set(table["channel"][table["track"] == i].tolist())) if table else []
        rows.append({"index": i, "name": track.name.strip(), "notes": counts.get(i, 0),
                     "channels": channels})
    return rows


def _channel_table(table):
    if not table:
        return []
    rows = []
    for ch in sorted(set(table["channel"].tolist())):
        sel = table["channel"] == ch
        rows.append({"channel": ch, "notes": int(sel.sum()), "drums": ch == DRUM_CHANNEL,
                     "programs": sorted(set(table["program"][sel].tolist()))})
    return rows


def _selection_text(selection: Selection) -> str:
    parts = [f"{name}={getattr(selection, name)}" for name in ("channels", "tracks", "programs")
             if getattr(selection, name) is not None]
    if not selection.include_drums:
        parts.append("drums excluded")
    return "(" + ", ".join(parts) + ")"


def _contents_text(table) -> str:
    rows = _channel_table(table)
    if all(r["drums"] for r in rows):
        return f"only drums on channel 10 ({sum(r['notes'] for r in rows)} notes)"
    return "notes on channel " + ", ".join(
        f"{r['channel']}{' (drums)' if r['drums'] else ''}: {r['notes']} notes, "
        f"programs {r['programs']}" for r in rows)
