"""Sampling: the controls (``SamplingConfig``) and the recipe of one step, written plainly.

Controls: temperature (overall or per head), top-k, top-p, and note hygiene: a note-off is only
sampled for a sounding pitch, a sounding pitch is ended before it is struck again. Two limits
keep the texture within what the training music does, with numbers learned from it (the codec
holds them): a note held longer than its longest note (``max_note_s``) is ended, and no note
starts while as many sound as it ever held at once (``max_polyphony``). Each step samples the
velocity head first (note on or off?), then the pitch among the pitches that allows, then the
time.

``reference_step`` is that recipe in numpy, one stream, one head at a time: the one to read
(notebook 04 teaches with it). ``sample_step``, below it, runs the same recipe compiled, for
every stream at once; a test checks that both give exactly the same distributions. Both take
the controls as ``Knobs``, where "off" is a number that changes nothing; ``SamplingConfig.knobs``
is the one place that turns the config's None and 0 into them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import numpy as np
from numba import njit

from .codec import HEADS, EventCodec
from .constants import FALLBACK_MAX_NOTE_S
from .params import check_fields


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0  # < 1: safer and more repetitive, > 1: more adventurous
    temperature_pitch: float | None = None  # per-head overrides of ``temperature``
    temperature_velocity: float | None = None
    temperature_time: float | None = None
    top_k: int | None = None  # keep only the k most likely classes of each head
    top_p: float | None = None  # keep the smallest set of classes with this much probability
    # Texture limits: None learns them from the training music (the codec's longest note and
    # most notes at once), 0 switches them off, a number sets them.
    max_note_s: float | None = None  # end notes held longer than this many seconds
    max_polyphony: int | None = None  # start no note while this many sound

    def __post_init__(self):  # the parameter table's rules; a per-head temperature as the overall
        check_fields(self, {f"temperature_{head}": "temperature" for head in HEADS})

    def with_limits(self, codec: EventCodec) -> "SamplingConfig":
        """This config with its learned limits (None) taken from the codec's training music.
        A codec saved before it measured them keeps the old rule: notes end after 5 s, no
        polyphony limit."""
        learned = {"max_note_s": FALLBACK_MAX_NOTE_S if codec.longest_note_s is None
                   else codec.longest_note_s, "max_polyphony": codec.max_polyphony or 0}
        return replace(self, **{name: getattr(self, name) if getattr(self, name) is not None
                                else value for name, value in learned.items()})

    def temperature_of(self, head: str) -> float:
        value = getattr(self, f"temperature_{head}")
        return self.temperature if value is None else value

    def to_dict(self) -> dict:
        return asdict(self)

    def knobs(self) -> "Knobs":
        """The controls as the sampling step takes them; the limits must be numbers
        (``with_limits``)."""
        if self.max_note_s is None or self.max_polyphony is None:
            raise ValueError("the sampling step needs numbers for the limits: "
                             "pass sampling.with_limits(codec)")
        return Knobs(temperature=np.array([max(self.temperature_of(h), MIN_TEMPERATURE)
                                           for h in HEADS]),
                     top_k=self.top_k or 0, top_p=1.0 if self.top_p is None else float(self.top_p),
                     max_polyphony=int(self.max_polyphony),
                     max_note_s=float(self.max_note_s) or np.inf)


MIN_TEMPERATURE = 1e-6  # lower, the scores divided by it would overflow to inf


class Knobs(NamedTuple):
    """The sampling controls as numbers, where "off" changes nothing."""

    temperature: np.ndarray  # per head (pitch, velocity, time)
    top_k: int  # 0: every class
    top_p: float  # 1.0: every class
    max_polyphony: int  # 0: no limit
    max_note_s: float  # inf: no note is too long


# --- the sampling recipe, written plainly (compiled, it is sample_step below) -----------------
def allowed_velocities(sounding_since: np.ndarray, n_velocities: int,
                       max_polyphony: int = 0) -> np.ndarray:
    """A note-off (velocity class 0) only while some note sounds; a note-on (any other class)
    only while fewer than ``max_polyphony`` sound (0: no limit)."""
    sounding = int((~np.isnan(sounding_since)).sum())
    allowed = np.full(n_velocities, not 0 < max_polyphony <= sounding)
    allowed[0] = sounding > 0
    return allowed


def allowed_pitches(sounding_since: np.ndarray, velocity: int) -> np.ndarray:
    """An off ends a sounding pitch, an on starts a silent one (any pitch if none is silent)."""
    sounding = ~np.isnan(sounding_since)
    allowed = sounding if velocity == 0 else ~sounding
    return allowed if allowed.any() else np.ones_like(allowed)


def allowed_times(sounding_since: np.ndarray, now_s: float, velocity: int, pitch: int,
                  n_times: int) -> np.ndarray:
    """No note ends in the instant it started: time class 0 ("at once") is not allowed then."""
    allowed = np.ones(n_times, bool)
    if velocity == 0 and sounding_since[pitch] == now_s:
        allowed[0] = False
    return allowed


def reference_distribution(log_probs: np.ndarray, allowed: np.ndarray, temperature: float = 1.0,
                           top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """One head's sampling distribution: the masked classes get probability 0, then
    temperature, top-k (ties with the k-th kept), softmax, top-p (the smallest set of the most
    likely classes holding ``top_p``), renormalised. Takes logits or log-probabilities alike."""
    scores = np.where(allowed, np.asarray(log_probs, np.float64) / temperature, -np.inf)
    if top_k and top_k < len(scores):
        scores[scores < np.sort(scores)[-top_k]] = -np.inf
    p = np.exp(scores - scores.max())
    p /= p.sum()
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, kind="mergesort")  # most likely first; ties keep class order
        before = np.concatenate([[0.0], np.cumsum(p[order])[:-1]])  # mass ranked above
        p[order[before >= top_p]] = 0.0
        p /= p.sum()
    return p


def reference_draw(p: np.ndarray, u: float) -> int:
    """Inverse CDF: the first class whose cumulative probability exceeds ``u`` in [0, 1)."""
    return int(min(np.searchsorted(np.cumsum(p), u * p.sum(), side="right"),
                   np.flatnonzero(p)[-1]))


def reference_step(log_probs: list, sounding_since: np.ndarray, now_s: float,
                   sampling: SamplingConfig, uniforms) -> tuple[np.ndarray, dict]:
    """One event for one stream, the readable way: velocity first (on or off?), then a pitch
    that choice allows, then the time; a note held longer than ``max_note_s`` overrides the
    draw. ``sampling`` holds its limits as numbers (``SamplingConfig.with_limits``; 0: off).
    ``log_probs``: the three heads' scores (e.g. ``improviser.log_probs`` row 0);
    ``sounding_since``: onset of each sounding pitch, NaN if silent; ``now_s``: the stream's
    clock; ``uniforms``: three numbers in [0, 1) for (pitch, velocity, time).
    Returns ``(codes (3,), {head: distribution sampled from})``, as ``Improviser.step``."""
    lp_pitch, lp_velocity, lp_time = log_probs
    knobs = sampling.knobs()

    def distribution(i, scores, allowed):
        return reference_distribution(scores, allowed, knobs.temperature[i], knobs.top_k,
                                      knobs.top_p)

    p_velocity = distribution(1, lp_velocity, allowed_velocities(
        sounding_since, len(lp_velocity), knobs.max_polyphony))
    velocity = reference_draw(p_velocity, uniforms[1])
    p_pitch = distribution(0, lp_pitch, allowed_pitches(sounding_since, velocity))
    pitch = reference_draw(p_pitch, uniforms[0])
    p_time = distribution(2, lp_time,
                          allowed_times(sounding_since, now_s, velocity, pitch, len(lp_time)))
    time_class = reference_draw(p_time, uniforms[2])
    held_too_long = np.flatnonzero(now_s - sounding_since > knobs.max_note_s)  # NaN: False
    if len(held_too_long):  # ended at once, the lowest pitch first
        pitch, velocity, time_class = held_too_long[0], 0, 0
    return (np.array([pitch, velocity, time_class]),
            {"pitch": p_pitch, "velocity": p_velocity, "time": p_time})


# --- the same recipe compiled, for every stream at once ------------------------------------------
# How a head's classes are masked by the notes sounding in a stream (note hygiene).
ALL, SOUNDING, SILENT, OFF_NEEDS_A_NOTE, NOT_AT_ONCE, ONLY_OFF = 0, 1, 2, 3, 4, 5


@njit(cache=True)
def sample_step(logits, sizes, knobs, sounding_since, now_s, uniforms, codes, probs):
    """``reference_step`` for every stream, as loops compiled by numba: Python's overhead on
    a few hundred tiny operations per step would cost far more than their arithmetic. Writes
    ``codes`` (streams, 3) and the distributions sampled from into ``probs`` (streams,
    classes); ``knobs``: ``SamplingConfig.knobs()``, or its ``tuple()``, a microsecond cheaper
    per call (numba types a plain tuple in C); a silent pitch has ``sounding_since`` NaN. The
    note held too long is ``midilstm.sounding.track_notes``'s (it keeps the clock).

    Compiled loops do not check their indices: the shapes are checked first, and a mismatch
    raises ``ValueError`` instead of reading or writing out of bounds."""
    temperature, top_k, top_p, max_polyphony, _ = knobs  # max_note_s: track_notes's
    streams, outputs = logits.shape
    if not (len(sizes) == 3 and sizes[0] >= 1 and sizes[1] >= 1 and sizes[2] >= 1
            and sizes[0] + sizes[1] + sizes[2] == outputs and probs.shape == logits.shape
            and len(temperature) == 3 and sounding_since.shape[0] == streams
            and sounding_since.shape[1] == sizes[0] and now_s.shape[0] == streams
            and uniforms.shape[0] == streams and uniforms.shape[1] == 3
            and codes.shape[0] == streams and codes.shape[1] == 3):
        raise ValueError("sample_step: the arrays' shapes disagree with the sizes")
    v0, t0 = sizes[0], sizes[0] + sizes[1]
    for b in range(streams):
        playing = sounding_since[b]
        full = 0 < max_polyphony <= np.sum(~np.isnan(playing))
        _distribution(logits[b, v0:t0], temperature[1], ONLY_OFF if full else OFF_NEEDS_A_NOTE,
                      playing, top_k, top_p, probs[b, v0:t0])
        velocity = _draw(probs[b, v0:t0], uniforms[b, 1])
        mask = SOUNDING if velocity == 0 else SILENT
        if not _distribution(logits[b, :v0], temperature[0], mask, playing, top_k, top_p,
                             probs[b, :v0]):  # nothing allowed (every pitch sounding): no mask
            _distribution(logits[b, :v0], temperature[0], ALL, playing, top_k, top_p,
                          probs[b, :v0])
        pitch = _draw(probs[b, :v0], uniforms[b, 0])
        # Ending a note in the instant it started would make it last no time at all.
        instant = velocity == 0 and playing[pitch] == now_s[b]
        _distribution(logits[b, t0:], temperature[2], NOT_AT_ONCE if instant else ALL,
                      playing, top_k, top_p, probs[b, t0:])
        codes[b, 0], codes[b, 1], codes[b, 2] = pitch, velocity, _draw(probs[b, t0:], uniforms[b, 2])


@njit(cache=True)
def _allowed(i, mask, playing, any_playing):
    if mask == SOUNDING:
        return not np.isnan(playing[i])
    if mask == SILENT:
        return np.isnan(playing[i])
    if mask == OFF_NEEDS_A_NOTE and i == 0:
        return any_playing
    if mask == NOT_AT_ONCE:
        return i > 0  # time class 0 is "at the same time"
    if mask == ONLY_OFF:
        return i == 0  # as many notes sound as the limit allows: only an off
    return True


@njit(cache=True)
def _distribution(logits, temperature, mask, playing, top_k, top_p, out):
    """``reference_distribution`` into ``out``; returns False when no class is allowed."""
    n = logits.shape[0]
    any_playing = mask == OFF_NEEDS_A_NOTE and not np.isnan(playing).all()
    peak = -np.inf
    for i in range(n):
        out[i] = logits[i] / temperature if _allowed(i, mask, playing, any_playing) else -np.inf
        peak = max(peak, out[i])
    if peak == -np.inf:
        return False
    if 0 < top_k < n:
        kth = np.sort(out)[n - top_k]
        for i in range(n):
            if out[i] < kth:
                out[i] = -np.inf
    total = 0.0
    for i in range(n):
        out[i] = np.exp(out[i] - peak)
        total += out[i]
    out /= total
    if top_p < 1.0:
        before = 0.0  # probability of the classes ranked above this one
        for i in np.argsort(-out, kind="mergesort"):
            p = out[i]
            if before >= top_p:
                out[i] = 0.0
            before += p
        out /= out.sum()
    return True


@njit(cache=True)
def _draw(p, u):
    """``reference_draw``: the first class whose cumulative probability exceeds ``u``."""
    target = u * p.sum()
    acc = 0.0
    last = 0
    for i in range(p.shape[0]):
        if p[i] > 0.0:
            last = i
            acc += p[i]
            if acc > target:
                return i
    return last  # rounding left the target just above the total
