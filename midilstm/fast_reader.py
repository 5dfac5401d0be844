"""A fast reader for collections: symusic's C++ parser under our rules, or ``None``.

``read_midi_fast(path, selection)`` gives exactly the events and notes that
``parse.read_midi(path, selection)`` gives, or ``None`` when it cannot be sure; then the caller
reads the file with ``read_midi`` (the mido path, the one taught in ``01_parse``). It is an
optional front end: without symusic (``pip install symusic``) it always returns ``None``.

symusic (https://github.com/Yikai-Liao/symusic) pairs note-ons with note-offs in C++, first in
first out per (track, channel, pitch) like ``midilstm.pairing``, but it hides what our rules
need: the channel of its tracks, the MIDI track they came from, where programs change, the
order of tempo changes at one tick; and it drops silently what ``pairing`` repairs (a note-on
never ended). So one pass over the bytes, compiled by numba (``_scan``), sees what symusic
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
* **Our rules.** symusic's notes become the note table ``pair_notes`` gives (ticks, track,
  channel, pitch, velocity). For the common case (ticks per beat, type 0 or 1, no pedal, no
  selection by program) one compiled pass (``_compile_rules``) applies the steps of
  ``parse._read_midi`` on ticks: ``Selection``, the pitch policy, zero-length notes,
  ``strike_again``, ``notes_to_events``, with seconds through the tempo map by ``tempo``'s own
  arithmetic, operation for operation. Ordering and merging by ticks is ordering and merging
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

import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import DRUM_CHANNEL
from .errors import MidiInputError
from .events import (
    EVENT_DTYPE,
    NOTE_DTYPE,
    events_to_notes,
    notes_to_events,
    strike_again,
)
from .pairing import _hold_by_pedal, _pair_flush, _to_note_table
from .parse import Selection, _apply_pitch_policy, _select
from .smf import ReadLimits
from .tempo import file_timing

# Why a file was not read fast (``read_midi_fast(..., why=True)``; the bench counts them).
OK, CORRUPT, DANGLING, ODD, LIMIT, TICKS = range(6)
REASONS = {CORRUPT: "corrupt or truncated (read_midi refuses it)",
           DANGLING: "a note-on some key never ends (pairing repairs it, symusic drops it)",
           ODD: "a message the two readers take differently (unknown meta, system message, "
                "running status after a non-channel message, messages after end-of-track)",
           LIMIT: "over ReadLimits (read_midi refuses it)",
           TICKS: "ticks past 2**31 - 1 (symusic keeps 32-bit ticks)"}
NOT_READ = {"no_symusic": "symusic is not installed", "no_numba": "numba is not available",
            "header": "no standard header, zero tracks or a division of 0 ticks per beat",
            "symusic": "symusic refused the file", "tracks": "symusic's tracks do not match "
                                                           "the file's keys",
            "no_notes": "no notes (or none left): read_midi gives the reason",
            "error": "the fast reader failed (a bug, or a function it calls changed); "
                     "tests/test_fast_reader.py fails too"}

MAX_TICK = 2**31 - 1
MAX_DELTA_TICKS = 0x0FFFFFFF
MAX_DATA_LENGTH = 1_000_000
MAX_TRACKS = 4096  # more MTrk chunks than this: not worth a fast path (read_midi reads them)

# meta types as mido takes them: 1 any length, 2 checked below, 0 unknown to mido (no delta)
_META_RULE = np.zeros(256, np.int64)
for _t in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x2F, 0x7F, 0x51, 0x59, 0x21):
    _META_RULE[_t] = 1
for _t in (0x00, 0x20, 0x54, 0x58):
    _META_RULE[_t] = 2


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
_scan_function = None


def symusic_available() -> bool:
    """Whether the fast path can run at all (symusic and numba import)."""
    return _load_symusic() is not None and _load_scan() is not None


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
        result, reason = _read_fast(Path(path), selection, limits)
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
    scan = _load_scan()
    if scan is None:
        return None, "no_numba"
    data = _read_bytes(path, limits.max_bytes)
    if data is None:
        return None, CORRUPT
    layout = _chunks(data)
    if layout is None:
        return None, "header"
    midi_type, tpb, bounds = layout
    if not bounds or len(bounds) > MAX_TRACKS or tpb == 0:
        return None, "header"
    array = np.frombuffer(data, np.uint8)
    starts = np.array([b[0] for b in bounds], np.int64)
    ends = np.array([b[1] for b in bounds], np.int64)
    code, end_ticks, n_ons, tempos, programs, pedals, keys, dangling = scan(
        array, starts, ends, limits.max_messages, _META_RULE)
    if code != OK:
        return None, code
    if n_ons > limits.max_notes:
        return None, LIMIT
    if n_ons == 0:
        return None, "no_notes"
    # symusic refuses SMPTE divisions; it is asked for ticks only (seconds are ours below)
    smf_bytes = (b"MThd" + struct.pack(">IHHh", 6, midi_type, len(bounds), max(tpb, 480))
                 + b"".join(data[s - 8:e] for s, e in bounds))
    try:
        score = symusic.Score.from_midi(smf_bytes)
    except Exception:  # noqa: BLE001  whatever symusic refuses, read_midi reads or refuses
        return None, "symusic"
    columns = _columns(score, keys, dangling, end_ticks)
    if columns is None:
        return None, "tracks"
    if (tpb > 0 and midi_type != 2 and not selection.sustain_pedal
            and selection.programs is None and not (tempos[:, 2] == 0).any()):
        events = _fused_rules(columns, tempos, tpb, len(bounds), selection)
        if events is not None:
            return (FastParsed(events), None) if len(events) else (None, "no_notes")
    per_track = midi_type == 2
    timing_midi = _Midi(midi_type, tpb, [None] * len(bounds))
    timing_scan = _Scan([tuple(row) for row in tempos.tolist()], end_ticks)
    seconds_of, _, _ = file_timing(path, timing_midi, timing_scan)
    if selection.sustain_pedal:
        held = [(t, k, o, c, bool(d)) for t, k, o, c, d in pedals.tolist()]
        columns, _ = _hold_by_pedal(columns, held, per_track)
    # each note's program matters only to a selection by program (``parse._select``)
    changes = [tuple(row) for row in programs.tolist()] if selection.programs is not None else []
    table = _to_note_table(columns, changes, seconds_of, per_track)
    notes, dropped = _select(table, selection)
    if len(notes) == 0:
        return None, "no_notes"
    notes, _ = _apply_pitch_policy(notes, selection, dropped)
    notes = notes[notes["end_s"] > notes["start_s"]]
    if len(notes) == 0:
        return None, "no_notes"
    notes, _ = strike_again(notes)
    return FastParsed(notes_to_events(notes)), None


def _fused_rules(columns, tempos, tpb: int, n_tracks: int, selection: Selection):
    """The rules after pairing in one compiled pass, for the common case (ticks per beat, type
    0 or 1, no pedal, no selection by program): the events, empty if no note is left, or
    ``None`` if the tempo map could give two ticks one second (then the steps above, in
    numpy, decide). Every step is the one of ``parse._read_midi``, on ticks instead of seconds:
    a tempo map that gives every tick its own second orders, compares and merges notes by
    ticks exactly as by seconds; the seconds are ``tempo``'s arithmetic, operation for
    operation (``_tempo_map``)."""
    kernel = _load_rules()
    if kernel is None:
        return None
    channels = np.zeros(16, np.bool_)
    channels[list(selection.channels) if selection.channels is not None else slice(None)] = True
    tracks = np.zeros(n_tracks, np.bool_)
    if selection.tracks is None:
        tracks[:] = True
    else:
        tracks[[t for t in selection.tracks if t < n_tracks]] = True
    drums = selection.include_drums or (selection.channels is not None
                                        and DRUM_CHANNEL in selection.channels)
    result = kernel(columns["start"], columns["end"], columns["track"], columns["channel"],
                    columns["pitch"], columns["velocity"], tempos[:, 0].copy(),
                    tempos[:, 2].copy(), tpb, channels, tracks, drums, selection.pitch_low,
                    selection.pitch_high, selection.out_of_range == "fold")
    if result is None:
        return None
    pitch, velocity, delta = result
    events = np.empty(len(pitch), EVENT_DTYPE)
    events["pitch"], events["velocity"], events["delta_s"] = pitch, velocity, delta
    return events


def _read_bytes(path: Path, max_bytes: int):
    """The file's bytes, or ``None`` where ``smf.read_file_bytes`` refuses it (not a regular
    file, over the size limit, unreadable). Opened without blocking (a FIFO would wait for a
    writer) and checked on the open file; reads the size the file has, not ``max_bytes``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not 0 < info.st_size <= max_bytes:
            return None
        data = os.read(fd, info.st_size + 1)  # one more: the file may have grown
        while len(data) <= info.st_size:  # a short read: the rest
            more = os.read(fd, info.st_size + 1 - len(data))
            if not more:
                break
            data += more
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if 0 < len(data) <= max_bytes else None


