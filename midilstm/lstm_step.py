"""The LSTM's incremental step for generation: its weights copied out once, stepped fast.

Sampling one event costs one step of the network for every stream. Through torch that step is
dozens of tiny operations, each with microseconds of overhead. So ``LSTMStepper`` copies the
weights out once into ``LSTMWeights`` and steps with them directly: an event's input projection
is a sum of table rows (``NoteLSTM.input_tables``), then the gates. For a few streams the step
runs as loops compiled by numba (``lstm_step``; ``cache=True`` keeps the machine code in
``__pycache__``), for many as matrix products (``lstm_products``), which are faster there.
A test checks both against the torch model.

Compiled loops do not check their indices, and the arrays' sizes come from a model and a codec
that may come from a file. So the kernel first checks that its arrays agree in shape and that
the codes it indexes with are in range, raising ``ValueError`` otherwise: whatever it is given,
it never reads or writes out of bounds.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from numba import njit

from .lstm_cell import layer_weights
from .model import torch_threads
from .sounding import age_share, key_shares

BLAS_STREAMS = 8  # from this many streams on, matrix products beat the compiled loops
# Sums may be reordered (vectorised); NaN and inf keep their meaning.
_SUM_MATH = {"reassoc", "contract"}


class LSTMWeights(NamedTuple):
    """An LSTM's weights as float32 arrays in PyTorch's (outputs, inputs) layout, with the
    input, forget and output gates' rows halved: sigmoid(a) = (1 + tanh(a / 2)) / 2, so one
    tanh over all four gates gives every nonlinearity the cell needs."""

    table_p: np.ndarray  # (pitches, 4*hidden): layer 0's input projection of each class, with
    table_v: np.ndarray  # (velocities, 4*hidden)  the layer's bias on the pitch table
    table_t: np.ndarray  # (times, 4*hidden)
    table_s: np.ndarray  # (pitches or 0, 4*hidden): what each sounding pitch adds
    table_a: np.ndarray  # (pitches or 0, 4*hidden): what each pitch's age share of 1 adds
    table_k: np.ndarray  # (12 or 0, 4*hidden): what each pitch class's key share adds
    w_ih: np.ndarray  # (max(layers-1, 1), 4*hidden, hidden): layers 1 and up
    w_hh: np.ndarray  # (layers, 4*hidden, hidden)
    bias: np.ndarray  # (layers, 4*hidden)
    head_w: np.ndarray  # (classes of the three heads, hidden)
    head_b: np.ndarray  # (classes,)


def lstm_weights(model) -> LSTMWeights:
    """The weights of a ``NoteLSTM``, copied out (later training does not change them)."""
    f32 = lambda t: t.detach().cpu().float().numpy()  # noqa: E731
    hidden, lstm = model.config.hidden_size, model.lstm
    scale = np.full(4 * hidden, 0.5, np.float32)
    scale[2 * hidden:3 * hidden] = 1.0  # the cell candidate g takes a plain tanh
    column = scale[:, None]  # weights are (4 * hidden, inputs): scale the gate rows
    layers = [layer_weights(lstm, i) for i in range(lstm.num_layers)]
    bias = np.stack([f32(b_ih + b_hh) for _, _, b_ih, b_hh in layers]) * scale
    tables = [f32(t) * scale for t in model.input_tables()]
    tables[0] += bias[0]  # the first layer's bias rides on the pitch table
    none = np.zeros((0, 4 * hidden), np.float32)  # a model that does not read them: no rows
    table_k = tables.pop() if model.config.key_input else none
    table_a = tables.pop() if model.config.age_input else none
    table_s = tables.pop() if model.config.sounding_input else none
    w_ih = np.stack([f32(w) * column for w, _, _, _ in layers[1:]]
                    or [np.zeros((4 * hidden, hidden), np.float32)])
    w_hh = np.stack([f32(w) for _, w, _, _ in layers]) * column
    return LSTMWeights(*map(np.ascontiguousarray, (*tables, table_s, table_a, table_k, w_ih, w_hh,
                                                   bias, f32(model.head.weight),
                                                   f32(model.head.bias))))


class LSTMStepper:
    """The LSTM's step for ``n_streams`` streams: ``step(codes, sounding_since, key, ages)``
    advances each stream by its event (codes (streams, 3); ``sounding_since`` (streams,
    pitches), NaN for a silent pitch; ``key`` (streams, 12) decayed note-on counts; ``ages``
    (streams, pitches) events each pitch has sounded, all after the event) and returns the
    scores of the next event (streams, classes), a buffer the next step reuses."""

    def __init__(self, model, n_streams: int):
        self.weights = lstm_weights(model)
        self._packed = tuple(self.weights)  # what lstm_step takes fastest
        layers, hidden = model.config.num_layers, model.config.hidden_size
        self.h = np.zeros((layers, n_streams, hidden), np.float32)
        self.c = np.zeros_like(self.h)
        self.logits = np.zeros((n_streams, sum(model.config.sizes)), np.float32)
        self._reads_ages = len(self.weights.table_a) > 0
        self._no_ages = np.zeros((n_streams, model.config.sizes[0]), np.float32)  # not read

    def step(self, codes, sounding_since, key, ages) -> np.ndarray:
        shares = (age_share(np.asarray(ages, np.float32)) if self._reads_ages  # training's rule
                  else self._no_ages)
        if len(codes) < BLAS_STREAMS:
            lstm_step(codes, self.h, self.c, self._packed, sounding_since, key, shares,
                      self.logits)
        else:  # torch's products on one thread: numpy's OpenBLAS runs a thread per core, and on
            with torch_threads(1):  # a busy machine they spin-wait (64 streams 7-16x slower)
                lstm_products(codes, self.h, self.c, self.weights, sounding_since, key, shares,
                              self.logits)
        return self.logits


def lstm_products(codes, h, c, w: LSTMWeights, sounding_since, key, age_shares, logits) -> None:
    """The step as matrix products over all streams (``lstm_step`` is the same as loops);
    ``age_shares``: ``sounding.age_share`` of the ages (streams, pitches), float32."""
    x = w.table_p[codes[:, 0]] + w.table_v[codes[:, 1]] + w.table_t[codes[:, 2]]
    if len(w.table_s):
        x += _times((~np.isnan(sounding_since)).astype(np.float32), w.table_s)
    if len(w.table_a):
        x += _times(np.ascontiguousarray(age_shares, np.float32), w.table_a)
    if len(w.table_k):
        x += _times(key_shares(key).astype(np.float32), w.table_k)
    for layer in range(len(w.w_hh)):
        gates = x if layer == 0 else _times(x, w.w_ih[layer - 1].T) + w.bias[layer]
        z = np.tanh(gates + _times(h[layer], w.w_hh[layer].T))
        i, f, g, o = np.split(z, 4, axis=1)  # PyTorch's gate order; i, f, o = 2*sigmoid - 1
        c[layer] = 0.5 * ((f + 1) * c[layer] + (i + 1) * g)
        h[layer] = 0.5 * (o + 1) * np.tanh(c[layer])
        x = h[layer]
    logits[:] = _times(x, w.head_w.T) + w.head_b


def _times(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` by torch (same memory, no copy), on torch's current threads."""
    return (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()


@njit(cache=True, fastmath=_SUM_MATH)
def lstm_step(codes, h, c, w, sounding_since, key, age_shares, logits):
    """``lstm_products`` as loops, one stream after the other. ``w``: ``LSTMWeights``, or
    ``tuple(weights)``, a microsecond cheaper per call (numba types a plain tuple in C)."""
    table_p, table_v, table_t, table_s, table_a, table_k, w_ih, w_hh, bias, head_w, head_b = w
    layers, streams, hidden = h.shape
    if not _shapes_agree(codes, h, c, w, sounding_since, key, age_shares, logits):
        raise ValueError("lstm_step: the arrays' shapes disagree with the weights'")
    for b in range(streams):
        if not (0 <= codes[b, 0] < table_p.shape[0] and 0 <= codes[b, 1] < table_v.shape[0]
                and 0 <= codes[b, 2] < table_t.shape[0]):
            raise ValueError("lstm_step: a code is outside its head's classes")
    gates = np.empty(4 * hidden, np.float32)
    held = np.empty(max(table_s.shape[0], table_a.shape[0]), np.int64)
    shares = np.zeros(table_k.shape[0], np.float32)
    for b in range(streams):
        n_held = 0
        for pitch in range(held.shape[0]):
            if not np.isnan(sounding_since[b, pitch]):
                held[n_held] = pitch
                n_held += 1
        total = key[b].sum() if table_k.shape[0] else 0.0
        for k in range(table_k.shape[0]):
            shares[k] = key[b, k] / total if total > 0 else 0.0
        # Layer 0's input projection: a sum of table rows, added row by row (walking down a
        # column instead strides across rows, and its speed then depends on where they lie).
        for j in range(4 * hidden):
            gates[j] = table_p[codes[b, 0], j] + table_v[codes[b, 1], j] + table_t[codes[b, 2], j]
        for k in range(n_held):  # a silent pitch's age share is 0: only the held ones add
            if table_s.shape[0]:
                _add_row(gates, 1.0, table_s[held[k]])
            if table_a.shape[0]:
                _add_row(gates, age_shares[b, held[k]], table_a[held[k]])
        for k in range(table_k.shape[0]):
            _add_row(gates, shares[k], table_k[k])
        for layer in range(layers):
            for j in range(4 * hidden):
                if layer == 0:
                    x = gates[j]
                else:
                    x = bias[layer, j] + _dot(w_ih[layer - 1, j], h[layer - 1, b])
                gates[j] = _tanh(x + _dot(w_hh[layer, j], h[layer, b]))
            for k in range(hidden):  # gates hold tanh: i, f, o = 2*sigmoid - 1
                i, f = gates[k], gates[hidden + k]
                g, o = gates[2 * hidden + k], gates[3 * hidden + k]
                c[layer, b, k] = 0.5 * ((f + 1) * c[layer, b, k] + (i + 1) * g)
                h[layer, b, k] = 0.5 * (o + 1) * _tanh(c[layer, b, k])
        for j in range(head_w.shape[0]):
            logits[b, j] = head_b[j] + _dot(head_w[j], h[layers - 1, b])


@njit(cache=True)
def _shapes_agree(codes, h, c, w, sounding_since, key, age_shares, logits):
    table_p, table_v, table_t, table_s, table_a, table_k, w_ih, w_hh, bias, head_w, head_b = w
    layers, streams, hidden = h.shape
    gates = 4 * hidden
    return (layers >= 1 and c.shape == h.shape and codes.shape[0] == streams
            and codes.shape[1] == 3
            and table_p.shape[1] == gates and table_v.shape[1] == gates
            and table_t.shape[1] == gates and table_s.shape[1] == gates
            and table_a.shape[1] == gates and table_k.shape[1] == gates
            and w_ih.shape[0] >= layers - 1 and w_ih.shape[1] == gates
            and w_ih.shape[2] == hidden
            and w_hh.shape[0] == layers and w_hh.shape[1] == gates
            and w_hh.shape[2] == hidden
            and bias.shape[0] == layers and bias.shape[1] == gates
            and head_w.shape[1] == hidden and head_b.shape[0] == head_w.shape[0]
            and logits.shape[0] == streams and logits.shape[1] == head_w.shape[0]
            and sounding_since.shape[0] == streams and key.shape[0] == streams
            and (table_s.shape[0] == 0 or table_s.shape[0] == sounding_since.shape[1])
            and (table_a.shape[0] == 0 or (table_a.shape[0] == sounding_since.shape[1]
                                           and age_shares.shape == sounding_since.shape))
            and (table_k.shape[0] == 0 or table_k.shape[0] == key.shape[1]))


@njit(cache=True)
def _tanh(x):
    """tanh through exp, which compiles to a call four times cheaper than tanh's."""
    return 2.0 / (1.0 + np.exp(-2.0 * x)) - 1.0


@njit(cache=True, fastmath=_SUM_MATH)
def _add_row(out, weight, row):
    for j in range(out.shape[0]):  # callers check that row is as long
        out[j] += weight * row[j]


@njit(cache=True, fastmath=_SUM_MATH)
def _dot(a, b):
    acc = np.float32(0.0)
    for k in range(a.shape[0]):  # callers check that b is as long
        acc += a[k] * b[k]
    return acc
