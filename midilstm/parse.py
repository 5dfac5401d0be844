"""Read standard MIDI files into note events, with a report of what was kept and dropped.

Real files end notes with ``note_off`` (or ``note_on`` velocity 0), keep tempo changes in any
track, spread music over tracks and channels and put drums on channel 10. This module reads
all of that faithfully:

* ticks become seconds through the file's whole tempo map (every ``set_tempo``, any track);
  SMPTE time divisions are read as frame subdivisions;
* note-offs pair with note-ons first-in-first-out per (channel, pitch); notes still sounding at
  the end are closed, orphan offs dropped, and both are counted;
* by default every melodic note is kept, merged into one stream; drums are left out;
* type 2 files (independent sequences) are read track after track.

Usage::

    parsed = read_midi("music/piece.mid")              # all melodic notes
    parsed = read_midi(path, Selection(channels=(0,)))  # the lesson's "channel 0 only"
    parsed.events, parsed.report.to_dict()
"""
from __future__ import annotations

import bisect
import glob
import hashlib
import io
import re
import struct
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mido
import numpy as np
from mido.midifiles.meta import KeySignatureError

from .constants import (DRUM_CHANNEL, MAX_BPM, MAX_DURATION_S, MICROSECONDS_PER_MINUTE, MIN_BPM,
                        PITCH_HIGH, PITCH_LOW)
from .errors import MidiInputError
from .events import NOTE_DTYPE, fold_pitches, notes_to_events

DEFAULT_TEMPO_US = 500_000  # 120 bpm: the MIDI standard's tempo until the first set_tempo


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
    ignored_messages: dict = field(default_factory=dict)  # e.g. {"control_change": 812} (pedal)
    duration_s: float = 0.0
    n_events: int = 0

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
        ignored = ", ".join(f"{k}={v}" for k, v in self.ignored_messages.items()) or "nothing"
        return (f"{self.path}: type {self.midi_type}, {len(self.tracks)} tracks, {self.division}\n"
                f"  notes per channel: {chans}\n  tempo: {tempos or 'default 120bpm'}\n"
                f"  kept {self.kept_notes} notes = {self.n_events} events, "
                f"{self.duration_s:.1f} s\n  dropped: {dropped}\n  fixed: {fixed}\n"
                f"  ignored: {ignored}")


@dataclass
class Parsed:
    """One file read: its events (``EVENT_DTYPE``), its notes and its report."""

    events: np.ndarray
    notes: np.ndarray
    report: ParseReport


def read_midi(path, selection: Selection = Selection()) -> Parsed:
    """Read one MIDI file into events. Raises ``MidiInputError`` naming the file and reason."""
    path = Path(path)
    data = _read_bytes(path)
    midi, repairs = _open_midi(path, data)
    seconds_of, tempo_changes = _timing(path, midi)
    raw_notes, fixed, orphan_offs = _pair_notes(midi, seconds_of, selection.sustain_pedal)
    report = ParseReport(
        path=str(path), sha256=hashlib.sha256(data).hexdigest(), midi_type=midi.type,
        division=_division_text(midi.ticks_per_beat), tempo_changes=tempo_changes,
        tracks=_track_table(midi, raw_notes), channels=_channel_table(raw_notes),
        ignored_messages=_ignored_messages(midi),
        duration_s=round(float(seconds_of(_end_ticks(midi))), 6), repairs=repairs)
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
    report.kept_notes, report.dropped, report.fixed = len(notes), dropped, fixed
    events = notes_to_events(notes)
    report.n_events = len(events)
    return Parsed(events=events, notes=notes, report=report)


def read_midi_files(sources, selection: Selection = Selection()):
    """Read files, folders (all ``*.mid``/``*.midi`` inside, recursively) or glob patterns.

    Bad files are skipped, not fatal: returns ``(parsed_list, errors)`` where ``errors`` is a
    list of ``MidiInputError``.
    """
    parsed, errors = [], []
    for path in expand_sources(sources):
        try:
            parsed.append(read_midi(path, selection))
        except MidiInputError as err:
            errors.append(err)
    return parsed, errors


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

def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MidiInputError(path, "no such file") from None
    except OSError as err:
        raise MidiInputError(path, f"cannot read the file ({err.strerror})") from None
    if not data:
        raise MidiInputError(path, "empty file (0 bytes)")
    if data[:4] == b"RIFF" and data[8:12] == b"RMID" and b"MThd" in data:
        data = data[data.index(b"MThd"):]  # RIFF-wrapped MIDI: the standard file is inside
    if data[:4] != b"MThd":
        raise MidiInputError(path, "not a MIDI file (no 'MThd' header)")
    return data


