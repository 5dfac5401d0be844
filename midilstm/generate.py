"""Improvisation: sample new events one step at a time, carrying the LSTM state.

The lesson re-ran the whole 30-event window for every new note. An LSTM's state already
summarises everything it has seen, so here each new event costs one step: look up the
event's input projection (three table rows, see ``NoteLSTM.input_tables``), update the state,
read the three heads, sample. The step runs on weights copied out of the model once (a test
checks it against the torch model): for many streams as numpy matrix products, for a few as
loops compiled by numba, like the sampler, whose hundreds of tiny operations would otherwise
cost far more in Python call overhead than in arithmetic (``midilstm.step``).

Sampling controls: temperature (overall or per head), top-k, top-p, a seed, several
variations in one batch, and note hygiene: a note-off is only sampled for a sounding pitch, a
sounding pitch is ended before it is struck again, and a note held longer than ``max_note_s``
is ended. Each step samples the velocity head first (note on or off?), then the pitch among the
pitches that allows, then the time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from . import step
from .codec import HEADS, EventCodec
from .events import drop_orphan_offs, end_all_notes, make_events
from .model import NoteLSTM


BLAS_STREAMS = 8  # from this many variations on, numpy's matrix products beat compiled loops


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0  # < 1: safer and more repetitive, > 1: more adventurous
    temperature_pitch: float | None = None  # per-head overrides of ``temperature``
    temperature_velocity: float | None = None
    temperature_time: float | None = None
    top_k: int | None = None  # keep only the k most likely classes of each head
    top_p: float | None = None  # keep the smallest set of classes with this much probability
    max_note_s: float = 5.0  # end notes held longer than this (Magenta uses 5 s)

    def __post_init__(self):
        temperatures = [self.temperature_of(h) for h in HEADS]
        if min(temperatures) < 0:
            raise ValueError(f"temperatures must be >= 0 (0 = greedy), got {temperatures}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be None or >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be None or in (0, 1], got {self.top_p}")
        if self.max_note_s <= 0:
            raise ValueError(f"max_note_s must be > 0, got {self.max_note_s}")

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
        self.logits = np.zeros((n_variations, sum(codec.sizes)), np.float32)
        self.fed = False
        self.now_s = np.zeros(n_variations)  # time of the last event, per stream
        self.sounding_since = np.full((n_variations, codec.n_pitches), np.nan)  # onset or NaN
        self.time_centers = np.concatenate([[0.0], codec.time_centers_s])
        self.sizes = np.array(codec.sizes, np.int64)
        self.splits = np.cumsum(codec.sizes)[:-1]
        self.inv_temperature = np.array([1 / max(sampling.temperature_of(h), 1e-6) for h in HEADS])
        self.top_k = sampling.top_k or 0  # 0: off
        self.top_p = 1.0 if sampling.top_p is None else float(sampling.top_p)  # 1: off
        self._codes = np.zeros((n_variations, 3), np.int64)
        self._probs = np.zeros((n_variations, sum(codec.sizes)))

    def _copy_weights(self, model: NoteLSTM):
        """The weights as float32 numpy arrays in PyTorch's (outputs, inputs) layout."""
        lstm = model.lstm
        f32 = lambda t: t.detach().cpu().float().numpy()  # noqa: E731
        hidden = model.config.hidden_size
        # sigmoid(a) = (1 + tanh(a / 2)) / 2: with the input, forget and output gates' weights
        # halved, one tanh over all four gates gives every nonlinearity the cell needs.
        scale = np.full(4 * hidden, 0.5, np.float32)
        scale[2 * hidden:3 * hidden] = 1.0  # the cell candidate g takes a plain tanh
        layers = range(lstm.num_layers)
        column = scale[:, None]  # weights are (4 * hidden, inputs): scale the gate rows
        self.bias = np.stack([f32(getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}"))
                              for i in layers]) * scale
        self.w_hh = np.stack([f32(getattr(lstm, f"weight_hh_l{i}")) for i in layers]) * column
        self.w_ih = np.stack([f32(getattr(lstm, f"weight_ih_l{i}")) * column for i in layers
                              if i > 0] or [np.zeros((4 * hidden, hidden), np.float32)])
        self.tables = [f32(t) * scale for t in model.input_tables()]
        self.tables[0] += self.bias[0]  # the first layer's bias rides on the pitch table
        self.head_w, self.head_b = f32(model.head.weight), f32(model.head.bias)

    @property
    def log_probs(self) -> list:
        """Each head's log-probabilities (before temperature and masks) after the last event."""
        if not self.fed:
            return None
        return [_log_softmax(p) for p in np.split(self.logits.astype(np.float64), self.splits, axis=1)]

    # --- the network, one step ---------------------------------------------------------------
    def feed(self, codes: np.ndarray, end_held: bool = False):
        """Advance every stream by one event (codes: (n_variations, 3)); with ``end_held`` an
        event is first replaced by a note-off for a note held longer than ``max_note_s``."""
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        step.track_notes(codes, self.time_centers, self.sampling.max_note_s, self.now_s,
                         self.sounding_since, end_held)
        if self.n < BLAS_STREAMS:
            step.lstm_step(codes, self.h, self.c, *self.tables, self.w_ih, self.w_hh, self.bias,
                           self.head_w, self.head_b, self.logits)
        else:
            self._numpy_step(codes)
        self.fed = True
        return codes

    def _numpy_step(self, codes):
        """The network step as matrix products over all streams (``step.lstm_step`` is the
        same step as loops, faster for a few streams)."""
        x = self.tables[0][codes[:, 0]] + self.tables[1][codes[:, 1]] + self.tables[2][codes[:, 2]]
        for layer in range(len(self.w_hh)):
            gates = x if layer == 0 else x @ self.w_ih[layer - 1].T + self.bias[layer]
            z = np.tanh(gates + self.h[layer] @ self.w_hh[layer].T)
            i, f, g, o = np.split(z, 4, axis=1)  # PyTorch's gate order; i, f, o = 2*sigmoid - 1
            self.c[layer] = 0.5 * ((f + 1) * self.c[layer] + (i + 1) * g)
            self.h[layer] = 0.5 * (o + 1) * np.tanh(self.c[layer])
            x = self.h[layer]
        np.matmul(x, self.head_w.T, out=self.logits)
        self.logits += self.head_b

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
        ``probs`` holds each head's sampling distribution (after temperature, top-k/p, masks).

        Hygiene, applied as masks: a note-off only while some note sounds, and then only for a
        sounding pitch, and not in the instant that note started; a note-on only for a silent
        pitch. The velocity head (on or off?) is
        sampled first, so the model's own balance of starting and ending notes is kept;
        sampling the pitch first turns most intended offs into ons ("sloppy chords").
        """
        codes = self._advance(self.rng.random((self.n, 3)))
        return codes.copy(), dict(zip(HEADS, np.split(self._probs.copy(), self.splits, axis=1)))

    def _advance(self, uniforms: np.ndarray) -> np.ndarray:
        """Sample and feed one event per stream from three uniform draws per stream; returns
        the codes (a buffer reused by the next call)."""
        if not self.fed:
            raise RuntimeError("prime the improviser with at least one event first")
        step.sample_step(self.logits, self.sizes, self.inv_temperature, self.top_k, self.top_p,
                         self.sounding_since, self.now_s, uniforms, self._codes, self._probs)
        return self.feed(self._codes, end_held=True)


def generate(model: NoteLSTM, codec: EventCodec, primer: np.ndarray, *, n_events: int = 500,
             seconds: float | None = None, n_variations: int = 1, seed: int = 0,
             sampling: SamplingConfig = SamplingConfig(), progress: bool = False) -> list:
    """Continue ``primer`` (events) with up to ``n_events`` new events (or until ``seconds`` of
    music) per variation. Returns one event array per variation: the continuation only, with
    every note ended."""
    improviser = Improviser(model, codec, sampling, seed, n_variations)
    improviser.prime(primer)
    start_s = improviser.now_s.copy()
    # The same draws, in the same order, as calling improviser.step() n_events times.
    uniforms = improviser.rng.random((n_events, n_variations, 3))
    codes = np.zeros((n_variations, n_events, 3), np.int64)
    lengths = np.full(n_variations, n_events)
    for t in tqdm(range(n_events), disable=not progress, desc="generating", unit="event"):
        codes[:, t] = improviser._advance(uniforms[t])
        if seconds is not None:
            done = (improviser.now_s - start_s >= seconds) & (lengths == n_events)
            lengths[done] = t + 1
            if (lengths < n_events).all():
                break
    gap_s = codec.time_centers_s[len(codec.time_centers_s) // 2]  # a typical pause
    # Offs that end the primer's notes mean nothing without the primer: they are dropped.
    return [end_all_notes(drop_orphan_offs(codec.decode(codes[i, :lengths[i]])), gap_s)
            for i in range(n_variations)]


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))
