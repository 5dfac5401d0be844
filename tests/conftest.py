"""Shared fixtures for the foundation tests: tiny real MIDI files written with mido.

Tests write the music out message by message (delta times in ticks, as in the file), so the
expected events can be worked out by hand from the musical setup: at 120 bpm a beat lasts 0.5 s,
so with 480 ticks per beat one tick is 1/960 s.

``build_midi`` is a fixture (``build_midi(tmp_path, tracks=[...])``); the message shorthands
``on``/``off``/``tempo``/``program`` are plain functions, imported with ``from conftest import``.
"""
from __future__ import annotations

import struct
from pathlib import Path

import mido
import pytest


def on(note, velocity=64, t=0, channel=0):
    """note_on after ``t`` ticks."""
    return mido.Message("note_on", note=note, velocity=velocity, time=t, channel=channel)


def off(note, t=0, channel=0, velocity=0, explicit=True):
    """A note ending after ``t`` ticks: an explicit ``note_off``, or ``note_on`` velocity 0."""
    if explicit:
        return mido.Message("note_off", note=note, velocity=velocity, time=t, channel=channel)
    return mido.Message("note_on", note=note, velocity=0, time=t, channel=channel)


def tempo(bpm, t=0):
    """set_tempo after ``t`` ticks (``bpm`` must give whole microseconds per beat here)."""
    us = 60_000_000 / bpm
    assert us == int(us), "pick a bpm with whole microseconds per beat"
    return mido.MetaMessage("set_tempo", tempo=int(us), time=t)


def program(number, t=0, channel=0):
    return mido.Message("program_change", program=number, time=t, channel=channel)


def write_midi_file(path, tracks, type=1, ticks_per_beat=480) -> Path:
    """Write ``tracks`` (lists of mido messages, delta times in ticks) as a MIDI file."""
    midi = mido.MidiFile(type=type, ticks_per_beat=ticks_per_beat)
    for messages in tracks:
        midi.tracks.append(mido.MidiTrack(messages))
    midi.save(str(path))
    return Path(path)


def header_only(path, ntrks=0, type=1, ticks_per_beat=480) -> Path:
    """A bare MThd chunk claiming ``ntrks`` tracks and holding none."""
    Path(path).write_bytes(b"MThd" + struct.pack(">IHHH", 6, type, ntrks, ticks_per_beat))
    return Path(path)


@pytest.fixture
def build_midi():
    """``build_midi(tmp_path, tracks=[[...], ...], type=1, ticks_per_beat=480, name=...)``."""
    counter = iter(range(10**6))

    def build(tmp_path, tracks, type=1, ticks_per_beat=480, name=None):
        name = name or f"test{next(counter)}.mid"
        return write_midi_file(Path(tmp_path) / name, tracks, type=type,
                               ticks_per_beat=ticks_per_beat)

    return build


@pytest.fixture
def simple_file(tmp_path, build_midi):
    """Two quarter notes at 120 bpm, 480 ppq: C4 at 0.0-0.5 s, E4 at 0.5-1.0 s."""
    return build_midi(tmp_path, tracks=[[tempo(120), on(60, 80), off(60, t=480),
                                         on(64, 90), off(64, t=480)]], type=0)
