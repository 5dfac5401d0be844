"""Training data: a split that does not leak, sequences that stay inside pieces, transposition."""
import numpy as np
import pytest

from midilstm.data import split_pieces, training_sequences, transpose


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


def test_one_piece_too_short_or_a_bad_fraction_is_refused():
    with pytest.raises(ValueError, match="too short"):
        split_pieces([np.arange(5)], 0.1)
    for fraction in (0, 1, -0.5, 1.5):
        with pytest.raises(ValueError):
            split_pieces([np.arange(100)], fraction)
    with pytest.raises(ValueError):
        split_pieces([], 0.1)


def test_several_pieces_hold_out_whole_pieces_seeded():
    pieces = marked_pieces([30 + k for k in range(20)])
    train, val = split_pieces(pieces, 0.2, seed=3)
    assert len(val) == 4 and len(train) == 16
    ids = lambda part: sorted(int(p[0, 0]) for p in part)  # noqa: E731
    assert sorted(ids(train) + ids(val)) == list(range(20))  # a partition of the pieces
    for p in train + val:  # whole pieces, untouched
        np.testing.assert_array_equal(p, pieces[int(p[0, 0])])
    again = split_pieces(pieces, 0.2, seed=3)
    assert ids(again[1]) == ids(val)
    others = {tuple(ids(split_pieces(pieces, 0.2, seed=s)[1])) for s in range(10)}
    assert len(others) > 1  # the seed decides which pieces


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
