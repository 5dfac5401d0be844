"""One generation step, compiled: the sampler, the note bookkeeping and a small LSTM step as loops.

Sampling one event is a few hundred tiny operations on three short arrays. Called one by one
from Python, numpy's operations cost a microsecond of overhead each, far more than their
arithmetic. So these loops are compiled once by numba (``cache=True`` keeps the machine code in
``__pycache__``) and run at C speed:

* ``sample_step``  per head: note-hygiene masks, temperature, top-k, top-p, then one draw
* ``track_notes``  which pitches sound since when, and the clock of each stream
* ``lstm_step``    the network step for a few streams (for many, ``generate`` uses numpy's
  matrix products, which are faster there)

Compiled loops do not check their indices, and the arrays' sizes come from a model and a codec
that may come from a file. So every kernel first checks that its arrays agree in shape and that
the codes it indexes with are in range, raising ``ValueError`` otherwise: whatever it is given,
it never reads or writes out of bounds. ``check_step_arrays`` makes the same checks once, in
Python, with a message that names the array at fault.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .sounding import N_PITCH_CLASSES

# Sums may be reordered (vectorised); NaN and inf keep their meaning.
_SUM_MATH = {"reassoc", "contract"}


def check_step_arrays(sizes, table_p, table_v, table_t, table_s, table_k, w_ih, w_hh, bias, head_w,
                      head_b, h, c, logits, probs, sounding_since, key, time_centers) -> None:
    """Raise ``ValueError`` (one line naming the array) unless the arrays the kernels below are
    given agree in shape and dtype with the codec's ``sizes`` (pitch, velocity, time classes)
    and with the state ``h`` (layers, streams, hidden): a model and a codec that disagree are
    refused here, once, instead of being caught step by step by the kernels' own checks."""
    if len(sizes) != 3 or not all(int(n) >= 1 for n in sizes):
        raise ValueError(f"step arrays: sizes must be three class counts >= 1, not {sizes}")
    if not (isinstance(h, np.ndarray) and h.ndim == 3 and h.dtype == np.float32):
        raise ValueError("step arrays: h must be a float32 array (layers, streams, hidden)")
    n_pitch, n_velocity, n_time = (int(n) for n in sizes)
    layers, streams, hidden = h.shape
    gates, outputs, f32 = 4 * hidden, n_pitch + n_velocity + n_time, np.float32
    expected = {"table_p": (table_p, (n_pitch, gates), f32),
                "table_v": (table_v, (n_velocity, gates), f32),
                "table_t": (table_t, (n_time, gates), f32),
                "table_s": (table_s, (n_pitch if len(table_s) else 0, gates), f32),
                "table_k": (table_k, (N_PITCH_CLASSES if len(table_k) else 0, gates), f32),
                "w_ih": (w_ih, (max(layers - 1, 1), gates, hidden), f32),
                "w_hh": (w_hh, (layers, gates, hidden), f32),
                "bias": (bias, (layers, gates), f32),
                "head_w": (head_w, (outputs, hidden), f32), "head_b": (head_b, (outputs,), f32),
                "c": (c, h.shape, f32), "logits": (logits, (streams, outputs), f32),
                "probs": (probs, (streams, outputs), np.float64),
                "sounding_since": (sounding_since, (streams, n_pitch), np.float64),
                "key": (key, (streams, N_PITCH_CLASSES), np.float64),
                "time_centers": (time_centers, (n_time,), np.float64)}
    for name, (array, shape, dtype) in expected.items():
        if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
            got = (f"{array.shape} {array.dtype}" if isinstance(array, np.ndarray)
                   else type(array).__name__)
            raise ValueError(f"step arrays: {name} is {got}, but sizes "
                             f"{(n_pitch, n_velocity, n_time)} with {layers} layer(s) of {hidden} "
                             f"units and {streams} stream(s) need {shape} {np.dtype(dtype)}")


