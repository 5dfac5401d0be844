"""Improvisation: sample new events one step at a time, carrying the LSTM state.

The lesson re-ran the whole 30-event window for every new note. An LSTM's state already
summarises everything it has seen, so here each new event costs one step: look up the
event's input projection (three table rows, see ``NoteLSTM.input_tables``), update the state,
read the three heads, sample. The step runs on weights copied out of the model once (a test
checks it against the torch model): for many streams as numpy matrix products, for a few as
loops compiled by numba, like the sampler, whose hundreds of tiny operations would otherwise
cost far more in Python call overhead than in arithmetic (``midilstm.step``).

What is sampled, and how, is ``midilstm.sampling`` (``SamplingConfig``, the readable recipe);
here: several variations in one batch, a seed, and ``warm_up()``, which compiles the fast path
with a visible message.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import step
from .codec import HEADS, EventCodec
from .events import drop_orphan_offs, end_all_notes, make_events
from .lstm_cell import layer_weights
from .model import ModelConfig, NoteLSTM, torch_threads
from .sampling import SamplingConfig
from .sounding import KEY_DECAY, N_PITCH_CLASSES, key_shares


BLAS_STREAMS = 8  # from this many variations on, numpy's matrix products beat compiled loops


class Improviser:
    """Generates ``n_variations`` streams at once from one model and codec.

    >>> imp = Improviser(model, codec, SamplingConfig(temperature=0.9), seed=0, n_variations=4)
    >>> imp.prime(primer_events)        # feed the primer, building up the LSTM state
    >>> codes, probs = imp.step()       # one new event per stream, and the distributions sampled
    >>> imp.considered                  # what the model considered for it: before temperature,
    ...                                 # top-k/p and the hygiene masks
    """

    def __init__(self, model: NoteLSTM, codec: EventCodec, sampling: SamplingConfig = SamplingConfig(),
                 seed: int = 0, n_variations: int = 1):
        sampling = sampling.with_limits(codec)  # the learned limits, as numbers (0: off)
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
        self.key = np.zeros((n_variations, N_PITCH_CLASSES))  # decayed note-on counts
        self.time_centers = np.concatenate([[0.0], codec.time_centers_s])
        self.sizes = np.array(codec.sizes, np.int64)
        self.splits = np.cumsum(codec.sizes)[:-1]
        self.inv_temperature = np.array([1 / max(sampling.temperature_of(h), 1e-6) for h in HEADS])
        self.top_k = sampling.top_k or 0  # 0: off
        self.top_p = 1.0 if sampling.top_p is None else float(sampling.top_p)  # 1: off
        self.max_note_s = float(sampling.max_note_s) or np.inf  # off: no note is too long
        self._codes = np.zeros((n_variations, 3), np.int64)
        self._probs = np.zeros((n_variations, sum(codec.sizes)))
        self._considered_logits = None  # set by step(): the scores behind ``considered``
        # A model and a codec that disagree are refused here, in one line, not mid-generation.
        step.check_step_arrays(self.sizes, *self.tables, self.table_s, self.table_k, self.w_ih,
                               self.w_hh, self.bias, self.head_w, self.head_b, self.h, self.c,
                               self.logits, self._probs, self.sounding_since, self.key,
                               self.time_centers)
        warm_up()

    def _copy_weights(self, model: NoteLSTM):
        """The weights as float32 numpy arrays in PyTorch's (outputs, inputs) layout."""
        lstm = model.lstm
        f32 = lambda t: t.detach().cpu().float().numpy()  # noqa: E731
        hidden = model.config.hidden_size
        # sigmoid(a) = (1 + tanh(a / 2)) / 2: with the input, forget and output gates' weights
        # halved, one tanh over all four gates gives every nonlinearity the cell needs.
        scale = np.full(4 * hidden, 0.5, np.float32)
        scale[2 * hidden:3 * hidden] = 1.0  # the cell candidate g takes a plain tanh
        layers = [layer_weights(lstm, i) for i in range(lstm.num_layers)]
        column = scale[:, None]  # weights are (4 * hidden, inputs): scale the gate rows
        self.bias = np.stack([f32(b_ih + b_hh) for _, _, b_ih, b_hh in layers]) * scale
        self.w_hh = np.stack([f32(w_hh) for _, w_hh, _, _ in layers]) * column
        self.w_ih = np.stack([f32(w_ih) * column for w_ih, _, _, _ in layers[1:]]
                             or [np.zeros((4 * hidden, hidden), np.float32)])
        self.tables = [f32(t) * scale for t in model.input_tables()]
        self.tables[0] += self.bias[0]  # the first layer's bias rides on the pitch table
        # what each sounding pitch, and each pitch class's key share, adds (no rows: a model
        # that does not read them)
        none = np.zeros((0, 4 * hidden), np.float32)
        self.table_k = self.tables.pop() if model.config.key_input else none
        self.table_s = self.tables.pop() if model.config.sounding_input else none
        self.head_w, self.head_b = f32(model.head.weight), f32(model.head.bias)

    @property
    def log_probs(self) -> list:
        """Each head's log-probabilities (before temperature and masks) after the last event."""
        return self._head_log_probs(self.logits) if self.fed else None

    @property
    def considered(self) -> dict | None:
        """What the model itself gave for the event the last ``step`` drew, before temperature,
        top-k/p and the hygiene masks: ``{head: probabilities (n_variations, classes)}``.
        Worked out only when asked for, so stepping costs nothing extra."""
        if self._considered_logits is None:
            return None
        return dict(zip(HEADS, map(np.exp, self._head_log_probs(self._considered_logits))))

    def _head_log_probs(self, logits: np.ndarray) -> list:
        return [_log_softmax(p) for p in np.split(logits.astype(np.float64), self.splits, axis=1)]

    # --- the network, one step ---------------------------------------------------------------
    def feed(self, codes: np.ndarray, end_held: bool = False):
        """Advance every stream by one event (codes: (n_variations, 3)); with ``end_held`` an
        event is first replaced by a note-off for a note held longer than ``max_note_s``."""
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        step.track_notes(codes, self.time_centers, self.max_note_s, self.now_s,
                         self.sounding_since, self.key, KEY_DECAY, end_held)
        if self.n < BLAS_STREAMS:
            step.lstm_step(codes, self.h, self.c, *self.tables, self.table_s, self.sounding_since,
                           self.table_k, self.key, self.w_ih, self.w_hh, self.bias, self.head_w,
                           self.head_b, self.logits)
        else:
            self._numpy_step(codes)
        self.fed = True
        return codes

    def _numpy_step(self, codes):
        """The network step as matrix products over all streams (``step.lstm_step`` is the
        same step as loops, faster for a few streams). The products are torch's on one thread
        (``_times_transposed``): numpy's OpenBLAS runs a thread per core, and on a busy machine
        those threads spin-wait for each other (64 variations 7-16x slower under load)."""
        with torch_threads(1):
            self._lstm_products(codes)

    def _lstm_products(self, codes):
        x = self.tables[0][codes[:, 0]] + self.tables[1][codes[:, 1]] + self.tables[2][codes[:, 2]]
        if len(self.table_s):
            sounding = (~np.isnan(self.sounding_since)).astype(np.float32)
            x += (torch.from_numpy(sounding) @ torch.from_numpy(self.table_s)).numpy()
        if len(self.table_k):
            shares = key_shares(self.key).astype(np.float32)
            x += (torch.from_numpy(shares) @ torch.from_numpy(self.table_k)).numpy()
        for layer in range(len(self.w_hh)):
            gates = (x if layer == 0
                     else _times_transposed(x, self.w_ih[layer - 1]) + self.bias[layer])
            z = np.tanh(gates + _times_transposed(self.h[layer], self.w_hh[layer]))
            i, f, g, o = np.split(z, 4, axis=1)  # PyTorch's gate order; i, f, o = 2*sigmoid - 1
            self.c[layer] = 0.5 * ((f + 1) * self.c[layer] + (i + 1) * g)
            self.h[layer] = 0.5 * (o + 1) * np.tanh(self.c[layer])
            x = self.h[layer]
        self.logits[:] = _times_transposed(x, self.head_w) + self.head_b

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
        ``probs`` holds each head's sampling distribution (after temperature, top-k/p, masks);
        ``self.considered`` then holds what the model itself gave (before any of them).

        Hygiene, applied as masks: a note-off only while some note sounds, and then only for a
        sounding pitch, and not in the instant that note started; a note-on only for a silent
        pitch. The velocity head (on or off?) is
        sampled first, so the model's own balance of starting and ending notes is kept;
        sampling the pitch first turns most intended offs into ons ("sloppy chords").
        """
        self._considered_logits = self.logits.copy() if self.fed else None
        codes = self._advance(self.rng.random((self.n, 3)))
        return codes.copy(), dict(zip(HEADS, np.split(self._probs.copy(), self.splits, axis=1)))

    def _advance(self, uniforms: np.ndarray) -> np.ndarray:
        """Sample and feed one event per stream from three uniform draws per stream; returns
        the codes (a buffer reused by the next call)."""
        if not self.fed:
            raise RuntimeError("prime the improviser with at least one event first")
        step.sample_step(self.logits, self.sizes, self.inv_temperature, self.top_k, self.top_p,
                         self.sampling.max_polyphony, self.sounding_since, self.now_s, uniforms,
                         self._codes, self._probs)
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


def _times_transposed(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a @ w.T`` by torch (same memory, no copy), on torch's current threads."""
    return (torch.from_numpy(a) @ torch.from_numpy(w).T).numpy()


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