@dataclass
class _Midi:  # what tempo.file_timing reads of a file
    type: int
    ticks_per_beat: int
    tracks: list


@dataclass
class _Scan:  # what tempo.file_timing reads of a MessageScan
    tempos: list
    end_ticks: np.ndarray


def _chunks(data: bytes):
    """``(type, division, [(body start, body end)] of the MTrk chunks read_midi reads)`` or
    ``None`` where it would refuse the file (as ``smf._standard_file``/``_standard_chunks``)."""
    if data[:4] == b"RIFF" and data[8:12] == b"RMID" and b"MThd" in data:
        offset = data.index(b"MThd")
    elif data[:4] == b"MThd":
        offset = 0
    else:
        return None
    if len(data) < offset + 14:
        return None
    header_size, midi_type, ntrks, tpb = struct.unpack(">IHHh", data[offset + 4:offset + 14])
    if header_size < 6 or ntrks == 0:
        return None
    pos, bounds = offset + 8 + header_size, []
    while pos + 8 <= len(data):
        kind = data[pos:pos + 4]
        size = struct.unpack(">I", data[pos + 4:pos + 8])[0]
        if kind != b"MTrk" and not all(0x20 <= b <= 0x7E for b in kind):  # junk: ignored
            break
        if kind == b"MTrk" and len(bounds) < ntrks:
            if pos + 8 + size > len(data):
                return None  # truncated
            bounds.append((pos + 8, pos + 8 + size))
        pos += 8 + size
    if len(bounds) < ntrks:
        return None
    return midi_type, tpb, bounds


