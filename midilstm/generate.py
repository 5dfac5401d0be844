"""Improvisation: sample new events one step at a time, carrying the LSTM state.

The lesson re-ran the whole 30-event window for every new note. An LSTM's state already
summarises everything it has seen, so here each new event costs one step: look up the
event's input projection (three table rows, see ``NoteLSTM.input_tables``), update the state,
read the three heads, sample. The step runs in numpy on weights copied out of the model once:
for one small step, numpy's per-call overhead is a fraction of torch's. A test checks that it
matches the torch model.

Sampling controls: temperature (overall or per head), top-k, top-p, a seed, several
variations in one batch, and note hygiene: a note-off is only sampled for a sounding pitch, a
sounding pitch is ended before it is struck again, and a note held longer than ``max_note_s``
is ended. Each step samples the velocity head first (note on or off?), then the pitch among the
pitches that allows, then the time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .codec import EventCodec
from .events import end_all_notes, make_events
from .model import NoteLSTM


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0  # < 1: safer and more repetitive, > 1: more adventurous
    temperature_pitch: float | None = None  # per-head overrides of ``temperature``
    temperature_velocity: float | None = None
    temperature_time: float | None = None
    top_k: int | None = None  # keep only the k most likely classes of each head
    top_p: float | None = None  # keep the smallest set of classes with this much probability
    max_note_s: float = 5.0  # end notes held longer than this (Magenta uses 5 s)

    def temperature_of(self, head: str) -> float:
        value = getattr(self, f"temperature_{head}")
        return self.temperature if value is None else value

    def to_dict(self) -> dict:
        return asdict(self)


class Improviser:
    """Generates ``n_variations`` streams at once from one model and codec.

    >>> imp = Improviser(model, codec, SamplingConfig(temperature=0.9), seed=0, n_variations=4)
    >>> imp.prime(primer_events)        # feed the primer, building up the LSTM state
    >>> codes, probs = imp.step()       # one new event per stream, and what the model considered
    """

    def __init__(self, model: NoteLSTM, codec: EventCodec, sampling: SamplingConfig = SamplingConfig(),
                 seed: int = 0, n_variations: int = 1):
        self.codec, self.sampling, self.n = codec, sampling, n_variations
        self.rng = np.random.default_rng(seed)
        self._copy_weights(model)
        layers, hidden = model.config.num_layers, model.config.hidden_size
        self.h = np.zeros((layers, n_variations, hidden), np.float32)
        self.c = np.zeros_like(self.h)
        self.log_probs = None  # the heads' output after the last event fed
        self.now_s = np.zeros(n_variations)  # time of the last event, per stream
        self.sounding_since = np.full((n_variations, codec.n_pitches), np.nan)  # onset or NaN
        self.time_centers = np.concatenate([[0.0], codec.time_centers_s])

    def _copy_weights(self, model: NoteLSTM):
        lstm = model.lstm
        f32 = lambda t: t.detach().cpu().float().numpy()  # noqa: E731
        self.tables = [f32(t) for t in model.input_tables()]
        self.layers = []
        for layer in range(lstm.num_layers):
            bias = f32(getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}"))
            w_ih = None if layer == 0 else f32(getattr(lstm, f"weight_ih_l{layer}")).T.copy()
            self.layers.append((w_ih, f32(getattr(lstm, f"weight_hh_l{layer}")).T.copy(), bias))
        self.head_w, self.head_b = f32(model.head.weight).T.copy(), f32(model.head.bias)
        self.splits = np.cumsum(model.config.sizes)[:-1]

    # --- the network, one step ---------------------------------------------------------------
    def feed(self, codes: np.ndarray):
        """Advance every stream's state by one event (codes: (n_variations, 3))."""
        x = self.tables[0][codes[:, 0]] + self.tables[1][codes[:, 1]] + self.tables[2][codes[:, 2]]
        for layer, (w_ih, w_hh, bias) in enumerate(self.layers):
            gates = (x if w_ih is None else x @ w_ih) + self.h[layer] @ w_hh + bias
            i, f, g, o = np.split(gates, 4, axis=1)  # PyTorch's gate order
            self.c[layer] = _sigmoid(f) * self.c[layer] + _sigmoid(i) * np.tanh(g)
            self.h[layer] = _sigmoid(o) * np.tanh(self.c[layer])
            x = self.h[layer]
        logits = x @ self.head_w + self.head_b
        self.log_probs = [_log_softmax(part) for part in np.split(logits, self.splits, axis=1)]
        self._track_notes(codes)

    def prime(self, primer_events: np.ndarray):
        """Feed a primer (an event array, or ``(pitch, velocity, delta_s)`` triples) to every
        stream."""
        if not isinstance(primer_events, np.ndarray):
            primer_events = make_events(primer_events)
        for code in self.codec.encode(primer_events):
            self.feed(np.repeat(code[None], self.n, axis=0))

    # --- sampling ----------------------------------------------------------------------------
    def step(self):
        """Sample one event per stream, feed it back, and return ``(codes, probs)`` where
        ``probs`` holds each head's sampling distribution (after temperature, top-k/p, masks)."""
        if self.log_probs is None:
            raise RuntimeError("prime the improviser with at least one event first")
        # Hygiene, applied as masks: a note-off only while some note sounds, and then only for a
        # sounding pitch; a note-on only for a silent pitch. The velocity head (on or off?) is
        # sampled first, so the model's own balance of starting and ending notes is kept;
        # sampling the pitch first would turn most intended offs into ons ("sloppy chords").
        sounding = ~np.isnan(self.sounding_since)  # (streams, pitches)
        allowed_velocity = np.ones_like(self.log_probs[1], bool)
        allowed_velocity[:, 0] = sounding.any(axis=1)
        probs = {"velocity": self._distribution("velocity", self.log_probs[1], allowed_velocity)}
        velocity = _sample(probs["velocity"], self.rng)
        allowed_pitch = np.where((velocity == 0)[:, None], sounding, ~sounding)
        allowed_pitch[~allowed_pitch.any(axis=1)] = True  # every pitch sounding: nothing to mask
        probs["pitch"] = self._distribution("pitch", self.log_probs[0], allowed_pitch)
        pitch = _sample(probs["pitch"], self.rng)
        probs["time"] = self._distribution("time", self.log_probs[2])
        time = _sample(probs["time"], self.rng)
        codes = np.stack([pitch, velocity, time], axis=1)
        self._end_held_notes(codes)
        self.feed(codes)
        return codes, probs

    def _distribution(self, head, log_probs, allowed=None):
        scaled = log_probs / max(self.sampling.temperature_of(head), 1e-6)
        if allowed is not None:
            scaled = np.where(allowed, scaled, -np.inf)
        k = self.sampling.top_k
        if k is not None and k < scaled.shape[1]:
            kth = -np.partition(-scaled, k - 1, axis=1)[:, k - 1:k]
            scaled = np.where(scaled >= kth, scaled, -np.inf)
        p = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        if self.sampling.top_p is not None and self.sampling.top_p < 1:
            order = np.argsort(-p, axis=1, kind="stable")
            sorted_p = np.take_along_axis(p, order, axis=1)
            drop_sorted = np.cumsum(sorted_p, axis=1) - sorted_p >= self.sampling.top_p
            drop = np.zeros_like(drop_sorted)
            np.put_along_axis(drop, order, drop_sorted, axis=1)
            p = np.where(drop, 0.0, p)
            p /= p.sum(axis=1, keepdims=True)
        return p

    def _end_held_notes(self, codes):
        """Replace a stream's sample by a note-off when one of its notes is held too long."""
        held = (self.now_s[:, None] - self.sounding_since) > self.sampling.max_note_s
        for stream in np.flatnonzero(held.any(axis=1)):
            codes[stream] = (np.argmax(held[stream]), 0, 0)  # off, at the same time

    def _track_notes(self, codes):
        self.now_s += self.time_centers[codes[:, 2]]
        rows = np.arange(self.n)
        on = codes[:, 1] > 0
        start = on & np.isnan(self.sounding_since[rows, codes[:, 0]])
        self.sounding_since[rows[start], codes[start, 0]] = self.now_s[start]
        self.sounding_since[rows[~on], codes[~on, 0]] = np.nan


