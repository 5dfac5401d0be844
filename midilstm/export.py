"""Write note events as a standard MIDI file: explicit tempo, PPQ, channel and program.

Seconds become ticks through the tempo (``ticks = seconds * ppq * bpm / 60``), rounded from
absolute times so rounding never drifts. Notes are paired first (FIFO per pitch), so every
note gets a real note_off and lasts at least one tick; orphan offs are not written.
"""
from __future__ import annotations

import io

import mido
import numpy as np

from .constants import DEFAULT_BPM, DEFAULT_PPQ, DRUM_CHANNEL, MICROSECONDS_PER_MINUTE
from .events import events_to_notes
from .files import write_bytes_atomic


def events_to_midi(events: np.ndarray, *, bpm: float = DEFAULT_BPM, ppq: int = DEFAULT_PPQ,
                   channel: int = 0, program: int = 0, name: str = "midilstm") -> mido.MidiFile:
    """Build a type 0 ``mido.MidiFile`` from events."""
    if not 0 <= channel <= 15 or not 0 <= program <= 127:
        raise ValueError(f"channel must be 0..15 and program 0..127, got {channel}, {program}")
    notes, _ = events_to_notes(events)
    tempo_us = round(MICROSECONDS_PER_MINUTE / bpm)  # the file stores whole microseconds
    ticks_per_s = ppq * 1e6 / tempo_us
    start = np.rint(notes["start_s"] * ticks_per_s).astype(np.int64)
    end = np.maximum(np.rint(notes["end_s"] * ticks_per_s).astype(np.int64), start + 1)
    # Offs (kind 0) before ons (kind 1) at the same tick, as the reader expects.
    ticks = np.concatenate([end, start])
    kind = np.concatenate([np.zeros(len(notes), int), np.ones(len(notes), int)])
    pitch = np.concatenate([notes["pitch"], notes["pitch"]])
    velocity = np.concatenate([np.zeros(len(notes), int), notes["velocity"]])
    order = np.lexsort((pitch, kind, ticks))

    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=name, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=tempo_us, time=0))
    if channel != DRUM_CHANNEL:
        track.append(mido.Message("program_change", channel=channel, program=program, time=0))
    now = 0
    for i in order.tolist():
        msg_type = "note_on" if kind[i] else "note_off"
        track.append(mido.Message(msg_type, channel=channel, note=int(pitch[i]),
                                  velocity=int(velocity[i]), time=int(ticks[i] - now)))
        now = int(ticks[i])
    track.append(mido.MetaMessage("end_of_track", time=0))
    return mido.MidiFile(type=0, ticks_per_beat=ppq, tracks=[track])


def write_midi(events: np.ndarray, path, **options):
    """Write events to ``path`` atomically; options as for ``events_to_midi``. Returns the path."""
    buffer = io.BytesIO()
    events_to_midi(events, **options).save(file=buffer)
    return write_bytes_atomic(path, buffer.getvalue())
