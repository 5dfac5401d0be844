"""Time: a file's ticks to seconds through its whole tempo map.

Every ``set_tempo`` counts, in any track (the standard's tempo is 120 bpm until the first).
SMPTE divisions are read as frame subdivisions. Any legal tempo is read (outside
``MIN_BPM``..``MAX_BPM`` with a warning); a tempo of 0 is refused. Type 2 files (independent
sequences) are read track after track, each with its own tempo map.
"""
from __future__ import annotations

import numpy as np

from .constants import MAX_BPM, MICROSECONDS_PER_MINUTE, MIN_BPM
from .errors import MidiInputError
from .smf import MessageScan

DEFAULT_TEMPO_US = 500_000  # 120 bpm: the MIDI standard's tempo until the first set_tempo


def file_timing(path, midi, scan: MessageScan):
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
        per_track = {}
        for tt in scan.tempos:
            per_track.setdefault(tt[1], []).append(tt)
        default = _tempo_map([], tpb)  # the tracks without a tempo of their own share one map
        maps = [_tempo_map(per_track[t], tpb) if t in per_track else default
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
    if not tempos:
        return []
    us = np.fromiter((tempo for _, _, tempo in tempos), np.float64, len(tempos))
    zero = np.flatnonzero(us == 0)
    if len(zero):
        tick, track, _ = tempos[zero[0]]
        raise MidiInputError(path, f"illegal tempo 0 us per beat at tick {tick} of track "
                                   f"{track}")
    bpm = MICROSECONDS_PER_MINUTE / us
    odd = np.flatnonzero((bpm < MIN_BPM) | (bpm > MAX_BPM))
    warnings = [f"extreme tempo {tempos[i][2]} us per beat ({bpm[i]:.4g} bpm) at tick "
                f"{tempos[i][0]} of track {tempos[i][1]}; read as written"
                for i in odd[:3].tolist()]
    if len(odd) > 3:
        warnings.append(f"... {len(odd) - 3} more extreme tempos")
    return warnings


def _tempo_map(tempos, tpb):
    """Piecewise-linear ticks -> seconds from ``tempos`` [(tick, track, us per beat)]."""
    ticks = np.fromiter((tt[0] for tt in tempos), np.int64, len(tempos))
    values = np.fromiter((tt[2] for tt in tempos), np.int64, len(tempos))
    order = np.argsort(ticks, kind="stable")  # stable: at equal ticks the later one wins
    ticks, values = ticks[order], values[order]
    last = np.r_[ticks[1:] != ticks[:-1], True] if len(ticks) else np.zeros(0, bool)
    ticks, values = ticks[last], values[last]
    if len(ticks) and ticks[0] == 0:
        change_ticks, tempos_us = ticks, values
    else:
        change_ticks = np.r_[np.int64(0), ticks]
        tempos_us = np.r_[np.int64(DEFAULT_TEMPO_US), values]
    seconds_per_tick = tempos_us.astype(np.float64) / 1e6 / tpb
    change_seconds = np.concatenate([[0.0],
                                     np.cumsum(np.diff(change_ticks) * seconds_per_tick[:-1])])

    def to_seconds(ticks):
        ticks = np.asarray(ticks, np.int64)
        i = np.searchsorted(change_ticks, ticks, side="right") - 1
        return change_seconds[i] + (ticks - change_ticks[i]) * seconds_per_tick[i]

    if not tempos:  # the standard's 120 bpm throughout: no change to list
        return to_seconds, []
    bpm_of = {t: round(MICROSECONDS_PER_MINUTE / t, 3) for t in np.unique(tempos_us).tolist()}
    changes = [{"time_s": round(s, 6), "bpm": bpm_of[t]}
               for s, t in zip(change_seconds.tolist(), tempos_us.tolist())]
    return to_seconds, changes


def division_text(tpb: int) -> str:
    """The time division in words, as the report gives it."""
    if tpb < 0:
        return f"SMPTE {-(tpb >> 8)} fps x {tpb & 0xFF} ticks per frame"
    return f"{tpb} ticks per beat"

