"""The fast reader's rules (``midilstm.fast_reader``): ``parse._read_midi``'s steps after pairing.

``apply_rules`` turns the note table in ticks (``fast_tracks``) into the events ``read_midi``
gives. For the common case (ticks per beat, type 0 or 1, no pedal, no selection by program)
one numba-compiled pass (``_compile_rules``) applies ``Selection``, the pitch policy,
zero-length notes, ``strike_again`` and ``notes_to_events`` on ticks, with seconds through the
tempo map by ``tempo``'s own arithmetic; otherwise the steps run from their homes
(``pairing._hold_by_pedal``, ``pairing._to_note_table`` with ``tempo.file_timing``,
``parse._select``, ``parse._apply_pitch_policy``, ``strike_again``, ``notes_to_events``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import DRUM_CHANNEL
from .events import EVENT_DTYPE, notes_to_events, strike_again
from .pairing import _hold_by_pedal, _to_note_table
from .parse import Selection, _apply_pitch_policy, _select
from .tempo import file_timing


def apply_rules(path: Path, columns: dict, midi_type: int, tpb: int, n_tracks: int, scanned,
                selection: Selection):
    """The events ``parse._read_midi``'s rules make of ``columns`` (``fast_tracks``), or
    ``None`` if no note is left. ``scanned`` is what ``fast_scan`` found: ``(tempos, programs,
    pedals, end_ticks)``."""
    tempos, programs, pedals, end_ticks = scanned
    if (tpb > 0 and midi_type != 2 and not selection.sustain_pedal
            and selection.programs is None and not (tempos[:, 2] == 0).any()):
        events = _fused_rules(columns, tempos, tpb, n_tracks, selection)
        if events is not None:
            return events if len(events) else None
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


def _fused_rules(columns, tempos, tpb: int, n_tracks: int, selection: Selection):
    """The rules after pairing in one compiled pass, for the common case (ticks per beat, type
    0 or 1, no pedal, no selection by program): the events, empty if no note is left, or
    ``None`` if the tempo map could give two ticks one second (then the numpy steps of
    ``apply_rules`` decide). Every step is the one of ``parse._read_midi``, on ticks instead
    of seconds: a tempo map that gives every tick its own second orders, compares and merges
    notes by ticks exactly as by seconds; the seconds are ``tempo``'s arithmetic, operation for
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
