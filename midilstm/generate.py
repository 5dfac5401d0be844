"""Improvisation: sample new events one step at a time, carrying the network's state.

The lesson re-ran the whole 30-event window for every new note. The network's state already
summarises everything it has seen, so here each new event costs one incremental step of the
network (``model.stepper``: for the LSTM, its weights copied out once and stepped as compiled
loops or matrix products, ``midilstm.lstm_step``), then one sampling step (``midilstm.sampling``:
``SamplingConfig`` and the recipe, readable and compiled), then the bookkeeping of the notes each
stream sounds (``midilstm.sounding.track_notes``).

Here: several variations in one batch, a seed, and ``warm_up()``, which compiles the fast path
with a visible message.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .codec import HEADS, EventCodec
from .events import drop_orphan_offs, end_all_notes, make_events
from .lstm_step import BLAS_STREAMS
from .model import ModelConfig, build
from .params import check
from .sampling import SamplingConfig, sample_step
from .sounding import KEY_DECAY, N_PITCH_CLASSES, track_notes


class Improviser:
    """Generates ``n_variations`` streams at once from one model and codec.

    >>> imp = Improviser(model, codec, SamplingConfig(temperature=0.9), seed=0, n_variations=4)
    >>> imp.prime(primer_events)        # feed the primer, building up the network's state
    >>> codes, probs = imp.step()       # one new event per stream, and the distributions sampled
    >>> imp.considered                  # what the model considered for it: before temperature,
    ...                                 # top-k/p and the hygiene masks
    """

    def __init__(self, model, codec: EventCodec, sampling: SamplingConfig = SamplingConfig(),
                 seed: int = 0, n_variations: int = 1):
        seed, n_variations = check("seed", seed), check("n_variations", n_variations)
        if tuple(model.config.sizes) != tuple(codec.sizes):  # else the steps index past arrays
            raise ValueError(f"the model predicts {tuple(model.config.sizes)} classes per head "
                             f"but the codec encodes {tuple(codec.sizes)}: not a pair")
        self.sampling = sampling.with_limits(codec)  # the learned limits, as numbers (0: off)
        self.knobs = self.sampling.knobs()
        self._packed_knobs = tuple(self.knobs)  # what sample_step takes fastest
        self.codec, self.n = codec, n_variations
        self.rng = np.random.default_rng(seed)
        self.stepper = model.stepper(n_variations)
        self.logits = np.zeros((n_variations, sum(codec.sizes)), np.float32)
        self.fed = False
        self.now_s = np.zeros(n_variations)  # time of the last event, per stream
        self.sounding_since = np.full((n_variations, codec.n_pitches), np.nan)  # onset or NaN
        self.key = np.zeros((n_variations, N_PITCH_CLASSES))  # decayed note-on counts
        self.ages = np.zeros((n_variations, codec.n_pitches))  # events each pitch has sounded
        self.time_centers = np.concatenate([[0.0], codec.time_centers_s])
        self.sizes = np.array(codec.sizes, np.int64)
        self.splits = np.cumsum(codec.sizes)[:-1]
        self._codes = np.zeros((n_variations, 3), np.int64)
        self._probs = np.zeros((n_variations, sum(codec.sizes)))
        self._considered_logits = None  # set by step(): the scores behind ``considered``
        warm_up()

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
        track_notes(codes, self.time_centers, self.knobs.max_note_s, self.now_s,
                    self.sounding_since, self.key, KEY_DECAY, end_held, self.ages)
        self.logits = self.stepper.step(codes, self.sounding_since, self.key,
                                        self.ages)  # its buffer
        self.fed = True
        return codes

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
        sample_step(self.logits, self.sizes, self._packed_knobs, self.sounding_since, self.now_s,
                    uniforms, self._codes, self._probs)
        return self.feed(self._codes, end_held=True)


def generate(model, codec: EventCodec, primer: np.ndarray, *, n_events: int = 500,
             seconds: float | None = None, n_variations: int = 1, seed: int = 0,
             sampling: SamplingConfig = SamplingConfig(), progress: bool = False) -> list:
    """Continue ``primer`` (events) with up to ``n_events`` new events (or until ``seconds`` of
    music) per variation. Returns one event array per variation: the continuation only, with
    every note ended."""
    n_events, seconds = check("n_events", n_events), check("seconds", seconds)
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


# --- compiling the fast path ---------------------------------------------------------------------
_WARM = False


def warm_up(verbose: bool = True) -> float:
    """Compile (or load from numba's cache) the generation loops (the LSTM's step, the sampler,
    the note bookkeeping) by generating two events with a tiny model, saying so when that may
    take a while: the first time, numba compiles for about 30 s. Later runs load the machine code from the cache
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
    model = build(ModelConfig(sizes=codec.sizes, hidden_size=2, dropout=0.0)).eval()
    for streams in (1, BLAS_STREAMS):  # the LSTM's compiled step, and its matrix products
        generate(model, codec, events, n_events=2, n_variations=streams)
    seconds = time.perf_counter() - start
    if verbose and seconds > 5:
        print(f"sampler ready ({seconds:.0f} s)", flush=True)
    return seconds


def _numba_cache_exists() -> bool:
    """Whether numba's cache holds the sampler (its index file, usually in ``__pycache__``
    beside ``sampling.py``). Asks numba where that is; if numba's internals change, says no."""
    try:
        return Path(sample_step._cache._cache_file._index_path).exists()
    except AttributeError:
        return False
