"""What the audio tests use and the package does not: reading a WAV back, a fingerprint of the
samples, and the optional fluidsynth renderer (a real piano sound from a SoundFont, used only
when the command-line program is installed). Moved here from ``midilstm.audio``: nothing in the
package, the notebooks or the benchmarks calls them."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from midilstm.audio import _to_pcm16


def read_wav(path) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV as float32 mono (channels averaged) and its sample rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        channels, sample_rate = w.getnchannels(), w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return (pcm.reshape(-1, channels).mean(axis=1) / 32767).astype(np.float32), sample_rate


def audio_hash(samples: np.ndarray) -> str:
    """sha256 hex digest of the int16 PCM the samples would be written as (``write_wav``)."""
    return hashlib.sha256(_to_pcm16(samples).tobytes()).hexdigest()


def fluidsynth_available() -> bool:
    """True when the ``fluidsynth`` command-line program is on the PATH."""
    return shutil.which("fluidsynth") is not None


def render_fluidsynth(midi_path, soundfont, sample_rate: int = 44100) -> np.ndarray:
    """Render a MIDI file with the ``fluidsynth`` program and a SoundFont (.sf2).

    Raises RuntimeError naming the fix when the program is not installed (the Python packages
    called ``fluidsynth`` on PyPI are not it: install the program, e.g. apt or brew).
    """
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RuntimeError("the fluidsynth program is not installed (apt install fluidsynth / "
                           "brew install fluid-synth); use midilstm.audio.render instead")
    for path in (midi_path, soundfont):
        if not Path(path).is_file():
            raise FileNotFoundError(path)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        subprocess.run([exe, "-ni", "-q", "-F", str(wav), "-r", str(int(sample_rate)),
                        str(soundfont), str(midi_path)], check=True, capture_output=True)
        samples, _ = read_wav(wav)
    return samples
