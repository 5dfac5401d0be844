"""The lesson's encoding as one object: each event becomes three class indices.

* pitch    -> ``pitch - pitch_low`` (89 classes for 24..112)
* velocity -> the velocity itself (128 classes, the lesson), or class 0 = note-off plus
  ``velocity_bins`` equal-width bins over 1..127 (Magenta uses 32)
* delta_s  -> class 0 for "at the same time" (chords: below ``same_time_s``, 2 ms, which no
  listener hears as apart), then ``n_time_bins`` bins of the longer deltas

The time bins are *fitted* on training data and saved with the codec (JSON), so training,
checkpoints and generation share the same edges. Strategies:

* ``"uniform"``  the lesson's equal-width bins between the smallest and largest delta: one long
  pause squeezes nearly every delta into the first bin (kept for comparison);
* ``"log"``      log-spaced edges: equal *relative* resolution, as the ear hears rhythm;
* ``"quantile"`` edges at quantiles: every bin holds as many training deltas.

Decoding maps a time class to the mean training delta that fell into it: the decoded training
data then lasts exactly as long as the original, so timing errors do not add up to a drift.
"""
from __future__ import annotations

import json
import reprlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .checks import is_int, is_number
from . import params
from .constants import MAX_POLYPHONY, N_VELOCITIES, PITCH_HIGH, PITCH_LOW
from .constants import TIME_STRATEGIES  # noqa: F401  (notebook 02 reads it from here)
from .errors import CodecError, ParameterError
from .events import EVENT_DTYPE, onset_times_s, texture_limits
from .files import write_json_atomic

HEADS = ("pitch", "velocity", "time")
# Bounds on what a codec (or a file claiming to be one) may ask for: far beyond any musical use,
# small enough that the model and generation buffers it sizes stay small.
MAX_CODEC_FILE_BYTES = 1 << 20  # a fitted codec.json is a few kB