def _open_midi(path: Path, data: bytes) -> tuple[mido.MidiFile, list]:
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
    except EOFError:
        raise MidiInputError(path, "truncated: the file ends inside a header or track") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, struct.error) as err:
        raise MidiInputError(path, f"corrupt MIDI data ({err})") from None
    if not midi.tracks:
        raise MidiInputError(path, "the file has zero tracks")
    if midi.ticks_per_beat == 0:
        raise MidiInputError(path, "corrupt header: time division is 0 ticks per beat")
    return midi


# --- time: ticks to seconds through the tempo map ---------------------------------------------

def _absolute_ticks(track) -> np.ndarray:
    return np.cumsum([msg.time for msg in track], dtype=np.int64)


def _end_ticks(midi):
    """Last tick of each track (type 2: per track), or of the file."""
    ends = [int(_absolute_ticks(t)[-1]) if len(t) else 0 for t in midi.tracks]
    return np.array(ends) if midi.type == 2 else max(ends)


def _timing(path, midi):
    """A function mapping absolute ticks (per track for type 2) to seconds, and the tempo map."""
    tpb = midi.ticks_per_beat
    if tpb < 0:  # SMPTE: high byte -frames per second, low byte ticks per frame
        fps, ticks_per_frame = -(tpb >> 8), tpb & 0xFF
        if fps not in (24, 25, 29, 30) or ticks_per_frame == 0:
            raise MidiInputError(path, f"corrupt SMPTE time division ({fps} fps, "
                                       f"{ticks_per_frame} ticks per frame)")
        seconds_per_tick = 1.0 / ((29.97 if fps == 29 else fps) * ticks_per_frame)
        seconds_of = _checked(path, lambda ticks, track=None: np.asarray(ticks) * seconds_per_tick)
        return seconds_of, []
    if midi.type == 2:  # each track is its own sequence with its own tempo map
        maps = [_tempo_map(path, [t], tpb) for t in midi.tracks]
        offsets = np.cumsum([0.0] + [m[0](e)[()] for m, e in zip(maps, _end_ticks(midi))])

        def seconds_of(ticks, track=None):
            if track is None:  # the whole file: the end of the last sequence
                return offsets[-1]
            return offsets[track] + maps[track][0](ticks)

        changes = [{"time_s": round(float(offsets[i]) + c["time_s"], 6), "bpm": c["bpm"]}
                   for i, m in enumerate(maps) for c in m[1]]
        return _checked(path, seconds_of), changes
    to_seconds, changes = _tempo_map(path, midi.tracks, tpb)
    return _checked(path, lambda ticks, track=None: to_seconds(ticks)), changes


def _tempo_map(path, tracks, tpb):
    """Piecewise-linear ticks -> seconds from every set_tempo in ``tracks``."""
    tempos = [(int(tick), msg.tempo) for track in tracks
              for tick, msg in zip(_absolute_ticks(track), track) if msg.type == "set_tempo"]
    tempos.sort(key=lambda tt: tt[0])  # stable: at equal ticks the later message wins below
    change_ticks, tempos_us = [0], [DEFAULT_TEMPO_US]
    for tick, tempo in tempos:
        bpm = MICROSECONDS_PER_MINUTE / tempo if tempo > 0 else float("inf")
        if not MIN_BPM <= bpm <= MAX_BPM:
            raise MidiInputError(path, f"absurd tempo {tempo} us per beat ({bpm:.4g} bpm) at tick "
                                       f"{tick}; expected {MIN_BPM:g}..{MAX_BPM:g} bpm")
        if tick == change_ticks[-1]:
            tempos_us[-1] = tempo
        else:
            change_ticks.append(tick)
            tempos_us.append(tempo)
    change_ticks = np.array(change_ticks, np.int64)
    seconds_per_tick = np.array(tempos_us, np.float64) / 1e6 / tpb
    change_seconds = np.concatenate([[0.0], np.cumsum(np.diff(change_ticks) * seconds_per_tick[:-1])])

    def to_seconds(ticks):
        ticks = np.asarray(ticks, np.int64)
        i = np.searchsorted(change_ticks, ticks, side="right") - 1
        return change_seconds[i] + (ticks - change_ticks[i]) * seconds_per_tick[i]

    changes = [{"time_s": round(float(s), 6), "bpm": round(MICROSECONDS_PER_MINUTE / t, 3)}
               for s, t, tick in zip(change_seconds, tempos_us, change_ticks)
               if tick > 0 or tempos]
    return to_seconds, changes


def _checked(path, seconds_of):
    """Refuse absurd delta times (a file lasting days) before anything is allocated for them."""
    def checked(ticks, track=None):
        seconds = seconds_of(ticks, track)
        if np.size(seconds) and np.max(seconds) > MAX_DURATION_S:
            raise MidiInputError(path, f"absurd delta times: the music would last "
                                       f"{np.max(seconds) / 3600:.1f} hours")
        return seconds
    return checked


