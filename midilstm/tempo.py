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


def division_text(tpb: int) -> str:
    """The time division in words, as the report gives it."""
    if tpb < 0:
        return f"SMPTE {-(tpb >> 8)} fps x {tpb & 0xFF} ticks per frame"
    return f"{tpb} ticks per beat"