@dataclass
class EventCodec:
    """Events <-> integer triples ``(pitch_class, velocity_class, time_class)``."""

    time_strategy: str = "log"
    n_time_bins: int = 32
    velocity_bins: int | None = None
    same_time_s: float = 0.002  # deltas below this count as "at the same time" (class 0)
    pitch_low: int = PITCH_LOW
    pitch_high: int = PITCH_HIGH
    time_edges_s: list = field(default_factory=list)  # n_time_bins + 1 edges, fitted
    time_centers_s: list = field(default_factory=list)  # n_time_bins values, fitted
    # The training music's texture, fitted with the bins, for generation's learned limits
    # (``SamplingConfig``); None in codecs saved before they existed.
    longest_note_s: float | None = None  # its longest note
    max_polyphony: int | None = None  # the most notes it sounds at once

    def __post_init__(self):
        check_codec_fields(asdict(self))

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def n_pitches(self) -> int:
        return self.pitch_high - self.pitch_low + 1

    @property
    def n_velocities(self) -> int:
        return N_VELOCITIES if self.velocity_bins is None else self.velocity_bins + 1

    @property
    def n_times(self) -> int:
        return self.n_time_bins + 1

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Classes per head: (pitch, velocity, time)."""
        return self.n_pitches, self.n_velocities, self.n_times

    @property
    def fitted(self) -> bool:
        return len(self.time_edges_s) == self.n_time_bins + 1

    # --- fitting -------------------------------------------------------------------------------
    def fit(self, events: np.ndarray | list) -> "EventCodec":
        """Fit the time bins on training events (one array, or a list of arrays)."""
        pieces = _as_list(events)
        if not pieces or not sum(map(len, pieces)):
            raise ValueError("cannot fit the codec: no training events")
        deltas = np.concatenate([e["delta_s"] for e in pieces])
        positive = np.sort(deltas[self._timed(deltas)])
        if len(positive) == 0:
            raise ValueError(f"cannot fit time bins: no delta times >= {self.same_time_s} s")
        low, high = positive[0], positive[-1]
        if self.time_strategy == "uniform":
            edges = np.linspace(low, max(high, low * (1 + 1e-9)), self.n_time_bins + 1)
        elif self.time_strategy == "log":
            edges = np.geomspace(low, max(high, low * (1 + 1e-9)), self.n_time_bins + 1)
        else:
            edges = _distinct_quantiles(positive, self.n_time_bins)
        self.time_edges_s = edges.tolist()
        bins = self._time_bin(positive)
        self.time_centers_s = [
            float(np.mean(positive[bins == b])) if (bins == b).any()
            else float(np.sqrt(edges[b] * edges[b + 1]))  # an empty bin decodes to its middle
            for b in range(self.n_time_bins)]
        limits = [texture_limits(piece) for piece in pieces]
        self.longest_note_s = max(seconds for seconds, _ in limits)
        self.max_polyphony = max(count for _, count in limits)
        return self

    def _timed(self, deltas: np.ndarray) -> np.ndarray:
        """Which deltas get a time bin: > 0 always (``same_time_s=0`` is the lesson's exact
        zero class) and at least ``same_time_s``."""
        return (deltas > 0) & (deltas >= self.same_time_s)

    def _time_bin(self, positive_deltas: np.ndarray) -> np.ndarray:
        """0-based bin of positive deltas; values outside the fitted range go to the end bins."""
        inner = np.asarray(self.time_edges_s[1:-1])
        return np.searchsorted(inner, positive_deltas, side="right")

    # --- encoding ------------------------------------------------------------------------------
    def encode(self, events: np.ndarray) -> np.ndarray:
        """Events -> int64 array of shape (n, 3)."""
        self._require_fitted()
        pitch = events["pitch"].astype(np.int64)
        if len(pitch) and (pitch.min() < self.pitch_low or pitch.max() > self.pitch_high):
            raise ValueError(f"pitches must be in {self.pitch_low}..{self.pitch_high}; read the "
                             f"file with Selection(out_of_range='fold' or 'drop')")
        velocity = events["velocity"].astype(np.int64)
        if self.velocity_bins is not None:
            width = 127 / self.velocity_bins
            velocity = np.where(velocity > 0, np.minimum((velocity - 1) // width + 1,
                                                         self.velocity_bins), 0).astype(np.int64)
        delta = events["delta_s"]
        time = np.zeros(len(delta), np.int64)
        positive = self._timed(delta)
        time[positive] = self._time_bin(delta[positive]) + 1
        return np.stack([pitch - self.pitch_low, velocity, time], axis=1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Integer triples -> events; each time class becomes its bin's representative delta."""
        self._require_fitted()
        codes = np.asarray(codes, dtype=np.int64).reshape(-1, 3)
        events = np.empty(len(codes), EVENT_DTYPE)
        events["pitch"] = codes[:, 0] + self.pitch_low
        if self.velocity_bins is None:
            events["velocity"] = codes[:, 1]
        else:  # a bin decodes to its middle velocity
            width = 127 / self.velocity_bins
            # bin c spans velocities 1+(c-1)*width .. 1+c*width; round its middle half down, so
            # that with width 1 (127 bins) bin c decodes to velocity c, not c+1
            middle = np.ceil(0.5 + (codes[:, 1] - 0.5) * width).clip(1, 127)
            events["velocity"] = np.where(codes[:, 1] > 0, middle, 0)
        centers = np.concatenate([[0.0], self.time_centers_s])
        events["delta_s"] = centers[codes[:, 2]]
        return events

    def timing_error_ms(self, events: np.ndarray) -> dict:
        """What encode -> decode does to timing on ``events``, in milliseconds.

        ``delta_*`` is the error of each delta; ``onset_*`` the error of absolute onset times,
        where the per-event errors accumulate (the drift a listener hears).
        """
        if len(events) == 0:
            raise ValueError("timing_error_ms needs at least one event")
        decoded = self.decode(self.encode(events))
        delta_err = np.abs(decoded["delta_s"] - events["delta_s"]) * 1000
        onset_err = np.abs(onset_times_s(decoded) - onset_times_s(events)) * 1000
        return {"delta_mean_ms": float(delta_err.mean()),
                "delta_median_ms": float(np.median(delta_err)),
                "delta_p95_ms": float(np.percentile(delta_err, 95)),
                "onset_mean_ms": float(onset_err.mean()),
                "onset_final_ms": float(onset_err[-1])}

    # --- saving --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "codec") -> "EventCodec":
        """A codec from ``to_dict``'s output, validated first (``CodecError`` naming ``where``
        and the field); missing fields take their defaults."""
        if not isinstance(data, dict):
            raise CodecError(where, f"must be a mapping of codec fields, not {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = [key for key in data if key not in names]
        if unknown:
            raise CodecError(where, f"{reprlib.repr(unknown[0])} is not a codec field "
                                    f"(known: {', '.join(names)})")
        try:
            return cls(**data)  # __post_init__ checks every field; missing ones take defaults
        except CodecError as err:
            raise CodecError(where, err.reason) from None

    def save(self, path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "EventCodec":
        """Read and validate a ``codec.json``; any problem is one ``CodecError`` naming the file."""
        try:
            with open(path, "rb") as file:  # bounded read: a FIFO or a huge file cannot hang us
                text = file.read(MAX_CODEC_FILE_BYTES + 1)
        except OSError as err:
            raise CodecError(path, f"cannot read it ({err.strerror or err})") from None
        if len(text) > MAX_CODEC_FILE_BYTES:
            raise CodecError(path, f"is over {MAX_CODEC_FILE_BYTES} bytes: not a codec file")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:  # JSON, UTF-8 or nesting errors
            raise CodecError(path, f"is not valid JSON ({err})") from None
        return cls.from_dict(data, where=str(path))

    def _require_fitted(self):
        if not self.fitted:
            raise RuntimeError("the codec is not fitted: call codec.fit(training_events) first")


def check_codec_fields(values: dict, where: str = "codec") -> None:
    """Raise ``CodecError(where, "<field> ...")`` unless every codec field has its type, lies in
    bounds and agrees with the others: a codec file decides array sizes and indices later on,
    so nothing it says is used before this passes. ``values`` holds every field."""
    def bad(name, why):
        raise CodecError(where, f"{name} {why}, not {reprlib.repr(values[name])}")

    for name in ("time_strategy", "n_time_bins", "velocity_bins"):  # the parameter table's rules
        try:
            params.check(name, values[name])
        except ParameterError as err:
            raise CodecError(where, f"{name} {err.reason}") from None
    n_bins = values["n_time_bins"]
    if not is_number(values["same_time_s"], finite=True) or values["same_time_s"] < 0:
        bad("same_time_s", "must be a finite number >= 0")
    low, high = values["pitch_low"], values["pitch_high"]
    if not is_int(low) or not 0 <= low <= 127:
        bad("pitch_low", "must be a MIDI pitch 0..127")
    if not is_int(high) or not low <= high <= 127:
        bad("pitch_high", f"must be a MIDI pitch in pitch_low ({low})..127")
    longest = values["longest_note_s"]
    if longest is not None and (not is_number(longest, finite=True) or longest < 0):
        bad("longest_note_s", "must be null or a finite number >= 0")
    most = values["max_polyphony"]
    if most is not None and (not is_int(most) or not 0 <= most <= MAX_POLYPHONY):
        bad("max_polyphony", f"must be null or an integer in 0..{MAX_POLYPHONY}")
    edges = _numbers(values, "time_edges_s", (0, n_bins + 1), where,
                     f"n_time_bins {n_bins} needs {n_bins + 1} (or none before fitting)")
    centers = _numbers(values, "time_centers_s", (max(len(edges) - 1, 0),), where,
                       f"{len(edges)} time_edges_s need {max(len(edges) - 1, 0)}")
    for i in range(1, len(edges)):
        if not edges[i] > edges[i - 1]:
            raise CodecError(where, f"time_edges_s must be strictly increasing, but edge {i} "
                                    f"({edges[i]!r}) follows {edges[i - 1]!r}")
    for b, center in enumerate(centers):  # a bin decodes to a delta inside it (a mean of its
        slack = 1e-9 * edges[b + 1]       # deltas), give or take the mean's rounding
        if not edges[b] - slack <= center <= edges[b + 1] + slack:
            raise CodecError(where, f"time_centers_s[{b}] ({center!r}) lies outside its bin "
                                    f"{edges[b]!r}..{edges[b + 1]!r}")


def _numbers(values: dict, name: str, lengths: tuple, where: str, need: str) -> list:
    """``values[name]`` as a list of finite numbers >= 0 whose length is one of ``lengths``
    (``need`` says why, for the error)."""
    items = values[name]
    if not isinstance(items, (list, tuple)):
        raise CodecError(where, f"{name} must be a list of numbers, not {type(items).__name__}")
    if len(items) not in lengths:
        raise CodecError(where, f"{name} has {len(items)} values, but {need}")
    for i, item in enumerate(items):
        if not is_number(item, finite=True) or item < 0:
            raise CodecError(where, f"{name}[{i}] must be a finite number >= 0, "
                                    f"not {reprlib.repr(item)}")
    return [float(item) for item in items]


def _distinct_quantiles(positive: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile edges, made distinct. Scores repeat a few exact deltas, so plain quantiles
    collapse onto them and leave bins empty; the spare bins split the widest (log-scale) ones."""
    edges = np.unique(np.quantile(positive, np.linspace(0, 1, n_bins + 1)))
    if len(edges) == 1:
        edges = np.array([edges[0], edges[0] * (1 + 1e-9)])
    while len(edges) < n_bins + 1:
        widest = np.argmax(np.diff(np.log(edges)))
        edges = np.insert(edges, widest + 1, np.sqrt(edges[widest] * edges[widest + 1]))
    return edges


def _as_list(events) -> list:
    return [events] if isinstance(events, np.ndarray) else list(events)
