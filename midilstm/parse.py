"""Read standard MIDI files into note events, with a report of what was kept and dropped.

Real files end notes with ``note_off`` (or ``note_on`` velocity 0), keep tempo changes in any
track, spread music over tracks and channels and put drums on channel 10. Reading all of that
faithfully takes four steps, each in its own module:

* **Bytes** (``midilstm.smf``): only regular files, within ``ReadLimits``; RIFF unwrapped,
  unknown chunks skipped and counted, key signatures mido refuses neutralised. ``open_midi``
  gives that repaired file.
* **Time** (``midilstm.tempo``): ticks become seconds through the file's whole tempo map.
* **Pairing** (``midilstm.pairing``): each note-on with the note-off that ends it, per (track,
  channel, pitch); the sustain pedal when asked for.
* **One stream** (here): the notes ``Selection`` keeps (drums left out by default) merge into
  one stream of ``(pitch, velocity, delta_s)`` events that knows pitch only. To make it mean
  exactly the notes, overlaps on one pitch follow the piano's rule (``events.strike_again``): a
  key struck again while it sounds ends the earlier note at the new strike, and notes struck at
  the same instant merge. Every note shortened or merged is counted. So
  ``events_to_notes(parsed.events)[0]`` equals ``parsed.notes`` exactly, for every file.

``ParseReport`` says what the file contains and what reading kept, dropped and fixed.

Usage::

    parsed = read_midi("music/piece.mid")              # all melodic notes
    parsed = read_midi(path, Selection(channels=(0,)))  # the lesson's "channel 0 only"
    parsed.events, parsed.report.to_dict()
    midi = open_midi(path)                              # the mido.MidiFile read_midi reads
"""
from __future__ import annotations

import contextlib
import glob
import reprlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mido
import numpy as np

from .checks import is_int
from .constants import DRUM_CHANNEL, PITCH_HIGH, PITCH_LOW
from .errors import MidiInputError, ParameterError
from .events import NOTE_DTYPE, events_to_notes, fold_pitches, notes_to_events, strike_again
from .pairing import pair_notes
from .params import check_fields
from .smf import ReadLimits, load_file, short_text, to_mido
from .tempo import division_text, file_timing

# Bump whenever the notes a file gives could change (caches of parsed files key on it).
READER_VERSION = 2
MAX_TRACK = 0xFFFF - 1  # a header counts tracks in 16 bits: the last is index 65534


