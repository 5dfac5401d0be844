"""Baselines on hand-built code sequences whose NLLs are worked out by hand below."""
import numpy as np
import pytest

from midilstm import baselines as b

SIZES = (89, 128, 33)


def piece(pitches, velocities=None, times=None):
    n = len(pitches)
    velocities = [80] * n if velocities is None else velocities
    times = [1] * n if times is None else times
    return np.stack([pitches, velocities, times], axis=1).astype(np.int64)


ALTERNATING = piece([0, 1] * 500, [80, 0] * 500, [0, 5] * 500)


def test_bigram_on_a_strictly_alternating_sequence_is_nearly_certain():
    result = b.bigram([ALTERNATING], SIZES).evaluate([ALTERNATING])
    for head in ("pitch", "velocity", "time"):
        assert result[f"nll_{head}"] < 0.05
        assert result[f"acc_{head}"] == 1.0
    assert result["n_targets"] == 999


def test_unigram_on_alternating_costs_one_bit_per_head():
    result = b.unigram([ALTERNATING], SIZES).evaluate([ALTERNATING])
    for head in ("pitch", "velocity", "time"):
        assert b.to_bits(result[f"nll_{head}"]) == pytest.approx(1.0, abs=0.02)
    assert result["nll"] == pytest.approx(sum(result[f"nll_{h}"] for h in ("pitch", "velocity", "time")))


def test_unigram_hand_value_with_add_alpha():
    # targets (events 1..) of [0, 0, 1, 2]: classes 0, 1, 2 once each; 4 classes, alpha 1
    train = [piece([0, 0, 1, 2])]
    model = b.unigram(train, (4, 128, 33), alpha=1.0)
    val = [piece([3, 3])]  # one target: class 3, never seen: (0 + 1) / (3 + 4)
    assert model.evaluate(val)["nll_pitch"] == pytest.approx(-np.log(1 / 7))


def test_repeat_last_fits_eps_as_the_fraction_of_changes():
    # 5 pieces of [0, 0, 0, 0, 7]: within pieces 3 repeats and 1 change -> eps = 1/4
    train = [piece([0, 0, 0, 0, 7])] * 5
    result = b.repeat_last(train, SIZES).evaluate(train)
    eps, n = 0.25, SIZES[0]
    expected = -(0.75 * np.log(1 - eps) + 0.25 * np.log(eps / (n - 1)))
    assert result["nll_pitch"] == pytest.approx(expected)
    assert result["nll_velocity"] == pytest.approx(-np.log(1 - b.MIN_EPS))  # never changes


def test_targets_never_cross_piece_boundaries():
    # each piece is constant; only a boundary-crossing target would be a change
    train = [piece([0, 0, 0]), piece([5, 5, 5])]
    result = b.repeat_last(train, SIZES).evaluate(train)
    assert result["n_targets"] == 4
    assert result["nll_pitch"] == pytest.approx(-np.log(1 - b.MIN_EPS))
    bigram = b.bigram(train, SIZES).evaluate([piece([0, 5])])
    # 0 -> 5 never happened within a piece: only the prior's share of unigram(5) remains.
    # unigram(5) = (2 + 0.1) / (4 + 0.1 * 89); row 0 holds 2 counts + 0.1 * 89 pseudo-counts
    alpha_v = 0.1 * 89
    unigram_5 = 2.1 / (4 + alpha_v)
    assert bigram["nll_pitch"] == pytest.approx(-np.log(alpha_v * unigram_5 / (2 + alpha_v)))


def test_bigram_unseen_context_falls_back_to_the_unigram():
    train = [ALTERNATING]
    unseen = [piece([40, 1])]  # previous pitch 40 never seen
    assert b.bigram(train, SIZES).evaluate(unseen)["nll_pitch"] == pytest.approx(
        b.unigram(train, SIZES).evaluate(unseen)["nll_pitch"])


def test_baseline_table_ranks_bigram_first_on_alternating_music():
    table = b.baseline_table([ALTERNATING], [ALTERNATING[:100]], SIZES)
    assert set(table) == {"unigram", "bigram", "repeat_last"}
    assert table["bigram"]["nll"] < table["unigram"]["nll"] < table["repeat_last"]["nll"]


def test_pieces_too_short_have_no_targets_and_bad_codes_are_refused():
    assert np.isnan(b.unigram([ALTERNATING], SIZES).evaluate([piece([3])])["nll"])
    with pytest.raises(ValueError, match="out of range"):
        b.unigram([piece([0, 89])], SIZES)


def test_to_bits():
    assert b.to_bits(np.log(2)) == pytest.approx(1.0)
    assert b.to_bits(0.0) == 0.0
