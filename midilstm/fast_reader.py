"""A fast reader for collections: symusic's C++ parser under our rules, or ``None``.

``read_midi_fast(path, selection)`` gives exactly the events and notes that
``parse.read_midi(path, selection)`` gives, or ``None`` when it cannot be sure; then the caller
reads the file with ``read_midi`` (the mido path, the one taught in ``01_parse``). It is an
optional front end: without symusic (``pip install symusic``) it always returns ``None``.

symusic (https://github.com/Yikai-Liao/symusic) pairs note-ons with note-offs in C++, first in
first out per (track, channel, pitch) like ``midilstm.pairing``, but it hides what our rules
need: the channel of its tracks, the MIDI track they came from, where programs change, the
order of tempo changes at one tick; and it drops silently what ``pairing`` repairs (a note-on
never ended). So one pass over the bytes, compiled by numba (``fast_scan``), sees what symusic
hides and checks every way the two readers could part:

* **What symusic cannot tell.** Each file's tempo changes, program changes and sustain-pedal
  messages, as ``smf.MessageScan`` holds them, and the keys symusic groups notes by ((channel,
  program) within each MIDI track, in its order), with their note counts. symusic's tracks must
  match those keys one for one (program, drum flag and note count), or ``None``.
* **Where the readers differ.** A key with a note-on never ended: ``pairing`` pairs it another
  way (``_pair_flush``) and closes what is left at the end of the track, symusic loses those
  notes; the scan runs again keeping those tracks' note messages and the key's notes are
  ``pairing``'s own. ``None`` for the rest: messages after an end-of-track (symusic stops
  there, mido reads on); a meta message of a type mido does not know (mido gives it no delta
  time); system messages, and running status after anything but a channel message; anything
  ``smf`` refuses as corrupt or over ``ReadLimits`` (then ``read_midi`` gives the one-line
  reason); ticks past 32 bits (symusic's).
* **Our rules.** symusic's notes (read from its note lists' state in one ``np.frombuffer``,
  ``fast_tracks``) with each note's MIDI track and channel are the note table ``pair_notes``
  gives (ticks, track, channel, pitch, velocity). For the common case (ticks per beat, type 0
  or 1, no pedal, no selection by program) one compiled pass (``fast_rules``) applies the
  steps of ``parse._read_midi`` on ticks: ``Selection``, the pitch policy, zero-length notes,
  ``strike_again`` (one pass by start), ``notes_to_events`` (a merge of the note-ons and the
  sorted note-offs), with seconds through the tempo map by ``tempo``'s own arithmetic,
  operation for operation. Ordering and merging by ticks is ordering and merging
  by seconds wherever every tick has its own second, which it checks (else the numpy steps
  decide). Otherwise the steps run from their homes: ``pairing._hold_by_pedal``,
  ``pairing._to_note_table`` (``tempo.file_timing``, each note's program), ``parse._select``,
  ``parse._apply_pitch_policy``, ``strike_again``, ``notes_to_events``. ``FastParsed.notes``
  is the events decoded, as ``read_midi`` gives them (``events_to_notes``, vectorised for the
  streams ``strike_again`` makes), worked out when first asked for.

The rows of the note table come in another order than ``pair_notes``'s; nothing after it
depends on that order (``strike_again`` sorts and merges by value). The rules here are
checked, not trusted: ``tests/test_fast_reader.py`` compares the result with ``read_midi``'s
(``np.array_equal``) on every real file the project has, on crafted files for each rule and on
random ones, so a rule changed in ``parse``/``pairing``/``events`` and not here fails there.
``bench/fast_reader.py`` counts agreement and measures the speed.

Usage::

    from midilstm.fast_reader import read_midi_fast
    fast = read_midi_fast(path, selection)
    events = fast.events if fast is not None else read_midi(path, selection).events
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .errors import MidiInputError
from .events import NOTE_DTYPE, events_to_notes
from .fast_rules import apply_rules
from .fast_scan import (
    CORRUPT,
    DANGLING,
    LIMIT,
    MAX_TRACKS,
    META_RULE,
    ODD,
    OK,
    REASONS,
    TICKS,
    load_scan,
    read_bytes,
    track_chunks,
)
from .fast_tracks import symusic_notes
from .parse import Selection
from .smf import ReadLimits

__all__ = ["CORRUPT", "DANGLING", "LIMIT", "NOT_READ", "ODD", "OK", "REASONS", "TICKS",
           "FastParsed", "decode_general", "read_midi_fast", "symusic_available"]

# Why a file was not read fast, besides the scan's codes (``fast_scan.REASONS``)
NOT_READ = {"no_symusic": "symusic is not installed", "no_numba": "numba is not available",
            "header": "no standard header, zero tracks or a division of 0 ticks per beat",
            "symusic": "symusic refused the file", "tracks": "symusic's tracks do not match "
                                                           "the file's keys",
            "no_notes": "no notes (or none left): read_midi gives the reason",
            "error": "the fast reader failed (a bug, or a function it calls changed); "
                     "tests/test_fast_reader.py fails too"}


class FastParsed:
    """What ``read_midi`` gives that a corpus needs: ``events``, and ``notes`` (the events
    decoded, as ``Parsed.notes``; worked out when first asked for, since a corpus keeps only
    the events)."""

    __slots__ = ("_notes", "events")

    def __init__(self, events: np.ndarray):
        self.events = events
        self._notes = None

    @property
    def notes(self) -> np.ndarray:
        if self._notes is None:
            decoded = _decode(self.events)
            self._notes = decode_general(self.events) if decoded is None else decoded
        return self._notes


_symusic_module = None


def symusic_available() -> bool:
    """Whether the fast path can run at all (symusic and numba import)."""
    return _load_symusic() is not None and load_scan() is not None


def read_midi_fast(path, selection: Selection = Selection(), *,  # noqa: B008  as read_midi
                   limits: ReadLimits = ReadLimits(), why: bool = False):  # noqa: B008
    """``FastParsed(events, notes)`` equal to ``read_midi(path, selection)``'s, or ``None``.

    ``None`` means "read it with ``read_midi``": symusic is missing, the file holds something
    the two readers could take differently, or ``read_midi`` would refuse it (so its one-line
    reason comes from there). Never raises: a failure of its own is ``None`` too (reason
    ``"error"``), which the tests on the bundled music catch. With ``why=True`` returns
    ``(result, reason)``, ``reason`` a key of ``NOT_READ`` or ``REASONS`` (``None`` when read).
    """
    try:
        result, reason = _read_fast(path if isinstance(path, Path) else Path(path),
                                    selection, limits)
    except MidiInputError:
        result, reason = None, "no_notes"
    except MemoryError:
        result, reason = None, LIMIT
    except Exception:  # noqa: BLE001  a bug here (or a rule's home changed): read_midi reads it
        result, reason = None, "error"
    return (result, reason) if why else result


def _read_fast(path: Path, selection: Selection, limits: ReadLimits):
    symusic = _load_symusic()
    if symusic is None:
        return None, "no_symusic"
    scan = load_scan()
    if scan is None:
        return None, "no_numba"
    data = read_bytes(path, limits.max_bytes)
    if data is None:
        return None, CORRUPT
    layout = track_chunks(data)
    if layout is None:
        return None, "header"
    midi_type, tpb, bounds, plain = layout
    if not bounds or len(bounds) > MAX_TRACKS or tpb == 0:
        return None, "header"
    code, end_ticks, n_ons, tempos, programs, pedals, keys, dangling = scan(
        np.frombuffer(data, np.uint8), np.array(bounds, np.int64), limits.max_messages,
        META_RULE)
    if code != OK:
        return None, code
    if n_ons > limits.max_notes:
        return None, LIMIT
    if n_ons == 0:
        return None, "no_notes"
    if not (plain and tpb >= 480):  # symusic gets only the chunks read_midi reads
        # symusic refuses SMPTE divisions; it is asked for ticks only (seconds are ours below)
        data = (b"MThd" + struct.pack(">IHHh", 6, midi_type, len(bounds), max(tpb, 480))
                + b"".join(data[s - 8:e] for s, e in bounds))
    try:
        score = symusic.Score.from_midi(data)
    except Exception:  # noqa: BLE001  whatever symusic refuses, read_midi reads or refuses
        return None, "symusic"
    table = symusic_notes(score, keys, dangling, end_ticks)
    if table is None:
        return None, "tracks"
    events = apply_rules(path, table, midi_type, tpb, len(bounds),
                         (tempos, programs, pedals, end_ticks), selection)
    return (FastParsed(events), None) if events is not None else (None, "no_notes")


def _decode(events: np.ndarray):
    """``events_to_notes(events)[0]``, vectorised for a stream in which every pitch alternates
    note-on, note-off (what ``notes_to_events`` makes of ``strike_again``'s notes); ``None``
    for any other stream."""
    n = len(events)
    times = np.cumsum(events["delta_s"])  # as events.onset_times_s
    order = np.argsort(events["pitch"], kind="stable")
    pitch = events["pitch"][order]
    is_on = events["velocity"][order] > 0
    first = np.r_[True, pitch[1:] != pitch[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    rank = np.arange(n) - group_start
    last = np.r_[pitch[1:] != pitch[:-1], True]
    if not (np.array_equal(is_on, rank % 2 == 0) and (rank[last] % 2 == 1).all()):
        return None  # not alternating: the general decoder (never for read_midi_fast's own)
    on_at, off_at = order[is_on], order[~is_on]
    by_off = np.argsort(off_at, kind="stable")  # events_to_notes appends a note at its off
    on_at, off_at = on_at[by_off], off_at[by_off]
    notes = np.empty(len(on_at), NOTE_DTYPE)
    notes["start_s"], notes["end_s"] = times[on_at], times[off_at]
    notes["pitch"], notes["velocity"] = events["pitch"][on_at], events["velocity"][on_at]
    return notes[np.lexsort((notes["pitch"], notes["start_s"]))]


def decode_general(events: np.ndarray) -> np.ndarray:
    """The notes of any event stream, as ``read_midi`` gives them (for tests and comparison)."""
    return events_to_notes(events)[0]


def _load_symusic():
    global _symusic_module
    if _symusic_module is None:
        try:
            import symusic
        except Exception:  # noqa: BLE001  an optional dependency: absent or broken, no fast path
            _symusic_module = False
        else:
            _symusic_module = symusic
    return _symusic_module or None