@dataclass(frozen=True)
class Selection:
    """Which notes of a file to keep. Channels are 0-based (the drum channel "10" is 9).

    ``channels``/``tracks``/``programs`` of ``None`` keep everything; otherwise one number or
    any iterable of them (stored as a tuple). Drums are left out unless ``include_drums`` is
    set or channel 9 is asked for by name. ``out_of_range`` says what happens to pitches
    outside [pitch_low, pitch_high] (MIDI pitches, low <= high): ``"fold"`` moves them by
    octaves into the range (the pitch class survives; the range must span an octave),
    ``"drop"`` removes the note. A bad field raises ``ParameterError`` naming it.
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
        """Check every field (``ParameterError`` naming it); store numbers as Python ints.
        channels, include_drums, sustain_pedal and out_of_range follow the parameter table."""
        check_fields(self)
        for name, top, what in (("channels", 15, "channel"), ("tracks", MAX_TRACK, "track"),
                                ("programs", 127, "program")):
            value = getattr(self, name)
            if value is not None:  # one number or any iterable of them, stored as a tuple
                object.__setattr__(self, name, _whole_numbers(name, value, top, what))
        for name in ("pitch_low", "pitch_high"):
            value = getattr(self, name)
            if not is_int(value) or not 0 <= value <= 127:
                raise ParameterError(name, f"must be a MIDI pitch, a whole number in 0..127, "
                                           f"not {reprlib.repr(value)}")
            object.__setattr__(self, name, int(value))
        self._check_pitch_range()

    def _check_pitch_range(self):
        low, high = self.pitch_low, self.pitch_high
        if low > high:
            raise ParameterError("pitch_low", f"{low} is above pitch_high {high}: the range "
                                              f"pitch_low..pitch_high would hold no pitch")
        if self.out_of_range == "fold" and high - low < 11:
            # Folding moves a pitch by octaves: a range narrower than an octave lacks some
            # pitch classes, and their notes would stay outside it.
            raise ParameterError("out_of_range", f"'fold' needs a range of at least 12 pitches "
                                                 f"(one octave), but pitch_low..pitch_high is "
                                                 f"{low}..{high}: widen it or use 'drop'")


def _whole_numbers(name: str, value, top: int, what: str) -> tuple[int, ...]:
    """``value`` (one number or an iterable of them) as a non-empty tuple of ints in 0..top."""
    items = None
    if is_int(value):
        items = (value,)
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        with contextlib.suppress(TypeError):  # a 0-d numpy array is Iterable but not iterable
            items = tuple(value)
    if items is None or not all(is_int(v) and 0 <= v <= top for v in items):
        raise ParameterError(name, f"must be None or whole numbers in 0..{top} (0-based), "
                                   f"not {reprlib.repr(value)}")
    if not items:
        raise ParameterError(name, f"must name at least one {what}, or be None for every one")
    return tuple(int(v) for v in items)


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
    """Read one MIDI file into events. Raises ``MidiInputError`` naming the file and reason.

    Time and memory are bounded by ``limits`` (``midilstm.smf``); running out of memory all the
    same is a ``MidiInputError`` too."""
    path = Path(path)
    try:
        return _read_midi(path, selection, limits)
    except MemoryError:
        raise MidiInputError(path, "out of memory while reading the file (lower the limits "
                                   "in ReadLimits, or free memory)") from None


def _read_midi(path: Path, selection: Selection, limits: ReadLimits) -> Parsed:
    loaded = load_file(path, limits)
    midi, scan = loaded.midi, loaded.scan
    seconds_of, tempo_changes, warnings = file_timing(path, midi, scan)
    raw_notes, fixed, orphan_offs = pair_notes(midi, scan, seconds_of, selection.sustain_pedal)
    report = ParseReport(
        path=str(path), sha256=loaded.sha256, midi_type=midi.type,
        division=division_text(midi.ticks_per_beat), tempo_changes=tempo_changes,
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
    list of ``MidiInputError``, one a skipped file. A file that fails in any other way (a bug
    of the reader) is skipped too, as ``MidiInputError`` "reader failed (...)": one file never
    stops the others.
    """
    parsed, errors = [], []
    for path in expand_sources(sources):
        try:
            parsed.append(read_midi(path, selection, limits=limits))
        except MidiInputError as err:
            errors.append(err)
        except Exception as err:  # noqa: BLE001  one file's failure must not stop the others
            errors.append(reader_failed(path, err))
    return parsed, errors


def reader_failed(path, err: BaseException) -> MidiInputError:
    """The one-line ``MidiInputError`` for a file the reader failed on unexpectedly."""
    try:
        text = short_text(err)
    except Exception:  # noqa: BLE001  an exception whose str() fails
        text = ""
    return MidiInputError(path, f"reader failed ({type(err).__name__}: {text[:300]}); please "
                                f"report it")


def open_midi(path, *, limits: ReadLimits = ReadLimits()) -> mido.MidiFile:
    """The ``mido.MidiFile`` that ``read_midi`` reads: RIFF unwrapped, unknown chunks skipped,
    invalid key signatures neutralised. Raises ``MidiInputError`` for what it cannot read
    (the same checks and limits as ``read_midi``)."""
    path = Path(path)
    loaded = load_file(path, limits)
    try:
        return to_mido(loaded)
    except MemoryError:
        raise MidiInputError(path, "out of memory while building the mido file (lower the "
                                   "limits in ReadLimits, or free memory)") from None


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

def _track_table(midi, table):
    n = len(midi.tracks)
    counts, channels = [0] * n, [[] for _ in range(n)]
    if table:  # one pass over the notes, whatever the number of tracks
        counts = np.bincount(table["track"], minlength=n).tolist()
        for pair in np.unique(table["track"] * 16 + table["channel"]).tolist():
            channels[pair // 16].append(pair % 16)
    return [{"index": i, "name": track.name.strip(), "notes": counts[i], "channels": channels[i]}
            for i, track in enumerate(midi.tracks)]


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
