"""Write note events as a standard MIDI file: explicit tempo, PPQ, channel and program.

Writing is reading backwards, in five small steps a student can follow (``events_to_midi``
just chains them):

1. ``events_to_notes``: pair each note-on with its note-off (FIFO per pitch), so every note
   gets a real note_off; orphan offs are not written;
2. ``tempo_microseconds``: the tempo as the file stores it, whole microseconds per beat;
3. ``seconds_to_ticks``: ``ticks = seconds * ppq * 1e6 / tempo_us``, rounded from *absolute*
   times so rounding never drifts;
4. ``note_ticks`` and ``note_switches``: every note's on and off as (tick, on?, pitch,
   velocity), sorted in time, offs before ons at the same tick (as the reader expects), each
   note at least one tick long, and two notes of one pitch never struck at one tick (the later
   moves a tick, so the file keeps every note);
5. ``to_delta_ticks`` and ``note_messages``: the file stores the ticks *since the previous
   message*; ``header_messages`` (name, tempo, program change) come first, end_of_track last.
"""
from __future__ import annotations

import io

import mido
import numpy as np

from .constants import DEFAULT_BPM, DEFAULT_PPQ, DRUM_CHANNEL, MICROSECONDS_PER_MINUTE
from .checks import is_int
from .errors import ParameterError
from .events import events_to_notes
from .files import write_bytes_atomic
from .params import check

SWITCH_DTYPE = np.dtype([("tick", np.int64), ("on", bool), ("pitch", np.int64),
                         ("velocity", np.int64)])


def tempo_microseconds(bpm: float) -> int:
    """Microseconds per beat, as a ``set_tempo`` message stores it (a whole number)."""
    return round(MICROSECONDS_PER_MINUTE / bpm)


def seconds_to_ticks(seconds, bpm: float = DEFAULT_BPM, ppq: int = DEFAULT_PPQ) -> np.ndarray:
    """Absolute times in seconds -> absolute ticks at ``bpm`` (as stored) and ``ppq`` ticks per
    beat: ``seconds * ppq * 1e6 / tempo_us``, rounded to the nearest tick."""
    ticks_per_s = ppq * 1e6 / tempo_microseconds(bpm)
    return np.rint(np.asarray(seconds, np.float64) * ticks_per_s).astype(np.int64)


def note_ticks(notes: np.ndarray, bpm: float = DEFAULT_BPM,
               ppq: int = DEFAULT_PPQ) -> tuple[np.ndarray, np.ndarray]:
    """Each note's start and end tick, so that every note is read back as a note of its own.

    Times round to the nearest tick, and a note lasts at least one tick. Two notes of one
    pitch must not start at one tick (read back, they would be one note): the later one moves
    a tick later (a third within those two ticks, two; and so on). A note still sounding when
    its pitch starts again ends there, as a piano and the reader end it, so its note-off never
    comes after the next note-on of its pitch (a player would silence the new note with it)."""
    start = seconds_to_ticks(notes["start_s"], bpm, ppq)
    end = seconds_to_ticks(notes["end_s"], bpm, ppq)
    for pitch in np.unique(notes["pitch"]):
        mine = np.flatnonzero(notes["pitch"] == pitch)
        mine = mine[np.argsort(notes["start_s"][mine], kind="stable")]  # ties in the notes' order
        # the k-th note starts at least k ticks after the first: start_k >= start_j + (k - j)
        k = np.arange(len(mine))
        ticks = np.maximum.accumulate(start[mine] - k) + k
        next_start = np.r_[ticks[1:], np.iinfo(np.int64).max]
        start[mine] = ticks
        end[mine] = np.minimum(np.maximum(end[mine], ticks + 1), next_start)
    return start, end


def note_switches(notes: np.ndarray, bpm: float = DEFAULT_BPM,
                  ppq: int = DEFAULT_PPQ) -> np.ndarray:
    """Each note's on and off (``SWITCH_DTYPE``) in the order they are written: by tick, offs
    before ons at the same tick, then by pitch. Ticks are ``note_ticks``: each note lasts at
    least one tick, and no two notes of one pitch start at one tick."""
    start, end = note_ticks(notes, bpm, ppq)
    switches = np.zeros(2 * len(notes), SWITCH_DTYPE)
    switches["tick"] = np.concatenate([end, start])
    switches["on"] = np.arange(2 * len(notes)) >= len(notes)
    switches["pitch"] = np.concatenate([notes["pitch"], notes["pitch"]])
    switches["velocity"] = np.where(switches["on"], np.tile(notes["velocity"], 2), 0)
    return switches[np.lexsort((switches["pitch"], switches["on"], switches["tick"]))]


def to_delta_ticks(ticks: np.ndarray) -> np.ndarray:
    """Absolute ticks -> ticks since the previous message (the first since the start)."""
    return np.diff(np.asarray(ticks, np.int64), prepend=0)


def note_messages(switches: np.ndarray, channel: int = 0) -> list:
    """``note_on``/``note_off`` messages with delta times, from ``note_switches``."""
    return [mido.Message("note_on" if on else "note_off", channel=channel, note=int(pitch),
                         velocity=int(velocity), time=int(delta))
            for on, pitch, velocity, delta in zip(switches["on"], switches["pitch"],
                                                  switches["velocity"],
                                                  to_delta_ticks(switches["tick"]))]


def header_messages(bpm: float = DEFAULT_BPM, channel: int = 0, program: int = 0,
                    name: str = "midilstm") -> list:
    """What comes before the notes, at tick 0: the track name, the tempo and (except on the
    drum channel, which has no programs) the instrument."""
    messages = [mido.MetaMessage("track_name", name=name, time=0),
                mido.MetaMessage("set_tempo", tempo=tempo_microseconds(bpm), time=0)]
    if channel != DRUM_CHANNEL:
        messages.append(mido.Message("program_change", channel=channel, program=program, time=0))
    return messages


def events_to_midi(events: np.ndarray, *, bpm: float = DEFAULT_BPM, ppq: int = DEFAULT_PPQ,
                   channel: int = 0, program: int = 0, name: str = "midilstm") -> mido.MidiFile:
    """Build a type 0 ``mido.MidiFile`` from events."""
    for name_, value, low, high in (("channel", channel, 0, 15), ("ppq", ppq, 1, 32767)):
        if not is_int(value) or not low <= value <= high:
            raise ParameterError(name_, f"must be a whole number in {low}..{high}, not {value!r}")
    bpm, program = check("bpm", bpm), check("program", program)  # the parameter table's rules
    notes, _ = events_to_notes(events)
    track = mido.MidiTrack(header_messages(bpm, channel, program, name)
                           + note_messages(note_switches(notes, bpm, ppq), channel)
                           + [mido.MetaMessage("end_of_track", time=0)])
    return mido.MidiFile(type=0, ticks_per_beat=ppq, tracks=[track])


def write_midi(events: np.ndarray, path, **options):
    """Write events to ``path`` atomically; options as for ``events_to_midi``. Returns the path."""
    buffer = io.BytesIO()
    events_to_midi(events, **options).save(file=buffer)
    return write_bytes_atomic(path, buffer.getvalue())
