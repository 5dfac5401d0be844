"""The fast reader's rules (``midilstm.fast_reader``): ``parse._read_midi``'s steps after pairing.

``apply_rules`` turns symusic's notes in ticks (``fast_tracks.symusic_notes``) into the events
``read_midi`` gives. For the common case (ticks per beat, type 0 or 1, no pedal, no selection
by program) one numba-compiled pass (``_compile_rules``) applies ``Selection``, the pitch policy,
zero-length notes, ``strike_again`` and ``notes_to_events`` on ticks, with seconds through the
tempo map by ``tempo``'s own arithmetic; otherwise the steps run from their homes
(``pairing._hold_by_pedal``, ``pairing._to_note_table`` with ``tempo.file_timing``,
``parse._select``, ``parse._apply_pitch_policy``, ``strike_again``, ``notes_to_events``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import DRUM_CHANNEL
from .events import EVENT_DTYPE, notes_to_events, strike_again
from .fast_tracks import as_words, columns_of
from .pairing import _hold_by_pedal, _to_note_table
from .parse import Selection, _apply_pitch_policy, _select
from .tempo import file_timing


def apply_rules(path: Path, table: tuple, midi_type: int, tpb: int, n_tracks: int, scanned,
                selection: Selection):
    """The events ``parse._read_midi``'s rules make of ``table`` (``(notes, track, channel)``
    from ``fast_tracks.symusic_notes``), or ``None`` if no note is left. ``scanned`` is what
    ``fast_scan`` found: ``(tempos, programs, pedals, end_ticks)``."""
    tempos, programs, pedals, end_ticks = scanned
    if tpb > 0 and midi_type != 2 and not selection.sustain_pedal and selection.programs is None:
        events = _fused_rules(table, tempos, tpb, n_tracks, selection)
        if events is not None:
            return events if len(events) else None
    columns = columns_of(*table)
    per_track = midi_type == 2
    timing_midi = _Midi(midi_type, tpb, [None] * n_tracks)
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
        return None
    notes, _ = _apply_pitch_policy(notes, selection, dropped)
    notes = notes[notes["end_s"] > notes["start_s"]]
    if len(notes) == 0:
        return None
    notes, _ = strike_again(notes)
    return notes_to_events(notes)


def _fused_rules(table, tempos, tpb: int, n_tracks: int, selection: Selection):
    """The rules after pairing in one compiled pass, for the common case (ticks per beat, type
    0 or 1, no pedal, no selection by program): the events, empty if no note is left, or
    ``None`` if a tempo is 0 or the tempo map could give two ticks one second (then the numpy
    steps of ``apply_rules`` decide). Every step is the one of ``parse._read_midi``, on ticks
    instead of seconds: a tempo map that gives every tick its own second orders, compares and merges
    notes by ticks exactly as by seconds; the seconds are ``tempo``'s arithmetic, operation for
    operation (``_tempo_map``)."""
    kernel = _load_rules()
    if kernel is None:
        return None
    channels, tracks, drums = _selection_masks(selection, n_tracks)
    notes, track, channel = table
    # the notes as int32 words, three a note: numba's cache never matches a structured array
    # argument (it would compile the kernel again in every process)
    return kernel(as_words(notes), track, channel, tempos, tpb, channels, tracks, drums,
                  selection.pitch_low, selection.pitch_high, selection.out_of_range == "fold")


@functools.lru_cache(maxsize=256)
def _selection_masks(selection: Selection, n_tracks: int):
    """The channels and tracks ``selection`` keeps, as masks, and whether it keeps drums: the
    same for every file of a collection, so made once (read-only: they are shared)."""
    channels = np.zeros(16, np.bool_)
    channels[list(selection.channels) if selection.channels is not None else slice(None)] = True
    tracks = np.zeros(n_tracks, np.bool_)
    if selection.tracks is None:
        tracks[:] = True
    else:
        tracks[[t for t in selection.tracks if t < n_tracks]] = True
    channels.flags.writeable = tracks.flags.writeable = False
    drums = selection.include_drums or (selection.channels is not None
                                        and DRUM_CHANNEL in selection.channels)
    return channels, tracks, bool(drums)


@dataclass
class _Midi:  # what tempo.file_timing reads of a file
    type: int
    ticks_per_beat: int
    tracks: list


@dataclass
class _Scan:  # what tempo.file_timing reads of a MessageScan
    tempos: list
    end_ticks: np.ndarray


_rules_function = None
# Sorting: numba's quicksort is 2-3x faster than its mergesort, but it has no fallback from a
# bad pivot, so a crafted file could make it quadratic; above this many notes, mergesort. Every
# key sorted here is unique, or its ties do not change the result, so both give the same events.
QUICKSORT_MAX = 4096


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

    # The helpers (``_nb_*``) are module globals, not closure cells of ``rules``: numba's
    # cache keys a function by the pickle of its closure's cells, which differs in every
    # process, so a closure would be compiled again in every process (4-17 s on this VM).
    global _nb_order_of, _nb_tempo_map, _nb_select, _nb_own_seconds, _nb_strike, _nb_to_events

    @njit(cache=True)
    def _nb_order_of(key):
        if len(key) <= QUICKSORT_MAX:
            return np.argsort(key)
        return np.argsort(key, kind="mergesort")

    @njit(cache=True)
    def _nb_tempo_map(tempos, tpb):
        """``tempo._nb_tempo_map``'s segments ``(first tick, seconds per tick, seconds at the
        first tick)``: stable by tick, the last change at one tick wins, 500,000 us per beat
        from tick 0 unless a change is there."""
        order = np.argsort(tempos[:, 0], kind="mergesort")
        n_t = len(order)
        ct = np.empty(n_t + 1, np.int64)
        cu = np.empty(n_t + 1, np.int64)
        m = 0
        for j in range(n_t):
            i = order[j]
            if j + 1 < n_t and tempos[order[j + 1], 0] == tempos[i, 0]:
                continue
            ct[m] = tempos[i, 0]
            cu[m] = tempos[i, 2]
            m += 1
        if m == 0 or ct[0] != 0:
            for j in range(m, 0, -1):
                ct[j] = ct[j - 1]
                cu[j] = cu[j - 1]
            ct[0] = 0
            cu[0] = 500000
            m += 1
        spt = np.empty(m, np.float64)
        for j in range(m):
            spt[j] = np.float64(cu[j]) / 1e6 / tpb
        cs = np.zeros(m, np.float64)
        acc = 0.0
        for j in range(1, m):
            acc += np.float64(ct[j] - ct[j - 1]) * spt[j - 1]
            cs[j] = acc
        return ct[:m], spt, cs

    @njit(cache=True)
    def _nb_select(words, track, channel, channels, tracks, drums, low, high, fold):
        """``parse._nb_select``, the pitch policy (``_apply_pitch_policy``) and zero-length notes
        dropped: the kept notes' (start, end, pitch, velocity), as int64. ``words``: each note's
        ``NOTE_LAYOUT`` as 3 little-endian int32 (time, duration, then pitch and velocity in
        the low two bytes)."""
        n = len(words)
        s = np.empty(n, np.int64)
        e = np.empty(n, np.int64)
        p = np.empty(n, np.int64)
        v = np.empty(n, np.int64)
        k = 0
        for i in range(n):
            c = channel[i]
            if (c == 9 and not drums) or not channels[c] or not tracks[track[i]]:
                continue
            q = np.int64(words[i, 2] & 0xFF)
            if q < low or q > high:
                if not fold:
                    continue
                if q < low:
                    q += 12 * ((low - q + 11) // 12)
                else:
                    q -= 12 * ((q - high + 11) // 12)
            if words[i, 1] <= 0:  # zero length (ticks as seconds: checked by own_seconds)
                continue
            s[k] = words[i, 0]
            e[k] = s[k] + words[i, 1]
            p[k], v[k] = q, (words[i, 2] >> 8) & 0xFF
            k += 1
        return s[:k], e[:k], p[:k], v[:k]

    @njit(cache=True)
    def _nb_own_seconds(ct, spt, cs, e):
        """Whether every tick up to the last note's end has its own second: the smallest step
        must stay above the rounding at the end."""
        m = len(ct)
        top = 0
        for i in range(len(e)):
            top = max(top, e[i])
        seconds_top = cs[m - 1] + np.float64(top - ct[m - 1]) * spt[m - 1] \
            if top > ct[m - 1] else cs[m - 1]
        for j in range(m):
            if spt[j] <= 8.0 * 2.220446049250313e-16 * max(seconds_top, 1.0):
                return False
        return True

    @njit(cache=True)
    def _nb_strike(s, e, p, v):
        """``strike_again`` in one pass by (start, pitch): one key struck twice at once is one
        note (the longest, the loudest velocity); a key struck again ends the earlier note. By
        start, every note of a key at one start comes before its next start, so each key's
        latest note is complete when the next one comes. The notes come in (start, pitch)
        order, as ``strike_again`` gives them."""
        k = len(s)
        o = _nb_order_of(s * 128 + p)  # ties (one key, one start) merge: their order is no matter
        ns = np.empty(k, np.int64)
        ne = np.empty(k, np.int64)
        npi = np.empty(k, np.int64)
        nv = np.empty(k, np.int64)
        latest = np.full(128, -1, np.int64)  # each pitch's latest note
        g = 0
        for j in range(k):
            i = o[j]
            last = latest[p[i]]
            if last >= 0 and ns[last] == s[i]:
                ne[last] = max(ne[last], e[i])
                nv[last] = max(nv[last], v[i])
                continue
            if last >= 0 and ne[last] > s[i]:
                ne[last] = s[i]
            ns[g], ne[g], npi[g], nv[g] = s[i], e[i], p[i], v[i]
            latest[p[i]] = g
            g += 1
        return ns[:g], ne[:g], npi[:g], nv[:g]

    @njit(cache=True)
    def _nb_to_events(ns, ne, npi, nv, ct, spt, cs):
        """``notes_to_events``: by time, offs before ons, then pitch; the note-ons are in that
        order already, the note-offs are sorted (unique: one key's notes never end together
        once struck again), and the two are merged. The deltas are of the seconds, each tick
        through the tempo map's segment that holds it."""
        g = len(ns)
        offs = _nb_order_of(ne * 128 + npi)
        events = np.empty(2 * g, EVENT_DTYPE)
        a = b = c = 0  # the next note-on, the next note-off, the tempo segment
        previous = 0.0
        for j in range(2 * g):
            if b < g and (a == g or ne[offs[b]] <= ns[a]):
                tick, pitch, velocity = ne[offs[b]], npi[offs[b]], 0
                b += 1
            else:
                tick, pitch, velocity = ns[a], npi[a], nv[a]
                a += 1
            while c + 1 < len(ct) and ct[c + 1] <= tick:
                c += 1
            now = cs[c] + np.float64(tick - ct[c]) * spt[c]
            events[j]["pitch"] = pitch
            events[j]["velocity"] = velocity
            events[j]["delta_s"] = now - previous
            previous = now
        return events

    @njit(cache=True)
    def rules(words, track, channel, tempos, tpb, channels, tracks, drums, low, high, fold):
        for j in range(len(tempos)):
            if tempos[j, 2] == 0:  # a tempo of 0: the numpy steps (tempo's warnings) decide
                return None
        ct, spt, cs = _nb_tempo_map(tempos, tpb)
        s, e, p, v = _nb_select(words, track, channel, channels, tracks, drums, low, high, fold)
        if not _nb_own_seconds(ct, spt, cs, e):
            return None
        ns, ne, npi, nv = _nb_strike(s, e, p, v)
        return _nb_to_events(ns, ne, npi, nv, ct, spt, cs)

    return rules
