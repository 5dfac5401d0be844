"""Training data: a split that does not leak, sequences that stay inside pieces, transposition."""
import numpy as np
import pytest

from midilstm.data import (count_targets, is_held_out, min_events_for_validation, split,
                           split_names, split_pieces, training_sequences, transpose,
                           validation_note)
from midilstm.errors import ParameterError
from midilstm.data import NO_VALIDATION


def marked_pieces(lengths):
    """Piece k: column 0 = k (which piece), column 1 = position in the piece, column 2 = 0."""
    return [np.stack([np.full(n, k), np.arange(n), np.zeros(n, int)], axis=1)
            for k, n in enumerate(lengths)]


# --- split_pieces -------------------------------------------------------------------------------
@pytest.mark.parametrize("n, fraction", [(100, 0.1), (57, 0.25), (20, 0.1)])
def test_one_piece_holds_out_its_contiguous_tail(n, fraction):
    piece = np.arange(n)
    train, val = split_pieces([piece], fraction)
    assert len(train) == len(val) == 1
    np.testing.assert_array_equal(np.concatenate([train[0], val[0]]), piece)  # nothing lost
    assert train[0][-1] < val[0][0]  # no overlap: validation is the tail
    assert len(val[0]) == pytest.approx(n * fraction, abs=1)


def test_a_piece_too_short_to_hold_some_out_is_all_training():
    for n in (2, 5, 15):
        piece = np.arange(n)
        train, val = split_pieces([piece], 0.1)
        assert val == [] and len(train) == 1
        np.testing.assert_array_equal(train[0], piece)
        assert "too little music" in validation_note([piece], val, 0.1)
        assert f">= {min_events_for_validation(0.1)} events" in validation_note([piece], val, 0.1)
    train, val = split_pieces([np.arange(16)], 0.1)
    assert [len(train[0]), len(val[0])] == [14, 2] and validation_note([np.arange(16)], val) is None


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.03, 0.9])
def test_min_events_for_validation_is_the_shortest_piece_that_splits(fraction):
    def splits(n):  # brute force: both sides of the cut hold a prediction (2 events)
        cut = round(n * (1 - fraction))
        return cut >= 2 and n - cut >= 2
    minimum = min_events_for_validation(fraction)
    assert splits(minimum) and not any(splits(n) for n in range(minimum))
    assert all(splits(n) for n in range(minimum, minimum + 200))  # and every longer piece
    assert len(split_pieces([np.arange(minimum)], fraction)[1]) == 1
    assert split_pieces([np.arange(minimum - 1)], fraction)[1] == []


def test_bad_fraction_or_no_pieces_is_refused_naming_the_parameter():
    for fraction in (0, 1, -0.5, 1.5, "0.1", None):
        with pytest.raises(ParameterError, match="parameter val_fraction"):
            split_pieces([np.arange(100)], fraction)
    with pytest.raises(ParameterError, match="parameter pieces"):
        split_pieces([], 0.1)


def test_count_targets_never_crosses_pieces():
    assert count_targets([np.arange(5), np.arange(1), np.arange(0), np.arange(2)]) == 4 + 0 + 0 + 1
    assert count_targets([]) == 0


def test_several_pieces_hold_out_whole_pieces_by_name():
    pieces = marked_pieces([30 + k for k in range(40)])
    names = [f"folder/piece_{k}.mid" for k in range(40)]
    parts = split(pieces, names, 0.2, seed=3)
    ids = lambda part: sorted(int(p[0, 0]) for p in part)  # noqa: E731
    assert sorted(ids(parts.train) + ids(parts.val)) == list(range(40))  # a partition
    for p in parts.train + parts.val:  # whole pieces, untouched
        np.testing.assert_array_equal(p, pieces[int(p[0, 0])])
    assert parts.val_names == [names[i] for i in ids(parts.val)]
    assert 2 <= len(parts.val) <= 16  # about 20% of 40
    # The rule is the name's: the same pieces are held out in any order, with others added,
    # whatever folder they sit in; the seed picks another split.
    order = np.random.default_rng(0).permutation(40)
    shuffled = split([pieces[i] for i in order], [f"x/piece_{i}.mid" for i in order], 0.2, 3)
    assert ids(shuffled.val) == ids(parts.val)
    more = split(pieces + pieces[:5], names + [f"new_{k}.mid" for k in range(5)], 0.2, 3)
    assert set(parts.val_names) == set(more.val_names) & set(names)
    assert split_pieces(pieces, 0.2, 3, names)[1] == parts.val  # the same rule, two views
    others = {tuple(ids(split(pieces, names, 0.2, seed=s).val)) for s in range(10)}
    assert len(others) > 1  # the seed decides which pieces
    for name in names:  # the corpus's rule, seed 0, is the same function
        assert is_held_out(name, 0.2) == (names.index(name) in split_names(names, 0.2)[1])