# --- notes: pair offs with ons ----------------------------------------------------------------

def _pair_notes(midi, seconds_of, sustain_pedal=False):
    """All notes of the file as a list of dicts-in-arrays, plus repair counts."""
    messages = []  # (tick, track, order, channel, pitch, velocity)
    program_changes = []  # (tick, track, order, channel, program)
    pedals = []  # (tick, track, order, channel, down)
    for t, track in enumerate(midi.tracks):
        for order, (tick, msg) in enumerate(zip(_absolute_ticks(track), track)):
            if msg.type in ("note_on", "note_off"):
                velocity = msg.velocity if msg.type == "note_on" else 0
                messages.append((int(tick), t, order, msg.channel, msg.note, velocity))
            elif msg.type == "program_change":
                program_changes.append((int(tick), t, order, msg.channel, msg.program))
            elif msg.type == "control_change" and msg.control == 64:
                pedals.append((int(tick), t, order, msg.channel, msg.value >= 64))
    # Type 2 tracks are separate sequences; others play at once, merged by time.
    key = (lambda m: (m[1], m[0], m[2])) if midi.type == 2 else (lambda m: (m[0], m[1], m[2]))
    messages.sort(key=key)
    program_changes.sort(key=key)
    pedals.sort(key=key)

    sounding: dict[tuple, deque] = defaultdict(deque)
    notes = []  # (start_tick, end_tick, track, channel, pitch, velocity)
    overlapping = orphan_offs = 0
    for tick, track, _, channel, pitch, velocity in messages:
        queue = sounding[(track if midi.type == 2 else 0, channel, pitch)]
        if velocity > 0:
            overlapping += bool(queue)
            queue.append((tick, track, velocity))
        elif queue:
            start, on_track, on_velocity = queue.popleft()
            notes.append((start, tick, on_track, channel, pitch, on_velocity))
        else:
            orphan_offs += 1
    ends = _end_ticks(midi)
    closed = 0
    for (_, channel, pitch), queue in sounding.items():
        for start, track, velocity in queue:
            end = int(ends[track]) if midi.type == 2 else int(ends)
            notes.append((start, end, track, channel, pitch, velocity))
            closed += 1
    fixes = {"closed_at_end": closed, "overlapping_same_pitch": overlapping}
    if sustain_pedal:
        notes, fixes["held_by_pedal"] = _hold_by_pedal(notes, pedals, midi.type == 2)
    return _to_note_table(notes, program_changes, seconds_of, midi.type == 2), fixes, orphan_offs


def _hold_by_pedal(notes, pedals, per_track):
    """As on a piano: a key released while the sustain pedal is down sounds on until the pedal
    comes up, or until the same key is struck again. Returns the notes and how many were held."""
    up_ticks = defaultdict(list)  # (track or 0, channel) -> ticks where the pedal goes up
    down_at = defaultdict(list)  # (track or 0, channel) -> [(tick, is_down)] in order
    for tick, track, _, channel, down in pedals:
        where = (track if per_track else 0, channel)
        down_at[where].append((tick, down))
        if not down:
            up_ticks[where].append(tick)
    starts = defaultdict(list)  # same key struck again: (track or 0, channel, pitch) -> starts
    for start, _, track, channel, pitch, _ in notes:
        starts[(track if per_track else 0, channel, pitch)].append(start)
    for key in starts:
        starts[key].sort()
    held, out = 0, []
    for start, end, track, channel, pitch, velocity in notes:
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
        out.append((start, end, track, channel, pitch, velocity))
    return out, held


def _to_note_table(notes, program_changes, seconds_of, per_track):
    if not notes:
        return {}
    start, end, track, channel, pitch, velocity = (np.array(col) for col in zip(*notes))
    if per_track:
        start_s, end_s = np.empty(len(start)), np.empty(len(start))
        for t in np.unique(track):
            sel = track == t
            start_s[sel], end_s[sel] = seconds_of(start[sel], t), seconds_of(end[sel], t)
    else:
        start_s, end_s = seconds_of(start), seconds_of(end)
    return {"start_s": start_s, "end_s": end_s, "track": track, "channel": channel,
            "pitch": pitch, "velocity": velocity,
            "program": _programs_at(program_changes, start, track, channel, per_track)}


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


def _ignored_messages(midi) -> dict:
    """Channel messages that carry no notes (pedal and other controllers, pitch bends, ...)."""
    counts = Counter(msg.type for track in midi.tracks for msg in track
                     if not msg.is_meta and msg.type not in ("note_on", "note_off", "program_change"))
    return dict(sorted(counts.items()))


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