@njit(cache=True, fastmath=_SUM_MATH)
def lstm_step(codes, h, c, table_p, table_v, table_t, table_s, sounding_since, table_k, key, w_ih,
              w_hh, bias, head_w, head_b, logits):
    """The same step as ``Improviser._numpy_step``, as loops, one stream after the other.

    ``table_s`` (pitches, 4*hidden) holds what each sounding pitch adds to the first layer's
    input, ``table_k`` (12, 4*hidden) what each pitch class's share of the key counts ``key``
    (streams, 12) adds (no rows: a model that does not read them); ``sounding_since`` is NaN
    for a silent pitch.

    Weight matrices are PyTorch's (outputs, inputs) layout, with the input, forget and output
    gates pre-scaled by 1/2 so that tanh gives every nonlinearity; ``w_ih`` (layers-1, 4*hidden,
    hidden) and ``bias`` (layers, 4*hidden) serve layers 1 and up (layer 0 uses the tables,
    which include its bias).
    """
    layers, streams, hidden = h.shape
    if not (_lstm_shapes_agree(codes, h, c, table_p, table_v, table_t, w_ih, w_hh, bias, head_w,
                               head_b, logits)
            and table_s.shape[1] == 4 * hidden and sounding_since.shape[0] == streams
            and (table_s.shape[0] == 0 or table_s.shape[0] == sounding_since.shape[1])
            and table_k.shape[1] == 4 * hidden and key.shape[0] == streams
            and (table_k.shape[0] == 0 or table_k.shape[0] == key.shape[1])):
        raise ValueError("lstm_step: the arrays' shapes disagree (see step.check_step_arrays)")
    for b in range(streams):
        if not (0 <= codes[b, 0] < table_p.shape[0] and 0 <= codes[b, 1] < table_v.shape[0]
                and 0 <= codes[b, 2] < table_t.shape[0]):
            raise ValueError("lstm_step: a code is outside its head's classes")
    gates = np.empty(4 * hidden, np.float32)
    held = np.empty(table_s.shape[0], np.int64)
    shares = np.zeros(table_k.shape[0], np.float32)
    for b in range(streams):
        n_held = 0
        for pitch in range(table_s.shape[0]):
            if not np.isnan(sounding_since[b, pitch]):
                held[n_held] = pitch
                n_held += 1
        total = key[b].sum() if table_k.shape[0] else 0.0
        for k in range(table_k.shape[0]):
            shares[k] = key[b, k] / total if total > 0 else 0.0
        for layer in range(layers):
            for j in range(4 * hidden):
                if layer == 0:  # one-hot input: table rows instead of a product
                    x = table_p[codes[b, 0], j] + table_v[codes[b, 1], j] + table_t[codes[b, 2], j]
                    for k in range(n_held):
                        x += table_s[held[k], j]
                    for k in range(table_k.shape[0]):
                        x += shares[k] * table_k[k, j]
                else:
                    x = bias[layer, j] + _dot(w_ih[layer - 1, j], h[layer - 1, b])
                gates[j] = _tanh(x + _dot(w_hh[layer, j], h[layer, b]))
            for k in range(hidden):  # gates hold tanh: i, f, o = 2*sigmoid - 1
                i, f, g, o = gates[k], gates[hidden + k], gates[2 * hidden + k], gates[3 * hidden + k]
                c[layer, b, k] = 0.5 * ((f + 1) * c[layer, b, k] + (i + 1) * g)
                h[layer, b, k] = 0.5 * (o + 1) * _tanh(c[layer, b, k])
        for j in range(head_w.shape[0]):
            logits[b, j] = head_b[j] + _dot(head_w[j], h[layers - 1, b])


@njit(cache=True)
def _lstm_shapes_agree(codes, h, c, table_p, table_v, table_t, w_ih, w_hh, bias, head_w, head_b,
                       logits):
    layers, streams, hidden = h.shape
    gates = 4 * hidden
    return (layers >= 1 and c.shape == h.shape and codes.shape[0] == streams
            and codes.shape[1] == 3
            and table_p.shape[1] == gates and table_v.shape[1] == gates
            and table_t.shape[1] == gates
            and w_ih.shape[0] >= layers - 1 and w_ih.shape[1] == gates and w_ih.shape[2] == hidden
            and w_hh.shape[0] == layers and w_hh.shape[1] == gates and w_hh.shape[2] == hidden
            and bias.shape[0] == layers and bias.shape[1] == gates
            and head_w.shape[1] == hidden and head_b.shape[0] == head_w.shape[0]
            and logits.shape[0] == streams and logits.shape[1] == head_w.shape[0])


@njit(cache=True)
def _tanh(x):
    """tanh through exp, which compiles to a call four times cheaper than tanh's."""
    return 2.0 / (1.0 + np.exp(-2.0 * x)) - 1.0


@njit(cache=True, fastmath=_SUM_MATH)
def _dot(a, b):
    acc = np.float32(0.0)
    for k in range(a.shape[0]):  # callers check that b is as long
        acc += a[k] * b[k]
    return acc


# How a head's classes are masked by the notes sounding in a stream (note hygiene).
ALL, SOUNDING, SILENT, OFF_NEEDS_A_NOTE, NOT_AT_ONCE, ONLY_OFF = 0, 1, 2, 3, 4, 5


