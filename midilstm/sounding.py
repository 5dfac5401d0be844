"""Which notes are sounding: the piano keys held down after each event, as the network sees them.

In the lesson's stream a note is two events, its note-on and, later, its note-off. To end its
notes, a network that reads only the events must work out from its memory which keys are still
down. The LSTM does that well for the few notes the music holds at once, but over a long
improvisation one missed note-off is never noticed: notes pile up into a wash of held keys and
the network, now far from any state it was trained in, no longer ends them (``05_evaluate``
measures it). So the network is also *told* which pitches sound, as one more input: a 0/1
vector over the pitches (the codec's 89 pitch codes) after each event. It is a function of the
events before it, so it adds no information a perfect memory would not have, and nothing the
validation could leak.

The same holds for the key. With transposed training sequences the network must tell the key
from the notes it has read, and over a long improvisation a few stray notes lead it to another:
the music wanders through keys. So it is also told the **key profile**: how often each pitch
class was struck lately (each note-on counts 1, and every earlier count is multiplied by
``KEY_DECAY``: the last few dozen notes weigh most), as shares that sum to 1.

Knowing which notes sound is not knowing which to end. Over a long improvisation a network told
only *that* a note sounds ends notes that have sounded long less often than the music does, and
the longest notes grow far longer than the music's. So it is also told each sounding note's
**age**: how many events ago it was struck (``note_ages``), as ``age / (age + AGE_HALF_EVENTS)``
(``age_share``: 0 when struck, 0.5 after ``AGE_HALF_EVENTS`` events, towards 1 for the oldest).
An age in events, not seconds, needs nothing from the codec; the network reads the times too.

``sounding_flags``, ``key_profiles`` and ``note_ages`` are the rules, used by the model on every
sequence it reads; a sequence that starts inside a piece also needs what held before its first
event, which ``held_before`` gives for every position of a piece. Generation keeps the same
state as it samples (``track_notes``, the same rules as loops compiled by numba, one event per
stream, with the clock of each stream); a test checks they agree.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from numba import njit

KEY_DECAY = 0.97  # per note-on: a note struck 30 notes ago weighs 0.4, 100 ago 0.05
N_PITCH_CLASSES = 12
AGE_HALF_EVENTS = 6.0  # an age that reads 0.5 (default piece: sounding notes' median age 3, p95 23)


class Held(NamedTuple):
    """What holds before (or after) an event: ``sounding`` (..., n_pitches) bools, ``key``
    (..., 12) decayed note-on counts per pitch class (the class of code ``c`` is ``c % 12``;
    which letter it names does not matter to the network) and ``age`` (..., n_pitches) float32:
    how many events each sounding pitch has sounded (0 for a silent one)."""

    sounding: object
    key: object
    age: object = None


def sounding_flags(codes: torch.Tensor, n_pitches: int,
                   before: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, time, 3) codes -> (batch, time, n_pitches) bools: the pitches (codes) sounding
    after each event. A note-on (velocity class > 0) makes its pitch sound, a note-off silences
    it; ``before`` (batch, n_pitches) holds those sounding before the first event (None: none).
    One step per event, for all sequences at once (faster here than a vectorised scan)."""
    batch, steps, _ = codes.shape
    sounding = torch.zeros(batch, n_pitches, dtype=torch.bool, device=codes.device)
    if before is not None:
        sounding |= before.bool()
    out = torch.empty(batch, steps, n_pitches, dtype=torch.bool, device=codes.device)
    rows = torch.arange(batch, device=codes.device)
    pitch, on = codes[..., 0], codes[..., 1] > 0
    for t in range(steps):
        sounding[rows, pitch[:, t]] = on[:, t]
        out[:, t] = sounding
    return out


