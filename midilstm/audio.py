"""Hear the music without installing anything: a small additive synthesiser in numpy.

Every note becomes a few harmonic partials shaped by an attack/decay/sustain/release envelope and
a natural exponential fade (a held piano note dies away; a held organ note would not, and a
generated "note that never ends" would drone for minutes). Notes are summed, then the mix is
scaled to a fixed peak, so the result is never clipped and never inaudibly quiet.

Rendering is deterministic (no noise, every partial starts at phase 0): the same events give
the same samples, so a WAV written twice is the same file.

    samples = render(events)                  # float32 mono in [-PEAK, PEAK]
    write_wav(samples, "sample.wav", 16000)
    player(samples, 16000)                    # in a notebook
"""
from __future__ import annotations

import io
import warnings
import wave
from pathlib import Path

import numpy as np

from .events import events_to_notes
from .files import write_bytes_atomic

PEAK = 0.9                                            # the mix's peak after normalisation
PARTIAL_AMPLITUDES = (1.0, 0.5, 0.25, 0.12, 0.06)     # harmonics 1..5, a soft piano-ish timbre
ATTACK_S = 0.005                                      # short enough to sound struck, long enough not to click
DECAY_S = 0.08                                        # fall from the attack peak to the sustain level
SUSTAIN_LEVEL = 0.6
RELEASE_S = 0.12                                      # fade after the note-off (no click at the end)
FADE_TAU_S = 1.2                                      # natural decay time constant at middle C
SILENT_LEVEL = 1e-4                                   # -80 dB: stop computing a note below this
MAX_SAMPLES = 2**26                                   # the float64 mix: 512 MB, 70 min at 16 kHz


def render(events_or_notes: np.ndarray, sample_rate: int = 16000, *,
           max_seconds: float | None = None) -> np.ndarray:
    """Synthesise events (``EVENT_DTYPE``) or notes (``NOTE_DTYPE``) to float32 mono samples.

    The length is the last note's end plus ``RELEASE_S`` (or the events' total time if there are
    no notes: silence), cut at ``max_seconds``. A piece longer than ``MAX_SAMPLES`` samples is
    cut there, with a warning: a legal file may last hours, and its mix would not fit in memory.
    Velocity scales amplitude linearly before the mix is normalised to ``PEAK``.
    """
    notes = _as_notes(events_or_notes)
    length_s = _length_s(events_or_notes, notes)
    if max_seconds is not None:
        length_s = min(length_s, max_seconds)
    if length_s * sample_rate > MAX_SAMPLES:
        warnings.warn(f"render: {length_s:.0f} s at {sample_rate} Hz would need "
                      f"{length_s * sample_rate * 8 / 2**30:.1f} GB; rendering the first "
                      f"{MAX_SAMPLES / sample_rate:.0f} s only (pass max_seconds to choose)",
                      stacklevel=2)
        length_s = MAX_SAMPLES / sample_rate
    out = np.zeros(int(np.ceil(length_s * sample_rate)), np.float64)
    for start_s, end_s, pitch, velocity in notes.tolist():
        first = round(start_s * sample_rate)
        if first >= len(out):
            continue
        tone = _note(end_s - start_s, pitch, velocity, sample_rate)[:len(out) - first]
        out[first:first + len(tone)] += tone
    peak = np.abs(out).max() if len(out) else 0.0
    if peak > 0:
        out *= PEAK / peak
    return out.astype(np.float32)


def _as_notes(events_or_notes: np.ndarray) -> np.ndarray:
    if "start_s" in (events_or_notes.dtype.names or ()):
        return events_or_notes
    return events_to_notes(events_or_notes)[0]


def _length_s(events_or_notes: np.ndarray, notes: np.ndarray) -> float:
    if len(notes):
        return float(notes["end_s"].max()) + RELEASE_S
    if "delta_s" in (events_or_notes.dtype.names or ()):
        return float(events_or_notes["delta_s"].sum())
    return 0.0


def _note(duration_s: float, pitch: int, velocity: int, sample_rate: int) -> np.ndarray:
    """One note: harmonic partials times its envelope, vectorised over samples."""
    freq_hz = 440.0 * 2.0 ** ((pitch - 69) / 12)
    tau_s = FADE_TAU_S * np.sqrt(261.63 / freq_hz)    # high notes die faster, as on a piano
    audible_s = min(duration_s + RELEASE_S, tau_s * np.log(1 / SILENT_LEVEL))
    t = np.arange(int(np.ceil(audible_s * sample_rate))) / sample_rate
    tone = np.zeros_like(t)
    for k, amplitude in enumerate(PARTIAL_AMPLITUDES, start=1):
        if k * freq_hz < sample_rate / 2:             # above Nyquist it would alias
            tone += amplitude * np.sin(2 * np.pi * k * freq_hz * t)
    return tone * _envelope(t, duration_s, tau_s) * (velocity / 127)


def _envelope(t: np.ndarray, duration_s: float, tau_s: float) -> np.ndarray:
    """Attack -> decay -> sustain, times a natural exponential fade, then a linear release."""
    attack = np.clip(t / ATTACK_S, 0, 1)
    decay = SUSTAIN_LEVEL + (1 - SUSTAIN_LEVEL) * np.exp(-np.maximum(t - ATTACK_S, 0) / DECAY_S)
    release = np.clip(1 - (t - duration_s) / RELEASE_S, 0, 1)
    return attack * decay * np.exp(-t / tau_s) * release


# --- files -------------------------------------------------------------------------------------
def _to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> little-endian int16 (values outside are clipped)."""
    clipped = np.clip(np.asarray(samples, np.float64), -1.0, 1.0)
    return np.round(clipped * 32767).astype("<i2")


def write_wav(samples: np.ndarray, path, sample_rate: int) -> Path:
    """Write mono 16-bit PCM WAV atomically; returns the path."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(_to_pcm16(samples).tobytes())
    return write_bytes_atomic(path, buffer.getvalue())


# --- notebooks ---------------------------------------------------------------------------------
def player(samples: np.ndarray, sample_rate: int):
    """An ``IPython.display.Audio`` widget for a notebook (IPython is imported only here)."""
    from IPython.display import Audio
    return Audio(np.asarray(samples), rate=sample_rate, normalize=False)