def _columns(score, keys: np.ndarray, dangling: np.ndarray, end_ticks: np.ndarray):
    """symusic's notes as ``pair_notes``'s columns (ticks), or ``None`` if its tracks do not
    match the keys of the scan one for one (MIDI track, channel, program, note count).

    symusic pairs first in first out and drops the note-ons left unended; ``pairing`` pairs a
    key with such a note-on its other way (``_pair_flush``) and closes what is left at the end
    of the track. So those keys' notes are ``pairing``'s, from their messages (``dangling``),
    and symusic's count for their tracks is less the note-ons it dropped."""
    replaced_keys, replaced = [], []
    if not len(dangling):  # every note-on ended: symusic's notes are pairing's
        wanted = keys.tolist()
    else:
        expected = {(t, c, p): n for t, c, p, n in keys.tolist()}
        by_key = {}
        for tick, t, c, pitch, velocity, program in dangling.tolist():
            by_key.setdefault((t, c, pitch), []).append((tick, velocity, program))
        for (t, c, pitch), messages in by_key.items():
            queue = []  # symusic's first in first out: which note-ons it drops
            for tick, velocity, program in messages:
                if velocity > 0:
                    queue.append(program)
                elif queue:
                    queue.pop(0)
            if not queue:  # first in first out ends every note-on of this key: symusic's
                continue
            for program in queue:
                expected[(t, c, program)] -= 1
            pairs, open_notes, _ = _pair_flush([m[0] for m in messages],
                                               [m[1] for m in messages])
            pairs += [(start, int(end_ticks[t]), velocity) for start, velocity in open_notes]
            replaced_keys.append((t * 16 + c) * 128 + pitch)
            replaced += [(start, stop, t, c, pitch, velocity) for start, stop, velocity in pairs]
        wanted = [(*key, n) for key, n in expected.items() if n > 0]  # scan order
    tracks = [(t, n) for t in score.tracks if (n := t.note_num()) > 0]
    if len(tracks) != len(wanted):
        return None
    parts, owners = [], []
    for (track, n), (t, channel, program, count) in zip(tracks, wanted):
        if n != count or track.program != program or track.is_drum != (channel == 9):
            return None
        parts.append(track.notes.numpy())
        owners.append((t, channel, count))
    counts = np.array([o[2] for o in owners], np.int64)
    none = [np.zeros(0, np.int64)]  # every key's notes may be replaced below

    def column(name):
        return np.concatenate(none + [p[name] for p in parts]).astype(np.int64)

    start = column("time")
    columns = {"start": start, "end": start + column("duration"),
               "track": np.repeat(np.array([o[0] for o in owners], np.int64), counts),
               "channel": np.repeat(np.array([o[1] for o in owners], np.int64), counts),
               "pitch": column("pitch"), "velocity": column("velocity")}
    if replaced_keys:
        key = (columns["track"] * 16 + columns["channel"]) * 128 + columns["pitch"]
        keep = ~np.isin(key, replaced_keys)
        extra = np.array(replaced, np.int64).reshape(-1, 6)
        for i, name in enumerate(("start", "end", "track", "channel", "pitch", "velocity")):
            columns[name] = np.concatenate([columns[name][keep], extra[:, i]])
    return columns


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