@njit(cache=True)
def sample_step(logits, sizes, inv_temperature, top_k, top_p, max_polyphony, sounding_since,
                now_s, uniforms, codes, probs):
    """Draw one event per stream: velocity first (start or end a note? no start while
    ``max_polyphony`` notes sound), then a pitch that choice allows, then the time class (not
    "at once" for an off of a note that started at ``now_s``). Writes ``codes`` (B, 3) and the
    distributions sampled from into ``probs`` (B, outputs). ``top_k`` 0, ``top_p`` 1 and
    ``max_polyphony`` 0 mean "off"; a silent pitch has ``sounding_since`` NaN."""
    streams, outputs = logits.shape
    if not (len(sizes) == 3 and sizes[0] >= 1 and sizes[1] >= 1 and sizes[2] >= 1
            and sizes[0] + sizes[1] + sizes[2] == outputs and probs.shape == logits.shape
            and len(inv_temperature) == 3 and sounding_since.shape[0] == streams
            and sounding_since.shape[1] == sizes[0] and now_s.shape[0] == streams
            and uniforms.shape[0] == streams and uniforms.shape[1] == 3
            and codes.shape[0] == streams and codes.shape[1] == 3):
        raise ValueError("sample_step: the arrays' shapes disagree with the sizes "
                         "(see step.check_step_arrays)")
    n_pitch, n_velocity = sizes[0], sizes[1]
    v0, t0 = n_pitch, n_pitch + n_velocity
    for b in range(streams):
        playing = sounding_since[b]
        full = 0 < max_polyphony <= np.sum(~np.isnan(playing))
        _distribution(logits[b, v0:t0], inv_temperature[1], ONLY_OFF if full else OFF_NEEDS_A_NOTE,
                      playing, top_k, top_p, probs[b, v0:t0])
        velocity = _draw(probs[b, v0:t0], uniforms[b, 1])
        mask = SOUNDING if velocity == 0 else SILENT
        if not _distribution(logits[b, :v0], inv_temperature[0], mask, playing, top_k, top_p,
                             probs[b, :v0]):  # nothing allowed (every pitch sounding): no mask
            _distribution(logits[b, :v0], inv_temperature[0], ALL, playing, top_k, top_p,
                          probs[b, :v0])
        pitch = _draw(probs[b, :v0], uniforms[b, 0])
        # Ending a note in the instant it started would make it last no time at all.
        instant = velocity == 0 and playing[pitch] == now_s[b]
        _distribution(logits[b, t0:], inv_temperature[2], NOT_AT_ONCE if instant else ALL,
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
def _distribution(logits, inv_temperature, mask, playing, top_k, top_p, out):
    """Softmax of ``logits * inv_temperature`` over the allowed classes, cut to the top k and
    to the smallest set holding ``top_p`` of the probability, renormalised into ``out``.
    Returns False when no class is allowed."""
    n = logits.shape[0]
    any_playing = mask == OFF_NEEDS_A_NOTE and not np.isnan(playing).all()
    peak = -np.inf
    for i in range(n):
        out[i] = logits[i] * inv_temperature if _allowed(i, mask, playing, any_playing) else -np.inf
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
    """Inverse CDF: the first class whose cumulative probability exceeds ``u`` (in [0, 1))."""
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


@njit(cache=True)
def track_notes(codes, time_centers, max_note_s, now_s, sounding_since, key, key_decay, end_held):
    """Advance each stream's clock, its sounding notes and its key counts (``key`` (streams,
    12): a note-on multiplies them by ``key_decay`` and adds 1 to its pitch class) by the event
    in ``codes``. With ``end_held``, first replace the event by a note-off (at once) if a note
    has been held longer than ``max_note_s``."""
    streams, n_pitch = sounding_since.shape
    if not (codes.shape[0] == streams and codes.shape[1] == 3 and now_s.shape[0] == streams
            and key.shape[0] == streams and key.shape[1] >= 1):
        raise ValueError("track_notes: the arrays' shapes disagree (see step.check_step_arrays)")
    for b in range(streams):
        if not (0 <= codes[b, 0] < n_pitch and 0 <= codes[b, 2] < time_centers.shape[0]):
            raise ValueError("track_notes: a code is outside its head's classes")
    for b in range(streams):
        if end_held:
            for pitch in range(sounding_since.shape[1]):
                if now_s[b] - sounding_since[b, pitch] > max_note_s:  # NaN compares False
                    codes[b, 0], codes[b, 1], codes[b, 2] = pitch, 0, 0
                    break
        now_s[b] += time_centers[codes[b, 2]]
        pitch = codes[b, 0]
        if codes[b, 1] == 0:
            sounding_since[b, pitch] = np.nan
        else:
            if np.isnan(sounding_since[b, pitch]):
                sounding_since[b, pitch] = now_s[b]
            key[b] *= key_decay
            key[b, pitch % key.shape[1]] += 1.0
