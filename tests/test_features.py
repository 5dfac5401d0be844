"""Yang & Lerch set evaluation: features worked out by hand, distances and densities against brute
force and torch, overlap and KL against the closed forms for two Gaussians."""
import math

import numpy as np
import pytest
import torch

from midilstm.events import make_events
from midilstm.features import (FEATURES, compare_sets, compare_with_ceiling, excerpt_features,
                               excerpts, inter_set_distances, intra_set_distances, kde,
                               overlap_and_kl)


def test_features_of_a_hand_built_excerpt():
    # C4 E4 G4 together for 1 s, then D5 alone 1.0..1.5 s
    events = make_events([(60, 80, 0.0), (64, 80, 0.0), (67, 80, 0.0), (60, 0, 1.0), (64, 0, 0.0),
                          (67, 0, 0.0), (74, 80, 0.0), (74, 0, 0.5)])
    f = excerpt_features(events)
    assert set(f) == set(FEATURES)
    expected_pch = np.zeros(12)
    expected_pch[[0, 4, 7, 2]] = 0.25
    np.testing.assert_allclose(f["pitch_class_histogram"], expected_pch)
    assert f["pitch_count"][0] == 4 and f["pitch_range"][0] == 14 and f["note_count"][0] == 4
    assert f["pitch_interval"][0] == pytest.approx((4 + 3 + 7) / 3)  # 60,64,67,74 in start order
    assert f["ioi"][0] == pytest.approx(1.0)  # onsets 0 and 1
    assert f["note_length"][0] == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert f["polyphony"][0] == pytest.approx((3 * 1.0 + 1 * 0.5) / 1.5)


def test_distances_match_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    brute_intra = sorted(math.dist(x[i], x[j]) for i in range(7) for j in range(i + 1, 7))
    brute_inter = sorted(math.dist(a, b) for a in x for b in y)
    np.testing.assert_allclose(sorted(intra_set_distances(x)), brute_intra)
    np.testing.assert_allclose(sorted(inter_set_distances(x, y)), brute_inter)


def test_kde_matches_a_torch_gaussian_mixture():
    samples = np.array([0.0, 0.5, 2.0, 2.2, 5.0])
    bandwidth = samples.std(ddof=1) * len(samples) ** -0.2  # Scott's rule, one dimension
    grid = np.linspace(-3, 8, 50)
    mixture = torch.distributions.Normal(torch.tensor(samples)[None, :], bandwidth)
    expected = mixture.log_prob(torch.tensor(grid)[:, None]).exp().mean(1).numpy()
    np.testing.assert_allclose(kde(samples, grid), expected, rtol=1e-10)


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.0, 2.0])
def test_overlap_and_kl_of_two_gaussians_match_the_closed_forms(shift):
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 4000), rng.normal(shift, 1, 4000)
    overlap, kl = overlap_and_kl(a, b)
    exact_overlap = 2 * 0.5 * math.erfc(shift / 2 / math.sqrt(2))  # 2 Phi(-d / 2)
    assert overlap == pytest.approx(exact_overlap, abs=0.03)
    # KL from densities estimated on samples is loose in the tails, hence the wider tolerance
    assert kl == pytest.approx(shift ** 2 / 2, abs=0.05 + 0.1 * shift ** 2)


def scale_walk(rng, n=40):
    pitch, triples = 60, []
    for _ in range(n):
        pitch = int(np.clip(pitch + rng.choice([-2, -1, 1, 2]), 48, 84))
        triples += [(pitch, 80, float(rng.choice([0.25, 0.5]))), (pitch, 0, 0.25)]
    return make_events(triples)


def test_real_against_real_overlaps_more_than_a_degenerate_model():
    rng = np.random.default_rng(2)
    real = [scale_walk(rng) for _ in range(30)]
    held_out = [scale_walk(rng) for _ in range(30)]
    stuck = [make_events([(60, 80, 0.0), (60, 0, 0.1)] * 40) for _ in range(30)]
    ceiling, degenerate = compare_sets(held_out, real), compare_sets(stuck, real)
    for name in ("pitch_class_histogram", "pitch_range", "pitch_count", "ioi"):
        assert ceiling[name]["overlap"] > 0.7 > degenerate[name]["overlap"]
        assert ceiling[name]["kl"] < degenerate[name]["kl"]
    with pytest.raises(ValueError, match="needs"):
        compare_sets(stuck, real[:1])


def test_excerpts_are_distinct_windows_inside_one_piece():
    # each event's pitch says where it is: piece p, position i -> pitch 20 p + i
    lengths = [5, 2, 8]
    pieces = [make_events([(20 * p + i, 80, 0.1) for i in range(n)])
              for p, n in enumerate(lengths)]
    length = 3
    # brute force: every window of 3 inside one piece (piece 1 is too short for any)
    every = {tuple(range(20 * p + s, 20 * p + s + length)) for p, n in enumerate(lengths)
             for s in range(n - length + 1)}
    drawn = excerpts(pieces, len(every), length, np.random.default_rng(0))
    assert sorted(tuple(e["pitch"].tolist()) for e in drawn) == sorted(every)  # all, once each
    fewer = excerpts(pieces, 4, length, np.random.default_rng(1))
    assert len({tuple(e["pitch"].tolist()) for e in fewer}) == 4
    assert {tuple(e["pitch"].tolist()) for e in fewer} <= every
    with pytest.raises(ValueError, match="only 9 windows"):
        excerpts(pieces, 10, length, np.random.default_rng(0))


def test_the_ceiling_is_the_other_real_set_scored_as_if_generated():
    rng = np.random.default_rng(3)
    held_out = [scale_walk(rng) for _ in range(12)]
    training = [scale_walk(rng) for _ in range(12)]
    generated = [make_events([(60, 80, 0.0), (60, 0, 0.1)] * 40) for _ in range(12)]
    result = compare_with_ceiling(generated, held_out, training)
    # a "model" that returns the training excerpts scores exactly the held-out ceiling, and one
    # that returns the held-out excerpts exactly the training-reference ceiling
    copies = compare_with_ceiling(training, held_out, training)
    assert copies["held_out"]["generated"] == result["held_out"]["ceiling"]
    copies = compare_with_ceiling(held_out, held_out, training)
    assert copies["training"]["generated"] == result["training"]["ceiling"]
    for reference in ("held_out", "training"):  # and the stuck model is far below both
        gen, ceiling = result[reference]["generated"], result[reference]["ceiling"]
        assert gen["pitch_range"]["overlap"] < 0.5 < ceiling["pitch_range"]["overlap"]
