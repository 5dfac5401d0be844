"""The numpy synthesiser: loudness, pitch, envelopes, determinism, WAV files, optional extras
(reading WAVs back, fingerprints and fluidsynth live in helpers_audio: only tests use them)."""
import hashlib
import wave

import helpers_audio
import numpy as np
import pytest
from helpers_audio import audio_hash, read_wav

from midilstm import audio
from midilstm.events import NOTE_DTYPE, events_to_notes, make_events

SR = 16000


def one_note(pitch=69, velocity=100, duration_s=1.0):
    return make_events([(pitch, velocity, 0.0), (pitch, 0, duration_s)])


def test_single_note_peak_is_normalisation_level_and_length_includes_release():
    samples = audio.render(one_note(), SR)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert np.abs(samples).max() == pytest.approx(audio.PEAK, abs=1e-6)
    assert len(samples) == int(np.ceil((1.0 + audio.RELEASE_S) * SR))


def test_fundamental_frequency_is_the_notes_pitch():
    samples = audio.render(one_note(pitch=69), SR)  # A4 = 440 Hz
    spectrum = np.abs(np.fft.rfft(samples))
    freqs_hz = np.fft.rfftfreq(len(samples), 1 / SR)
    assert freqs_hz[spectrum.argmax()] == pytest.approx(440.0, abs=2.0)


def test_velocity_scales_amplitude():
    # two A4s, velocity 100 then 50, far apart: the second peaks at half the first
    events = make_events([(69, 100, 0.0), (69, 0, 0.5), (69, 50, 1.0), (69, 0, 0.5)])
    samples = audio.render(events, SR)
    first, second = np.abs(samples[:SR]).max(), np.abs(samples[int(1.5 * SR):]).max()
    assert first == pytest.approx(audio.PEAK, abs=1e-6)
    assert second / first == pytest.approx(0.5, rel=0.02)


def test_long_held_note_fades_naturally():
    samples = audio.render(one_note(pitch=60, duration_s=10.0), SR)
    start_peak = np.abs(samples[:SR // 2]).max()
    late_peak = np.abs(samples[8 * SR:9 * SR]).max()
    assert late_peak < 0.05 * start_peak


def test_note_ends_with_a_release_not_a_click():
    samples = audio.render(one_note(duration_s=0.5), SR)
    assert np.abs(samples[-20:]).max() < 0.01
    assert abs(samples[0]) < 1e-6  # the attack starts at zero


def test_chord_is_summed_and_still_normalised():
    chord = make_events([(60, 90, 0.0), (64, 90, 0.0), (67, 90, 0.0),
                         (60, 0, 1.0), (64, 0, 0.0), (67, 0, 0.0)])
    samples = audio.render(chord, SR)
    assert np.abs(samples).max() == pytest.approx(audio.PEAK, abs=1e-6)
    single = audio.render(one_note(pitch=60), SR)
    assert not np.allclose(samples, single)


def test_same_input_same_hash_and_different_input_different_hash():
    events = make_events([(60, 80, 0.0), (60, 0, 0.3), (62, 70, 0.1), (62, 0, 0.4)])
    assert audio_hash(audio.render(events, SR)) == audio_hash(audio.render(events, SR))
    other = events.copy()
    other["pitch"][2:] = 64
    assert audio_hash(audio.render(other, SR)) != audio_hash(audio.render(events, SR))


def test_notes_and_events_render_identically():
    events = make_events([(60, 80, 0.0), (64, 80, 0.25), (60, 0, 0.5), (64, 0, 0.25)])
    notes, _ = events_to_notes(events)
    assert np.array_equal(audio.render(notes, SR), audio.render(events, SR))


def test_no_notes_gives_silence_of_the_events_length():
    orphan_off = make_events([(60, 0, 2.0)])
    samples = audio.render(orphan_off, SR)
    assert len(samples) == 2 * SR and not samples.any()
    assert len(audio.render(np.zeros(0, NOTE_DTYPE), SR)) == 0


def test_max_seconds_cuts_the_render():
    samples = audio.render(one_note(duration_s=5.0), SR, max_seconds=1.5)
    assert len(samples) == int(1.5 * SR)
    assert np.abs(samples).max() == pytest.approx(audio.PEAK, abs=1e-6)


def test_many_overlapping_notes_mix_to_the_peak_level():
    n = 400
    rng = np.random.default_rng(0)
    notes = np.zeros(n, NOTE_DTYPE)
    notes["start_s"] = np.sort(rng.uniform(0, 60, n))
    notes["end_s"] = notes["start_s"] + rng.uniform(0.05, 2.0, n)
    notes["pitch"] = rng.integers(36, 96, n)
    notes["velocity"] = rng.integers(30, 127, n)
    samples = audio.render(notes, SR)
    assert len(samples) >= int(notes["end_s"].max() * SR)
    assert np.abs(samples).max() == pytest.approx(audio.PEAK, abs=1e-6)


def test_wav_round_trip_and_hash_is_sha256_of_the_pcm(tmp_path):
    samples = audio.render(one_note(), SR)
    path = audio.write_wav(samples, tmp_path / "out" / "note.wav", SR)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SR)
        frames = w.readframes(w.getnframes())
    assert audio_hash(samples) == hashlib.sha256(frames).hexdigest()
    back, rate = read_wav(path)
    assert rate == SR and np.abs(back - samples).max() <= 1 / 32767 + 1e-7
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def test_wav_clips_out_of_range_samples(tmp_path):
    path = audio.write_wav(np.array([2.0, -2.0, 0.0], np.float32), tmp_path / "c.wav", SR)
    back, _ = read_wav(path)
    assert back.tolist() == [1.0, -1.0, 0.0]


def test_fluidsynth_absent_is_reported_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(helpers_audio.shutil, "which", lambda name: None)
    assert helpers_audio.fluidsynth_available() is False
    with pytest.raises(RuntimeError, match="fluidsynth"):
        helpers_audio.render_fluidsynth(tmp_path / "x.mid", tmp_path / "x.sf2")


def test_player_returns_an_ipython_audio_widget():
    display = pytest.importorskip("IPython.display")
    widget = audio.player(audio.render(one_note(), SR), SR)
    assert isinstance(widget, display.Audio)


def test_a_piece_too_long_for_memory_is_cut_with_a_warning(monkeypatch):
    monkeypatch.setattr(audio, "MAX_SAMPLES", 16000)
    notes = np.array([(0.0, 0.5, 60, 80), (5.0, 5.5, 62, 80)], NOTE_DTYPE)
    with pytest.warns(UserWarning, match="rendering the first 1 s only"):
        samples = audio.render(notes, 16000)
    assert len(samples) == 16000


def test_a_piano_roll_of_too_many_notes_is_cut_and_says_so(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from midilstm import plots
    from midilstm.events import notes_to_events

    monkeypatch.setattr(plots, "MAX_ROLL_NOTES", 3)
    notes = np.array([(float(i), i + 0.5, 60, 80) for i in range(5)], NOTE_DTYPE)
    fig, ax = plt.subplots()
    plots.piano_roll(ax, notes_to_events(notes), "piece")
    assert len(ax.patches) == 3 and ax.get_title() == "piece (first 3 s: 3 notes)"
    plt.close(fig)