def key_profiles(codes: torch.Tensor, before: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, time, 3) codes -> (batch, time, 12) float32: after each event, the decayed
    count of note-ons per pitch class (``KEY_DECAY``); ``before`` (batch, 12) the counts before
    the first event (None: zeros)."""
    batch, steps, _ = codes.shape
    counts = torch.zeros(batch, N_PITCH_CLASSES, device=codes.device)
    if before is not None:
        counts += before
    out = torch.empty(batch, steps, N_PITCH_CLASSES, device=codes.device)
    struck = torch.nn.functional.one_hot(codes[..., 0] % N_PITCH_CLASSES, N_PITCH_CLASSES)
    on = (codes[..., 1] > 0)[..., None]
    for t in range(steps):
        counts = torch.where(on[:, t], counts * KEY_DECAY + struck[:, t], counts)
        out[:, t] = counts
    return out


def note_ages(flags: torch.Tensor, before: Held | None = None) -> torch.Tensor:
    """(batch, time, n_pitches) sounding flags (``sounding_flags``) -> float32 ages: after each
    event, how many events ago each sounding pitch was struck (0 for the event that strikes it,
    and for a silent pitch). ``before``: the flags and ages before the first event (None or None
    fields: nothing sounding). A restruck sounding pitch keeps its age, as in ``track_notes``."""
    batch, steps, n_pitches = flags.shape
    was = torch.zeros(batch, n_pitches, dtype=torch.bool, device=flags.device)
    age = torch.zeros(batch, n_pitches, device=flags.device)
    if before is not None and before.sounding is not None:
        was = before.sounding.bool()
        if before.age is not None:
            age = before.age.float() * was
    out = torch.empty(batch, steps, n_pitches, device=flags.device)
    for t in range(steps):
        now = flags[:, t]
        age = torch.where(now & was, age + 1, torch.zeros_like(age))
        out[:, t], was = age, now
    return out


def age_share(age):
    """Ages in events -> the network's input: 0 when struck, rising towards 1 (torch or numpy)."""
    return age / (age + AGE_HALF_EVENTS)


def key_shares(counts):
    """Decayed counts -> shares of the pitch classes that sum to 1 (all 0 before any note)."""
    total = counts.sum(-1, keepdims=True)
    return counts / (total + (total == 0))


@torch.no_grad()
def held_before(codes: np.ndarray, n_pitches: int) -> Held:
    """For one piece's (n, 3) codes, what holds just before each event: ``Held`` of (n,
    n_pitches) bools, (n, 12) float32 counts and (n, n_pitches) float32 ages, row 0 empty. Row
    ``s`` is the ``before`` of a sequence that starts at event ``s``."""
    x = torch.as_tensor(np.asarray(codes, np.int64))[None]
    flags = sounding_flags(x, n_pitches)
    sounding = np.zeros((len(codes), n_pitches), bool)
    sounding[1:] = flags[0, :-1].numpy()
    key = np.zeros((len(codes), N_PITCH_CLASSES), np.float32)
    key[1:] = key_profiles(x)[0, :-1].numpy()
    age = np.zeros((len(codes), n_pitches), np.float32)
    age[1:] = note_ages(flags)[0, :-1].numpy()
    return Held(sounding, key, age)


@njit(cache=True)
def track_notes(codes, time_centers, max_note_s, now_s, sounding_since, key, key_decay, end_held,
                ages):
    """Advance each stream's clock ``now_s``, its sounding notes (``sounding_since`` (streams,
    pitches): the onset of each sounding pitch, NaN if silent; ``ages`` (streams, pitches): the
    events each has sounded, 0 if silent) and its key counts (``key`` (streams, 12)) by the
    event in ``codes`` (streams, 3). With ``end_held``, first replace the event by a note-off
    (at once) if a note has been held longer than ``max_note_s``. Refuses (``ValueError``)
    arrays that disagree, rather than index out of bounds."""
    streams, n_pitch = sounding_since.shape
    if not (codes.shape[0] == streams and codes.shape[1] == 3 and now_s.shape[0] == streams
            and key.shape[0] == streams and key.shape[1] >= 1 and ages.shape == (streams, n_pitch)):
        raise ValueError("track_notes: the arrays' shapes disagree")
    for b in range(streams):
        if not (0 <= codes[b, 0] < n_pitch and 0 <= codes[b, 2] < time_centers.shape[0]):
            raise ValueError("track_notes: a code is outside its head's classes")
    for b in range(streams):
        if end_held:
            for pitch in range(n_pitch):
                if now_s[b] - sounding_since[b, pitch] > max_note_s:  # NaN compares False
                    codes[b, 0], codes[b, 1], codes[b, 2] = pitch, 0, 0
                    break
        now_s[b] += time_centers[codes[b, 2]]
        for p in range(n_pitch):  # one event older (``note_ages``)
            if not np.isnan(sounding_since[b, p]):
                ages[b, p] += 1.0
        pitch = codes[b, 0]
        if codes[b, 1] == 0:
            sounding_since[b, pitch] = np.nan
            ages[b, pitch] = 0.0
        else:
            if np.isnan(sounding_since[b, pitch]):
                sounding_since[b, pitch] = now_s[b]
                ages[b, pitch] = 0.0
            key[b] *= key_decay
            key[b, pitch % key.shape[1]] += 1.0