def test_several_pieces_keep_at_least_one_on_each_side():
    pieces = marked_pieces([10, 10])
    train, val = split_pieces(pieces, 0.01)
    assert len(train) == 1 and len(val) == 1
    train, val = split_pieces(pieces, 0.99)
    assert len(train) == 1 and len(val) == 1


# --- training_sequences -------------------------------------------------------------------------
def test_sequences_never_cross_pieces_and_are_contiguous():
    pieces = marked_pieces([100, 37, 250, 64])
    seqs = training_sequences(pieces, 16, np.random.default_rng(0))
    assert seqs.shape[1:] == (17, 3)
    for seq in seqs:
        assert (seq[:, 0] == seq[0, 0]).all()  # one piece
        np.testing.assert_array_equal(np.diff(seq[:, 1]), 1)  # consecutive events


def test_an_epoch_covers_nearly_every_transition_once_and_cuts_move():
    lengths = [100, 37, 250, 64]
    seq_len = 16
    pieces = marked_pieces(lengths)
    rng = np.random.default_rng(1)
    starts = []
    for _ in range(8):
        seqs = training_sequences(pieces, seq_len, rng)
        # transitions (piece, position -> position + 1) learned this epoch
        seen = [(int(s[0, 0]), int(p)) for s in seqs for p in s[:-1, 1]]
        assert len(seen) == len(set(seen))  # each at most once
        for k, n in enumerate(lengths):
            covered = sum(1 for piece, _ in seen if piece == k)
            assert covered >= (n - 1) - 2 * (seq_len - 1)  # lost: < seq_len at each end
            # everything away from the piece's two ends, every epoch
            interior = {(k, p) for p in range(seq_len - 1, n - seq_len)}
            assert interior <= set(seen)
        starts.append(sorted(int(s[0, 1]) for s in seqs if s[0, 0] == 2))
    assert len({tuple(s) for s in starts}) > 1  # cut points move between epochs