def generate(model: NoteLSTM, codec: EventCodec, primer: np.ndarray, *, n_events: int = 500,
             seconds: float | None = None, n_variations: int = 1, seed: int = 0,
             sampling: SamplingConfig = SamplingConfig(), progress: bool = False) -> list:
    """Continue ``primer`` (events) with up to ``n_events`` new events (or until ``seconds`` of
    music) per variation. Returns one event array per variation: the continuation only, with
    every note ended."""
    from tqdm.auto import tqdm

    improviser = Improviser(model, codec, sampling, seed, n_variations)
    improviser.prime(primer)
    start_s = improviser.now_s.copy()
    steps, lengths = [], np.full(n_variations, n_events)
    for step in tqdm(range(n_events), disable=not progress, desc="generating", unit="event"):
        codes, _ = improviser.step()
        steps.append(codes)
        if seconds is not None:
            done = (improviser.now_s - start_s >= seconds) & (lengths == n_events)
            lengths[done] = step + 1
            if (lengths < n_events).all():
                break
    codes = np.stack(steps, axis=1) if steps else np.zeros((n_variations, 0, 3), np.int64)
    gap_s = codec.time_centers_s[len(codec.time_centers_s) // 2]  # a typical pause
    return [end_all_notes(codec.decode(codes[i, :lengths[i]]), gap_s) for i in range(n_variations)]


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # stable for large |x|


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _sample(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class per row of probabilities, by inverse CDF (deterministic given ``rng``)."""
    u = rng.random((p.shape[0], 1))
    cdf = np.cumsum(p, axis=1)
    return np.minimum((cdf < u * cdf[:, -1:]).sum(axis=1), p.shape[1] - 1)
