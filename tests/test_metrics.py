"""Music metrics on hand-built pieces whose values are worked out by hand below."""

import numpy as np
import pytest

from midilstm import metrics as m
from midilstm.events import NOTE_DTYPE, make_events, notes_to_events


def notes(rows):
    """Events from (start_s, end_s, pitch) rows, velocity 80."""
    arr = np.array([(s, e, p, 80) for s, e, p in rows], NOTE_DTYPE)
    return notes_to_events(arr)


def melody(pitches, step_s=0.5):
    return notes([(i * step_s, (i + 1) * step_s, p) for i, p in enumerate(pitches)])


C_MAJOR = melody([60, 62, 64, 65, 67, 69, 71])  # 7 distinct pitch classes, all in C major


def test_c_major_scale_pitch_metrics():
    hist = m.pitch_class_histogram(C_MAJOR)
    expected = np.zeros(12)
    expected[[0, 2, 4, 5, 7, 9, 11]] = 1 / 7
    assert np.allclose(hist, expected)
    assert m.pitch_class_entropy(C_MAJOR) == pytest.approx(np.log2(7))
    assert m.scale_consistency(C_MAJOR) == pytest.approx(1.0)
    assert m.pitch_range(C_MAJOR) == 11


def test_chromatic_scale_is_maximally_uncertain_and_only_7_of_12_in_any_scale():
    chromatic = melody(range(60, 72))
    assert m.pitch_class_entropy(chromatic) == pytest.approx(np.log2(12))
    assert m.scale_consistency(chromatic) == pytest.approx(7 / 12)


def test_a_minor_melody_fits_a_scale_and_one_wrong_note_lowers_it():
    a_minor = melody([69, 71, 72, 74, 76, 77, 79, 81])
    assert m.scale_consistency(a_minor) == pytest.approx(1.0)
    with_f_sharp_and_c_sharp = melody([69, 71, 72, 74, 76, 78, 61, 81])
    # best scale (G major or E minor, or D major) holds 7 of the 8 notes
    assert m.scale_consistency(with_f_sharp_and_c_sharp) == pytest.approx(7 / 8)


def test_polyphony_of_a_chord_then_a_single_note():
    # three notes for 1 s, then one note for 1 s: mean sounding (3 + 1) / 2 = 2
    events = notes([(0, 1, 60), (0, 1, 64), (0, 1, 67), (1, 2, 72)])
    assert m.polyphony(events) == pytest.approx(2.0)
    assert m.polyphony_rate(events) == pytest.approx(0.5)
    assert m.polyphony_rate(events, threshold=4) == pytest.approx(0.0)


def test_silence_ratio_and_density_with_a_one_second_gap_in_four():
    events = notes([(0, 1.5, 60), (2.5, 4.0, 62)])
    assert m.silence_ratio(events) == pytest.approx(0.25)
    assert m.note_density(events) == pytest.approx(2 / 4)
    assert m.polyphony(events) == pytest.approx(1.0)  # silence does not count


def test_ioi_histogram_bins_chords_and_steps():
    # onsets 0, 0 (a chord), 0.5, 1.0: IOIs 0 s (bin 0) and twice 0.5 s
    events = notes([(0, 0.4, 60), (0, 0.4, 64), (0.5, 0.9, 62), (1.0, 1.4, 64)])
    hist = m.ioi_histogram(events)
    assert hist.shape == (len(m.IOI_EDGES_S) - 1,) and hist.sum() == pytest.approx(1.0)
    half_second_bin = np.searchsorted(m.IOI_EDGES_S, 0.5, side="right") - 1
    assert hist[0] == pytest.approx(1 / 3) and hist[half_second_bin] == pytest.approx(2 / 3)
    assert m.IOI_EDGES_S[half_second_bin] <= 0.5 < m.IOI_EDGES_S[half_second_bin + 1]


def test_ioi_longer_than_the_last_edge_lands_in_the_last_bin():
    hist = m.ioi_histogram(notes([(0, 1, 60), (30, 31, 60)]))
    assert hist[-1] == pytest.approx(1.0)


def test_longest_same_pitch_run_counts_consecutive_note_ons():
    events = melody([60, 62, 62, 62, 64, 62])
    assert m.longest_same_pitch_run(events) == 3
    assert m.longest_same_pitch_run(C_MAJOR) == 1