def _load_scan():
    global _scan_function
    if _scan_function is None:
        try:
            _scan_function = _compile_scan()
        except Exception:  # noqa: BLE001  numba missing or failing: no fast path
            _scan_function = False
    return _scan_function or None


_rules_function = None


def _load_rules():
    global _rules_function
    if _rules_function is None:
        try:
            _rules_function = _compile_rules()
        except Exception:  # noqa: BLE001  numba failing: the numpy steps
            _rules_function = False
    return _rules_function or None


def _compile_rules():
    from numba import njit

    @njit(cache=True)
    def rules(start, end, track, channel, pitch, velocity, tempo_ticks, tempo_us, tpb,
              channels, tracks, drums, low, high, fold):
        # -- the tempo map, as tempo._tempo_map: stable by tick, the last at one tick wins
        order = np.argsort(tempo_ticks, kind="mergesort")
        n_t = len(order)
        ct = np.empty(n_t + 1, np.int64)
        cu = np.empty(n_t + 1, np.int64)
        m = 0
        for j in range(n_t):
            i = order[j]
            if j + 1 < n_t and tempo_ticks[order[j + 1]] == tempo_ticks[i]:
                continue
            ct[m] = tempo_ticks[i]
            cu[m] = tempo_us[i]
            m += 1
        if m == 0 or ct[0] != 0:
            for j in range(m, 0, -1):
                ct[j] = ct[j - 1]
                cu[j] = cu[j - 1]
            ct[0] = 0
            cu[0] = 500000
            m += 1
        ct, cu = ct[:m], cu[:m]
        spt = np.empty(m, np.float64)
        for j in range(m):
            spt[j] = np.float64(cu[j]) / 1e6 / tpb
        cs = np.zeros(m, np.float64)
        acc = 0.0
        for j in range(1, m):
            acc += np.float64(ct[j] - ct[j - 1]) * spt[j - 1]
            cs[j] = acc
        # -- Selection (parse._select), then the pitch policy (_apply_pitch_policy)
        n = len(start)
        keep = np.zeros(n, np.bool_)
        p = pitch.copy()
        for i in range(n):
            c = channel[i]
            if c == 9 and not drums:
                continue
            if not channels[c] or not tracks[track[i]]:
                continue
            if p[i] < low or p[i] > high:
                if not fold:
                    continue
                if p[i] < low:
                    p[i] += 12 * ((low - p[i] + 11) // 12)
                else:
                    p[i] -= 12 * ((p[i] - high + 11) // 12)
            if end[i] <= start[i]:  # zero length (ticks as seconds: checked below)
                continue
            keep[i] = True
        idx = np.flatnonzero(keep)
        k = len(idx)
        s, e, pp, v = start[idx], end[idx], p[idx], velocity[idx]
        top = 0
        for i in range(k):
            top = max(top, e[i])
        # every tick its own second: the smallest step must stay above the rounding at the end
        seconds_top = cs[m - 1] + np.float64(top - ct[m - 1]) * spt[m - 1] if top > ct[m - 1] \
            else cs[m - 1]
        for j in range(m):
            if spt[j] <= 8.0 * 2.220446049250313e-16 * max(seconds_top, 1.0):
                return None
        # -- strike_again: by (pitch, start, longest first); one key struck twice at once is one
        # note (the longest, the loudest velocity); a key struck again ends the earlier note
        o1 = np.argsort(-e, kind="mergesort")
        key = pp[o1] * np.int64(2**32) + s[o1]
        o = o1[np.argsort(key, kind="mergesort")]
        ns = np.empty(k, np.int64)
        ne = np.empty(k, np.int64)
        npi = np.empty(k, np.int64)
        nv = np.empty(k, np.int64)
        g = 0
        for j in range(k):
            i = o[j]
            if g > 0 and npi[g - 1] == pp[i] and ns[g - 1] == s[i]:
                nv[g - 1] = max(nv[g - 1], v[i])
                continue
            ns[g], ne[g], npi[g], nv[g] = s[i], e[i], pp[i], v[i]
            g += 1
        for j in range(g - 1):
            if npi[j + 1] == npi[j] and ne[j] > ns[j + 1]:
                ne[j] = ns[j + 1]
        # -- notes_to_events: by time, offs before ons, then pitch; deltas of the seconds
        times = np.empty(2 * g, np.int64)
        ekey = np.empty(2 * g, np.int64)
        for j in range(g):
            times[j] = ns[j]
            times[g + j] = ne[j]
            ekey[j] = (ns[j] * 2 + 1) * 128 + npi[j]
            ekey[g + j] = (ne[j] * 2) * 128 + npi[j]
        eo = np.argsort(ekey, kind="mergesort")
        out_pitch = np.empty(2 * g, np.int16)
        out_velocity = np.empty(2 * g, np.int16)
        out_delta = np.empty(2 * g, np.float64)
        previous = 0.0
        for j in range(2 * g):
            i = eo[j]
            tick = times[i]
            c = np.searchsorted(ct, tick, side="right") - 1
            now = cs[c] + np.float64(tick - ct[c]) * spt[c]
            out_pitch[j] = npi[i % g] if i >= g else npi[i]
            out_velocity[j] = nv[i] if i < g else 0
            out_delta[j] = now - previous if j > 0 else now - 0.0
            previous = now
        return out_pitch, out_velocity, out_delta

    return rules


def _compile_scan():
    from numba import njit

    @njit(cache=True)
    def grow(rows, n):
        if n < rows.shape[0]:
            return rows
        bigger = np.empty((2 * rows.shape[0], rows.shape[1]), np.int64)
        bigger[:n] = rows[:n]
        return bigger

    @njit(cache=True)
    def scan(data, starts, ends, max_messages, meta_rule, collect):
        """Every message of every track once, decoded as ``smf._decode_track`` decodes (mido's
        way): ``(code, end_ticks, note-ons, tempos, programs, pedals, keys)``, each table with
        its row count; code ``OK`` (0) or why the fast path must not read the file. The note
        messages of the keys ``collect`` names ((track, channel * 128 + pitch) rows, by track)
        come in ``dangling``; ``open_keys`` names the keys where a note-on is never ended."""
        n_tracks = len(starts)
        end_ticks = np.zeros(n_tracks, np.int64)
        tempos = np.empty((4, 3), np.int64)  # tick, track, us per beat
        programs = np.empty((4, 5), np.int64)  # tick, track, order, channel, program
        pedals = np.empty((4, 5), np.int64)  # tick, track, order, channel, down
        keys = np.empty((4, 4), np.int64)  # track, channel, program, note-ons
        # the note messages of the tracks asked for: tick, track, channel, pitch, velocity,
        # the channel's program (as symusic tracks it)
        dangling = np.empty((4, 6), np.int64)
        open_keys = np.empty((4, 2), np.int64)
        n_open_keys = 0
        want = np.zeros(2048, np.bool_)
        ci = 0
        touched = np.empty(2048, np.int64)  # this track's keys of per_key, as first seen
        n_tempos = n_programs = n_pedals = n_keys = n_dangling = 0
        sounding = np.zeros(2048, np.int64)  # (channel, pitch) -> notes sounding, FIFO
        per_key = np.zeros(2048, np.int64)  # (channel, program) -> note-ons (symusic's key)
        instrument = np.zeros(16, np.int64)  # each channel's program, as symusic tracks it
        n_messages = 0
        n_ons = 0
        code = 0
        for t in range(n_tracks):
            pos, end = starts[t], ends[t]
            status, tick, order, n_touched, n_open = -1, 0, 0, 0, 0
            instrument[:] = 0
            first = ci
            while ci < len(collect) and collect[ci, 0] == t:
                want[collect[ci, 1]] = True
                ci += 1
            collecting = ci > first
            while pos < end:
                if n_messages >= max_messages:
                    code = 4
                    break
                delta = np.int64(data[pos])
                pos += 1
                if delta >= 0x80:
                    byte = delta
                    delta = delta & 0x7F
                    while byte >= 0x80 and code == 0:
                        if pos >= end:
                            code = 1
                            break
                        byte = np.int64(data[pos])
                        pos += 1
                        delta = (delta << 7) | (byte & 0x7F)
                        if delta > 0x0FFFFFFF:
                            code = 1
                    if code != 0:
                        break
                tick += delta
                if tick > 2147483647:
                    code = 5
                    break
                if pos >= end:
                    code = 1
                    break
                kind = np.int64(data[pos])
                if kind < 0x80:  # running status
                    if status < 0:
                        code = 1
                        break
                    if status >= 0xF0:  # after sysex or a system message: mido's own way
                        code = 3
                        break
                    kind = status
                else:
                    pos += 1
                    if kind != 0xFF:
                        status = kind
                n_messages += 1
                if kind < 0xF0:
                    high = kind & 0xF0
                    channel = kind & 0x0F
                    if high == 0xC0 or high == 0xD0:
                        if pos >= end or data[pos] > 127:
                            code = 1
                            break
                        a = np.int64(data[pos])
                        pos += 1
                        if high == 0xC0:
                            if n_programs >= programs.shape[0]:
                                programs = grow(programs, n_programs)
                            programs[n_programs, 0] = tick
                            programs[n_programs, 1] = t
                            programs[n_programs, 2] = order
                            programs[n_programs, 3] = channel
                            programs[n_programs, 4] = a
                            n_programs += 1
                            instrument[channel] = a
                    else:
                        if pos + 2 > end or data[pos] > 127 or data[pos + 1] > 127:
                            code = 1
                            break
                        a = np.int64(data[pos])
                        b = np.int64(data[pos + 1])
                        pos += 2
                        if collecting and (high == 0x90 or high == 0x80) \
                                and want[channel * 128 + a]:
                            if n_dangling >= dangling.shape[0]:
                                dangling = grow(dangling, n_dangling)
                            dangling[n_dangling, 0] = tick
                            dangling[n_dangling, 1] = t
                            dangling[n_dangling, 2] = channel
                            dangling[n_dangling, 3] = a
                            dangling[n_dangling, 4] = b if high == 0x90 else 0
                            dangling[n_dangling, 5] = instrument[channel]
                            n_dangling += 1
                        if high == 0x90 and b > 0:
                            n_ons += 1
                            n_open += 1
                            sounding[channel * 128 + a] += 1
                            k = channel * 128 + instrument[channel]
                            if per_key[k] == 0:
                                touched[n_touched] = k
                                n_touched += 1
                            per_key[k] += 1
                        elif high == 0x90 or high == 0x80:
                            if sounding[channel * 128 + a] > 0:
                                sounding[channel * 128 + a] -= 1
                                n_open -= 1
                        elif high == 0xB0 and a == 64:
                            if n_pedals >= pedals.shape[0]:
                                pedals = grow(pedals, n_pedals)
                            pedals[n_pedals, 0] = tick
                            pedals[n_pedals, 1] = t
                            pedals[n_pedals, 2] = order
                            pedals[n_pedals, 3] = channel
                            pedals[n_pedals, 4] = 1 if b >= 64 else 0
                            n_pedals += 1
                elif kind == 0xFF or kind == 0xF0:
                    meta = -1
                    if kind == 0xFF:
                        if pos >= end:
                            code = 1
                            break
                        meta = np.int64(data[pos])
                        pos += 1
                    length = 0
                    byte = 0x80
                    while byte >= 0x80:
                        if pos >= end:
                            code = 1
                            break
                        byte = np.int64(data[pos])
                        pos += 1
                        length = (length << 7) | (byte & 0x7F)
                        if length > 1000000:
                            code = 1
                            break
                    if code != 0:
                        break
                    if pos + length > end:
                        code = 1
                        break
                    start = pos
                    pos += length
                    if kind == 0xF0:
                        lo = start + 1 if length > 0 and data[start] == 0xF0 else start
                        hi = pos - 1 if length > 0 and data[pos - 1] == 0xF7 else pos
                        for i in range(lo, hi):
                            if data[i] > 127:
                                code = 1
                        if code != 0:
                            break
                    else:
                        rule = meta_rule[meta]
                        if rule == 0:  # unknown to mido: it gives the message no delta time
                            code = 3
                            break
                        if meta == 0x51:
                            if length < 3:
                                code = 1
                                break
                            if n_tempos >= tempos.shape[0]:
                                tempos = grow(tempos, n_tempos)
                            tempos[n_tempos, 0] = tick
                            tempos[n_tempos, 1] = t
                            tempos[n_tempos, 2] = (np.int64(data[start]) << 16) \
                                | (np.int64(data[start + 1]) << 8) | np.int64(data[start + 2])
                            n_tempos += 1
                        elif meta == 0x59:
                            if length < 2:
                                code = 1
                                break
                        elif meta == 0x2F and pos < end:  # symusic stops there; mido reads on
                            code = 3
                            break
                        elif rule == 2 and ((meta == 0x00 and length == 1)
                                            or (meta == 0x20 and length == 0)
                                            or (meta == 0x58 and length < 4) or meta == 0x54):
                            code = 3  # what mido may fail to decode: only its plain forms
                            break
                else:  # system messages and 0xF7: the readers differ in lengths and status
                    code = 3
                    break
                order += 1
            if code != 0:
                break
            end_ticks[t] = tick
            mine = np.sort(touched[:n_touched])  # symusic's order: by (channel, program)
            for i in range(n_touched):
                k = mine[i]
                if n_keys >= keys.shape[0]:
                    keys = grow(keys, n_keys)
                keys[n_keys, 0] = t
                keys[n_keys, 1] = k // 128
                keys[n_keys, 2] = k % 128
                keys[n_keys, 3] = per_key[k]
                n_keys += 1
                per_key[k] = 0
            for i in range(first, ci):
                want[collect[i, 1]] = False
            if n_open > 0:  # a note-on never ended: pairing takes its key another way
                for k in range(2048):
                    if sounding[k] > 0:
                        if n_open_keys >= open_keys.shape[0]:
                            open_keys = grow(open_keys, n_open_keys)
                        open_keys[n_open_keys, 0] = t
                        open_keys[n_open_keys, 1] = k
                        n_open_keys += 1
                        sounding[k] = 0
        return (code, end_ticks, n_ons, tempos, n_tempos, programs, n_programs, pedals,
                n_pedals, keys, n_keys, dangling, n_dangling, open_keys[:n_open_keys].copy())

    def run(data, starts, ends, max_messages, meta_rule):
        result = scan(data, starts, ends, max_messages, meta_rule, np.zeros((0, 2), np.int64))
        if result[0] == 0 and len(result[13]):  # again, keeping those keys' note messages
            result = scan(data, starts, ends, max_messages, meta_rule, result[13])
        (code, end_ticks, n_ons, tempos, n_tempos, programs, n_programs, pedals, n_pedals,
         keys, n_keys, dangling, n_dangling, _) = result
        return (int(code), end_ticks, int(n_ons), tempos[:n_tempos], programs[:n_programs],
                pedals[:n_pedals], keys[:n_keys], dangling[:n_dangling])

    return run