# --- compiling the fast path ---------------------------------------------------------------------
_WARM = False


def warm_up(verbose: bool = True) -> float:
    """Compile (or load from numba's cache) the generation loops of ``midilstm.step`` by
    generating two events with a tiny model, saying so when that may take a while: the first
    time, numba compiles for about 30 s. Later runs load the machine code from the cache
    (``cache=True``) in about a second. Called by ``Improviser``; returns the seconds taken."""
    global _WARM
    if _WARM:
        return 0.0
    _WARM = True  # set first: the tiny generation below builds an Improviser too
    start = time.perf_counter()
    if verbose and not _numba_cache_exists():
        print("compiling the sampler (once, about 30 s; later runs load it from the cache)...",
              flush=True)
    events = make_events([(60, 80, 0.0), (60, 0, 0.5)])
    codec = EventCodec(n_time_bins=1).fit(events)
    model = NoteLSTM(ModelConfig(sizes=codec.sizes, hidden_size=2, dropout=0.0)).eval()
    for streams in (1, BLAS_STREAMS):  # the compiled LSTM step, and numpy's products
        generate(model, codec, events, n_events=2, n_variations=streams)
    seconds = time.perf_counter() - start
    if verbose and seconds > 5:
        print(f"sampler ready ({seconds:.0f} s)", flush=True)
    return seconds


def _numba_cache_exists() -> bool:
    """Whether numba's cache holds the sampler (its index file, usually in ``__pycache__``
    beside ``step.py``). Asks numba where that is; if numba's internals change, says no."""
    try:
        return Path(step.sample_step._cache._cache_file._index_path).exists()
    except AttributeError:
        return False