def test_ngram_repetition():
    assert m.ngram_repetition(melody([60] * 10)) == pytest.approx(6 / 7)  # 7 4-grams, 1 distinct
    assert m.ngram_repetition(C_MAJOR) == 0.0
    loop = melody([60, 62, 64] * 4)  # 12 notes, 9 4-grams, 3 distinct
    assert m.ngram_repetition(loop) == pytest.approx(6 / 9)
    assert m.ngram_repetition(loop, n=2) == pytest.approx(1 - 3 / 11)


def test_summary_is_scalars_and_empty_input_is_nan_or_zero():
    summary = m.summary(C_MAJOR)
    assert summary["n_notes"] == 7 and summary["span_s"] == pytest.approx(3.5)
    assert summary["pitch_class_entropy_bits"] == pytest.approx(np.log2(7))
    assert all(np.isscalar(v) and np.isfinite(v) for v in summary.values())
    empty = m.summary(make_events([]))
    assert np.isnan(empty["pitch_class_entropy_bits"]) and np.isnan(empty["silence_ratio"])
    assert empty["longest_same_pitch_run"] == 0 and empty["pitch_range_semitones"] == 0


def test_distances_are_zero_for_the_same_music_and_maximal_for_disjoint_pitch_classes():
    same = m.distances(C_MAJOR, [C_MAJOR, C_MAJOR])
    assert all(v == pytest.approx(0.0) for v in same.values())
    black_keys = melody([61, 63, 66, 68, 70])  # 5 pitch classes, none in C major
    far = m.distances(black_keys, C_MAJOR)
    assert far["pitch_class_tv"] == pytest.approx(1.0)
    assert far["pitch_class_js_bits"] == pytest.approx(1.0)
    assert far["ioi_tv"] == pytest.approx(0.0)  # same rhythm
    assert far["abs_diff_pitch_class_entropy_bits"] == pytest.approx(np.log2(7) - np.log2(5))


def test_jensen_shannon_hand_value():
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4); JS = (log2(4/3) + (1/2)log2(2/3) + (1/2)log2(2)) / 2
    expected = (np.log2(4 / 3) + 0.5 * np.log2(2 / 3) + 0.5) / 2
    assert m.jensen_shannon([1, 0], [0.5, 0.5]) == pytest.approx(expected)
    assert m.total_variation([1, 0], [0.5, 0.5]) == pytest.approx(0.5)


# --- memorisation ----------------------------------------------------------------------------
def random_codes(rng, n, low=0, high=20):
    return rng.integers(low, high, (n, 3))


def test_a_sample_copying_20_training_events_gives_20():
    rng = np.random.default_rng(0)
    train = [random_codes(rng, 5000), random_codes(rng, 5000)]
    sample = random_codes(rng, 200, 20, 40)  # classes never in training: copies nothing
    sample[50:70] = train[1][1234:1254]
    assert m.longest_copied_stretch(sample, train) == 20
    assert m.longest_copied_stretch(sample[:, 0], [t[:, 0] for t in train]) >= 20
    assert m.longest_copied_stretch(random_codes(rng, 200, 20, 40), train) == 0


def test_a_copy_never_spans_two_training_pieces():
    rng = np.random.default_rng(1)
    train = [random_codes(rng, 300, 0, 50), random_codes(rng, 300, 50, 100)]
    sample = np.concatenate([train[0][-10:], train[1][:12]])
    assert m.longest_copied_stretch(sample, train) == 12
    assert m.longest_copied_stretch(sample, np.concatenate(train)) == 22


def test_longest_copied_stretch_matches_brute_force():
    rng = np.random.default_rng(2)

    def brute(a, b):
        return max([0] + [k for i in range(len(a)) for j in range(len(b))
                          for k in range(1, min(len(a) - i, len(b) - j) + 1)
                          if a[i:i + k] == b[j:j + k]])
    for _ in range(100):
        a, b = rng.integers(0, 3, rng.integers(0, 12)), rng.integers(0, 3, rng.integers(0, 30))
        assert m.longest_copied_stretch(a, b) == brute(a.tolist(), b.tolist())


def test_longest_copied_stretch_on_realistic_sizes():
    # Speed is measured in bench/, not here; this checks correctness at a realistic size.
    rng = np.random.default_rng(3)
    train = [random_codes(rng, 25_000, 0, 89) for _ in range(4)]
    sample = random_codes(rng, 1000, 0, 89)
    sample[400:437] = train[2][100:137]
    assert m.longest_copied_stretch(sample, train) == 37