def test_sequences_are_shuffled_and_seeded():
    pieces = marked_pieces([400])
    a = training_sequences(pieces, 8, np.random.default_rng(5))
    b = training_sequences(pieces, 8, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not (np.diff(a[:, 0, 1]) > 0).all()  # not in piece order


def test_short_pieces_shrink_the_sequence_length():
    pieces = marked_pieces([6, 9])
    seqs = training_sequences(pieces, 64, np.random.default_rng(0))
    assert seqs.shape == (1, 9, 3)  # the longest piece, whole
    np.testing.assert_array_equal(seqs[0], pieces[1])
    seqs = training_sequences(marked_pieces([2]), 64, np.random.default_rng(0))
    assert seqs.shape == (1, 2, 3)  # one note: one prediction
    with pytest.raises(ParameterError, match="train_codes"):
        training_sequences(marked_pieces([1, 0]), 64, np.random.default_rng(0))


# --- transpose ----------------------------------------------------------------------------------
def test_transpose_shifts_whole_sequences_and_keeps_pitches_in_range():
    n_pitches = 20
    rng = np.random.default_rng(0)
    seqs = np.stack([rng.integers(0, n_pitches, (50, 9, 3)) % [n_pitches, 128, 5]])[0]
    seqs[0, :, 0] = [0] * 4 + [19] * 5  # spans the whole range: cannot move
    seqs[1, :, 0] = 10  # can move anywhere within 5 semitones
    before = seqs.copy()
    out = transpose(seqs, 5, n_pitches, np.random.default_rng(1))
    np.testing.assert_array_equal(seqs, before)  # input untouched
    assert out.shape == seqs.shape
    assert out[..., 0].min() >= 0 and out[..., 0].max() <= n_pitches - 1
    np.testing.assert_array_equal(out[..., 1:], seqs[..., 1:])  # only pitch moves
    shift = out[..., 0] - seqs[..., 0]
    assert (shift == shift[:, :1]).all()  # one shift per sequence
    assert np.abs(shift).max() <= 5
    assert (shift[0] == 0).all()
    assert len(np.unique(shift[:, 0])) > 3  # it does transpose


def test_transpose_off_returns_the_input():
    seqs = np.zeros((2, 3, 3), np.int64)
    assert transpose(seqs, 0, 10, np.random.default_rng(0)) is seqs


# --- tiny and huge music, end to end -------------------------------------------------------------
def melody_events(n_notes, seed=0):
    """n_notes notes in turn (2 events each), random pitches, a chord now and then."""
    from midilstm.events import make_events
    rng = np.random.default_rng(seed)
    triples = []
    for k in range(n_notes):
        pitch = int(rng.integers(48, 84))
        triples += [(pitch, int(rng.integers(40, 110)), float(rng.choice([0.0, 0.25, 0.5]))),
                    (pitch, 0, float(rng.choice([0.125, 0.25, 0.75])))]
    return make_events(triples)


@pytest.mark.parametrize("n_events", [2, 10, 100])
def test_tiny_pieces_go_through_the_whole_series(n_events, capsys):
    import torch
    from midilstm import baselines, metrics
    from midilstm.codec import EventCodec
    from midilstm.generate import generate
    from midilstm.sampling import SamplingConfig
    from midilstm.model import ModelConfig
    from midilstm.train import TrainConfig, evaluate, train

    events = melody_events(n_events // 2)
    assert len(events) == n_events
    train_events, val_events = split_pieces([events], 0.1)
    assert (val_events == []) == (n_events < min_events_for_validation(0.1))
    codec = EventCodec(n_time_bins=32).fit(train_events)
    train_codes = [codec.encode(e) for e in train_events]
    val_codes = [codec.encode(e) for e in val_events]
    config = TrainConfig(epochs=2, batch_size=64, seq_len=64)  # larger than the data
    torch.manual_seed(0)
    checkpoint = train(codec, train_codes, val_codes, config,
                       ModelConfig(sizes=codec.sizes, hidden_size=8), progress=False, log_every=1)
    assert len(checkpoint.history) == 2 and checkpoint.best_epoch >= 1
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]) == 2
    if val_codes:
        assert np.isfinite(evaluate(checkpoint.model, val_codes)["nll"])
    else:
        assert checkpoint.history[-1]["validation"] == NO_VALIDATION
    table = baselines.baseline_table(train_codes, val_codes, codec.sizes)
    for result in table.values():
        assert result["n_targets"] == count_targets(val_codes)
    out = generate(checkpoint.model, codec, events[:2], n_events=20, n_variations=2,
                   sampling=SamplingConfig(top_p=0.9))
    assert len(out) == 2
    summary = metrics.summary(events)
    assert summary["n_notes"] == n_events // 2 and summary["span_s"] > 0
    assert np.isfinite(summary["pitch_class_entropy_bits"]) and np.isfinite(summary["polyphony"])
    distances = metrics.distances(out, train_events)
    assert 0 <= distances["pitch_class_tv"] <= 1
    metrics.mean_summary(out)
    assert metrics.longest_copied_stretch(codec.encode(out[0]), train_codes) >= 0


def test_a_100000_note_piece_goes_through_split_codec_training_and_metrics():
    import torch
    from midilstm import baselines, metrics
    from midilstm.codec import EventCodec
    from midilstm.model import ModelConfig
    from midilstm.train import TrainConfig, train

    events = melody_events(100_000)
    train_events, val_events = split_pieces([events], 0.1)
    assert len(val_events[0]) == 20_000
    codec = EventCodec().fit(train_events)
    train_codes, val_codes = [codec.encode(train_events[0])], [codec.encode(val_events[0])]
    torch.manual_seed(0)
    checkpoint = train(codec, train_codes, val_codes, TrainConfig(epochs=1, batch_size=512),
                       ModelConfig(sizes=codec.sizes, hidden_size=8), progress=False)
    assert np.isfinite(checkpoint.history[0]["val"]["nll"])
    assert baselines.baseline_table(train_codes, val_codes, codec.sizes)["bigram"]["n_targets"] == 19_999
    summary = metrics.summary(events)
    assert summary["n_notes"] == 100_000
    assert metrics.longest_copied_stretch(val_codes[0][:500], train_codes) < 500


def test_metrics_of_no_pieces_are_marked_not_crashing():
    from midilstm import metrics
    from midilstm.events import make_events
    empty = metrics.mean_summary([])
    assert empty["n_notes"] == 0 and np.isnan(empty["polyphony"])
    far = metrics.distances([], [melody_events(3)])
    assert np.isnan(far["pitch_class_tv"])
    one_note = make_events([(60, 80, 0.0), (60, 0, 0.5)])
    assert metrics.summary(one_note)["pitch_class_entropy_bits"] == 0.0
    assert np.isnan(metrics.distances(one_note, one_note)["ioi_tv"])  # no intervals to compare
