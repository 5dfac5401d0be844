"""The sounding and key inputs: which pitches sound after each event, and the decayed count of
note-ons per pitch class (the key profile), as the network is told, the same in training
(torch, from the codes), in evaluation (carried across chunks), in augmentation (transposed
with the sequence) and in generation (tracked while sampling); and the texture limits that
generation learns from the training music."""
import copy

import numpy as np
import pytest
import torch

from helpers_model import fitted_codec, random_walk_events, tiny_model, walk_notes
from helpers_model import one_thread  # noqa: F401  (autouse: one torch thread)
from midilstm.checkpoint import Checkpoint, load_checkpoint
from midilstm.data import training_sequences, transpose
from midilstm.events import NOTE_DTYPE, make_events, notes_to_events, texture_limits
from midilstm.generate import Improviser, generate
from midilstm.lstm_step import BLAS_STREAMS
from midilstm.sampling import SamplingConfig
from midilstm.sounding import (AGE_HALF_EVENTS, KEY_DECAY, N_PITCH_CLASSES, Held, age_share,
                               held_before, key_profiles, key_shares, note_ages, sounding_flags)
from midilstm.train import evaluate
from midilstm.model import LESSON_INPUTS


def random_codes(rng, shape, n_pitches=7, n_velocities=3, n_times=4, p_off=0.4):
    """Codes over few pitches (so events often fall on a pitch already sounding or silent),
    about ``p_off`` of them note-offs (velocity class 0)."""
    pitch = rng.integers(0, n_pitches, shape)
    velocity = np.where(rng.random(shape) < p_off, 0, rng.integers(1, n_velocities, shape))
    return np.stack([pitch, velocity, rng.integers(0, n_times, shape)], axis=-1)


def brute_force_sounding(codes, n_pitches, before=None):
    """Event by event: an on makes its pitch sound, an off silences it. (T, P) bools: the
    pitches sounding after each event."""
    held = set() if before is None else set(np.flatnonzero(before).tolist())
    rows = []
    for pitch, velocity, _ in codes.tolist():
        if velocity > 0:
            held.add(pitch)
        else:
            held.discard(pitch)
        rows.append([p in held for p in range(n_pitches)])
    return np.array(rows, bool).reshape(len(codes), n_pitches)


def brute_force_key(codes, before=None):
    """Event by event, in Python floats: a note-on decays every pitch class's count by
    KEY_DECAY and adds 1 to its own (pitch % 12); a note-off changes nothing. (T, 12): the
    counts after each event."""
    counts = [0.0] * 12 if before is None else [float(v) for v in before]
    rows = []
    for pitch, velocity, _ in codes.tolist():
        if velocity > 0:
            counts = [v * KEY_DECAY for v in counts]
            counts[pitch % 12] += 1.0
        rows.append(list(counts))
    return np.array(rows, np.float64).reshape(len(codes), 12)


def brute_force_ages(codes, n_pitches, before=None, before_age=None):
    """Event by event, with a dict of the sounding pitches' ages: each event makes every
    sounding note one event older, then an on of a silent pitch starts it at 0 (a restrike
    keeps its age) and an off removes it. (T, P): the ages after each event, 0 if silent."""
    ages = {} if before is None else {
        p: (0 if before_age is None else int(before_age[p])) for p in np.flatnonzero(before)}
    rows = []
    for pitch, velocity, _ in codes.tolist():
        ages = {p: a + 1 for p, a in ages.items()}
        if velocity > 0:
            ages.setdefault(pitch, 0)
        else:
            ages.pop(pitch, None)
        rows.append([ages.get(p, 0) for p in range(n_pitches)])
    return np.array(rows, np.float64).reshape(len(codes), n_pitches)


# --- (1) the one rule, against a loop --------------------------------------------------------
@pytest.mark.parametrize("with_before", [False, True])
def test_note_ages_agree_with_a_loop_over_the_events(with_before):
    rng = np.random.default_rng(21)
    n_pitches, oldest = 7, 0.0
    for trial in range(20):
        batch, steps = int(rng.integers(1, 5)), int(rng.integers(1, 40))
        codes = random_codes(rng, (batch, steps), n_pitches)
        before = rng.random((batch, n_pitches)) < 0.4 if with_before else None
        before_age = rng.integers(0, 30, (batch, n_pitches)) * before if with_before else None
        held = None if before is None else Held(torch.as_tensor(before), None,
                                                torch.as_tensor(before_age, dtype=torch.float32))
        ages = note_ages(sounding_flags(torch.as_tensor(codes), n_pitches,
                                        None if held is None else held.sounding), held)
        assert ages.shape == (batch, steps, n_pitches) and ages.dtype == torch.float32
        for b in range(batch):
            expected = brute_force_ages(codes[b], n_pitches,
                                        None if before is None else before[b],
                                        None if before_age is None else before_age[b])
            np.testing.assert_array_equal(ages[b].numpy(), expected, err_msg=f"trial {trial}")
        oldest = max(oldest, float(ages.max()))
    assert oldest >= 5  # notes do grow old in these streams


def test_age_share_is_zero_when_struck_and_half_at_the_half_age():
    ages = np.array([0.0, AGE_HALF_EVENTS, 3 * AGE_HALF_EVENTS, 1e6])
    np.testing.assert_allclose(age_share(ages), [0.0, 0.5, 0.75, 1.0], atol=1e-5)
    assert torch.equal(age_share(torch.as_tensor(ages)), torch.as_tensor(age_share(ages)))



@pytest.mark.parametrize("with_before", [False, True])
def test_sounding_flags_agree_with_a_loop_over_the_events(with_before):
    rng = np.random.default_rng(1)
    n_pitches = 7
    for trial in range(20):
        batch, steps = int(rng.integers(1, 5)), int(rng.integers(1, 30))
        codes = random_codes(rng, (batch, steps), n_pitches)
        before = rng.random((batch, n_pitches)) < 0.4 if with_before else None
        flags = sounding_flags(torch.as_tensor(codes), n_pitches,
                               None if before is None else torch.as_tensor(before))
        assert flags.shape == (batch, steps, n_pitches) and flags.dtype == torch.bool
        for b in range(batch):
            expected = brute_force_sounding(codes[b], n_pitches,
                                            None if before is None else before[b])
            np.testing.assert_array_equal(flags[b].numpy(), expected, err_msg=f"trial {trial}")


def test_sounding_flags_worked_by_hand():
    # pitch 2 on, pitch 0 off (it was held before), pitch 2 on again (still sounds), pitch 2 off
    codes = torch.tensor([[[2, 1, 0], [0, 0, 1], [2, 2, 0], [2, 0, 3]]])
    before = torch.tensor([[True, False, False, True]])
    flags = sounding_flags(codes, 4, before)[0].int().tolist()
    assert flags == [[1, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]
    assert sounding_flags(codes, 4)[0, :, 0].tolist() == [False] * 4  # nothing held before


@pytest.mark.parametrize("with_before", [False, True])
def test_key_profiles_agree_with_a_loop_over_the_events(with_before):
    rng = np.random.default_rng(11)
    n_pitches = 40  # more than an octave: the class is pitch % 12
    seen_wrap = False
    for trial in range(20):
        batch, steps = int(rng.integers(1, 5)), int(rng.integers(1, 60))
        codes = random_codes(rng, (batch, steps), n_pitches)
        before = (rng.random((batch, 12)) * 3).astype(np.float32) if with_before else None
        counts = key_profiles(torch.as_tensor(codes),
                              None if before is None else torch.as_tensor(before))
        assert counts.shape == (batch, steps, 12) and counts.dtype == torch.float32
        for b in range(batch):
            expected = brute_force_key(codes[b], None if before is None else before[b])
            np.testing.assert_allclose(counts[b].numpy(), expected, rtol=1e-5, atol=1e-6,
                                       err_msg=f"trial {trial}")
        seen_wrap |= bool(((codes[..., 0] >= 12) & (codes[..., 1] > 0)).any())
    assert seen_wrap


def test_key_profiles_and_shares_worked_by_hand():
    # pitch 2 on, pitch 14 on (class 2 again), pitch 3 off (nothing), pitch 5 on
    codes = torch.tensor([[[2, 1, 0], [14, 1, 0], [3, 0, 0], [5, 2, 1]]])
    d = KEY_DECAY
    assert d == 0.97
    expected = torch.zeros(4, 12)
    expected[0, 2] = 1.0
    expected[1, 2] = d + 1
    expected[2, 2] = d + 1
    expected[3, 2], expected[3, 5] = (d + 1) * d, 1.0
    torch.testing.assert_close(key_profiles(codes)[0], expected)
    before = torch.zeros(1, 12)
    before[0, 7] = 2.0
    with_before = expected.clone()
    with_before[:, 7] = torch.tensor([2 * d, 2 * d * d, 2 * d * d, 2 * d ** 3])
    torch.testing.assert_close(key_profiles(codes, before)[0], with_before)
    # shares: counts over their sum; nothing struck yet stays all zero (numpy and torch)
    counts = np.array([[0.0] * 12, [1.0, 3.0] + [0.0] * 10])
    shares = key_shares(counts)
    assert shares.dtype == np.float64 and shares.shape == (2, 12)
    np.testing.assert_array_equal(shares, [[0.0] * 12, [0.25, 0.75] + [0.0] * 10])
    torch.testing.assert_close(key_shares(torch.as_tensor(counts)), torch.as_tensor(shares))
    np.testing.assert_allclose(key_shares(expected.numpy()).sum(-1), 1.0, rtol=1e-6)


# --- (2) held_before, per position of a piece -----------------------------------------------
def test_held_before_row_s_is_what_sounds_just_before_event_s():
    rng = np.random.default_rng(2)
    for length in (1, 2, 17, 200):
        codes = random_codes(rng, (length,), n_pitches=9)
        held = held_before(codes, 9)
        assert isinstance(held, Held)
        assert held.sounding.shape == (length, 9) and held.sounding.dtype == bool
        assert not held.sounding[0].any()
        assert held.age.shape == (length, 9) and held.age.dtype == np.float32
        for s in range(length):
            expected = brute_force_sounding(codes[:s], 9)  # the events before s
            np.testing.assert_array_equal(held.sounding[s],
                                          expected[-1] if s else np.zeros(9, bool))
            ages = brute_force_ages(codes[:s], 9)
            np.testing.assert_array_equal(held.age[s], ages[-1] if s else np.zeros(9))


def test_held_before_key_row_s_is_the_counts_struck_before_event_s():
    rng = np.random.default_rng(12)
    for length in (1, 2, 17, 200):
        codes = random_codes(rng, (length,), n_pitches=30)
        key = held_before(codes, 30).key
        assert key.shape == (length, N_PITCH_CLASSES) and key.dtype == np.float32
        assert not key[0].any()
        for s in range(length):
            expected = brute_force_key(codes[:s])  # the events before s
            np.testing.assert_allclose(key[s], expected[-1] if s else np.zeros(12),
                                       rtol=1e-5, atol=1e-6, err_msg=f"length {length}, s {s}")
        if length > 2:
            assert key[-1].sum() > 0


def test_training_sequences_start_with_what_their_piece_holds_at_that_point():
    rng = np.random.default_rng(3)
    pieces = [random_codes(rng, (n,), n_pitches=9, n_times=50) for n in (120, 75, 10)]
    held = [held_before(codes, 9) for codes in pieces]
    plain = training_sequences(pieces, 12, np.random.default_rng(5))
    sequences, before = training_sequences(pieces, 12, np.random.default_rng(5), held)
    np.testing.assert_array_equal(sequences, plain)  # the same draws as without ``held``
    assert isinstance(before, Held)
    assert before.sounding.shape == (len(sequences), 9) and before.sounding.any()
    assert before.key.shape == (len(sequences), 12) and before.key.dtype == np.float32
    assert (before.key.sum(axis=1) > 0).mean() > 0.8
    for sequence, row, key in zip(sequences, before.sounding, before.key):
        # find where the sequence was cut (the random codes make it unique)
        places = [(i, s) for i, codes in enumerate(pieces) for s in range(len(codes) - 12)
                  if np.array_equal(codes[s:s + 13], sequence)]
        assert len(places) == 1
        i, s = places[0]
        np.testing.assert_array_equal(row, held[i].sounding[s])
        np.testing.assert_array_equal(key, held[i].key[s])


# --- (3) evaluation in chunks carries the sounding set -----------------------------------------
def chord_piece():
    """Chords held across many events: a random walk melody over sustained low notes."""
    triples = []
    walk = random_walk_events(60, seed=4)
    for k, event in enumerate(walk.tolist()):
        if k % 20 == 0:  # a new bass chord every 20 melody events, held until the next one
            if k:
                triples += [(36, 0, 0.0), (43, 0, 0.0)]
            triples += [(36, 70, 0.0), (43, 70, 0.0)]
        triples.append(event)
    return make_events(triples + [(36, 0, 0.1), (43, 0, 0.0)])


def assert_chunks_score_as_one_pass(model, codes, chunks) -> dict:
    """``evaluate`` in chunks of each size gives what one pass gives; returns the one pass."""
    whole = evaluate(model, [codes])
    for chunk in chunks:
        chunked = evaluate(model, [codes], chunk=chunk)
        for key, value in whole.items():
            assert chunked[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (chunk, key)
    return whole


@pytest.mark.parametrize("kw", [dict(), dict(input_mode="embedding", embedding_dim=4,
                                             num_layers=2)])
def test_evaluating_in_chunks_equals_one_pass(kw):
    events = chord_piece()
    codec = fitted_codec(events)
    codes = codec.encode(events)
    model = tiny_model(codec, seed=5, **kw)
    assert model.config.sounding_input
    if model.sounding_embedding is not None:  # a random init barely feels it: make it count
        with torch.no_grad():
            model.sounding_embedding.weight.mul_(20)
    whole = assert_chunks_score_as_one_pass(model, codes, (1, 7, 33))
    # the comparison can fail: chunks that forget the sounding pitches score otherwise
    x = torch.as_tensor(codes)[None]
    with torch.no_grad():
        total = 0.0
        state = None
        for start in range(0, len(codes) - 1, 7):
            piece = x[:, start:start + 8]
            log_probs, (state, _) = model(piece[:, :-1], (state, None))  # sounding dropped
            total += -sum(lp[0].gather(1, piece[0, 1:, i:i + 1]).sum().item()
                          for i, lp in enumerate(log_probs))
    forgetful = total / (len(codes) - 1)
    assert abs(forgetful - whole["nll"]) > 1e-3


@pytest.mark.parametrize("kw", [dict(sounding_input=False),  # the key alone
                                dict(input_mode="embedding", embedding_dim=4, num_layers=2)])
def test_evaluating_in_chunks_carries_the_key(kw):
    events = chord_piece()
    codec = fitted_codec(events)
    codes = codec.encode(events)
    model = tiny_model(codec, seed=6, **kw)
    assert model.config.key_input
    with torch.no_grad():  # a random init barely feels the 12 shares: make them count
        model.lstm.weight_ih_l0[:, -N_PITCH_CLASSES:] *= 20
    whole = assert_chunks_score_as_one_pass(model, codes, (1, 5, 33))
    # the comparison can fail: chunks that carry the sounding pitches but forget the key
    # counts score otherwise
    x = torch.as_tensor(codes)[None]
    with torch.no_grad():
        total = 0.0
        state, sounding = None, None
        for start in range(0, len(codes) - 1, 5):
            piece = x[:, start:start + 6]
            log_probs, (state, after) = model(piece[:, :-1], (state, Held(sounding, None)))
            sounding = after.sounding
            total += -sum(lp[0].gather(1, piece[0, 1:, i:i + 1]).sum().item()
                          for i, lp in enumerate(log_probs))
    forgetful = total / (len(codes) - 1)
    assert abs(forgetful - whole["nll"]) > 1e-3


def find_cut(pieces, sequence):
    """Where ``sequence`` was cut from, transposed or not: the (piece, start, shift) whose
    velocities and times match and whose pitches all differ by one shift."""
    n = len(sequence)
    places = []
    for i, codes in enumerate(pieces):
        for s in range(len(codes) - n + 1):
            window = codes[s:s + n]
            shift = sequence[:, 0] - window[:, 0]
            if (window[:, 1:] == sequence[:, 1:]).all() and (shift == shift[0]).all():
                places.append((i, s, int(shift[0])))
    return places


def rolled(held, s, shift):
    """Row ``s`` of a piece's ``held_before``, transposed by ``shift``."""
    return (np.roll(held.sounding[s], shift), np.roll(held.key[s], shift))


def test_training_feeds_each_sequence_what_held_at_its_cut(monkeypatch):
    import midilstm.loop as loop_module
    from helpers_model import tiny_config
    from midilstm.train import TrainConfig, train

    events = chord_piece()
    codec = fitted_codec(events)
    codes = codec.encode(events)
    pieces = [codes[:90], codes[90:]]
    held = [held_before(piece, codec.n_pitches) for piece in pieces]
    calls = []
    real = loop_module.sequence_loss

    def spy(model, batch, stats=True, before=None):
        calls.append((batch.numpy().copy(), before))
        return real(model, batch, stats, before)

    monkeypatch.setattr(loop_module, "sequence_loss", spy)
    train(codec, pieces, [], TrainConfig(epochs=3, seq_len=12, batch_size=4, seed=1,
                                         transpose_semitones=3),
          tiny_config(codec), progress=False)
    assert len(calls) >= 6
    shifts, keyed = set(), 0
    for batch, before in calls:
        assert isinstance(before, Held)
        assert before.sounding.dtype == torch.bool and before.key.dtype == torch.float32
        for sequence, sounding, key in zip(batch, before.sounding.numpy(), before.key.numpy()):
            places = find_cut(pieces, sequence)
            assert places, "a training sequence not cut from a piece"
            assert any(np.array_equal(sounding, a) and np.array_equal(key, b)
                       for a, b in (rolled(held[i], s, k) for i, s, k in places))
            shifts |= {k for _, _, k in places}
            keyed += key.sum() > 0
    assert len(shifts) > 3 and keyed > 10  # transposed both ways, after struck notes


def test_corpus_training_feeds_each_window_what_held_at_its_start(monkeypatch):
    import midilstm.batch as batch_module
    import midilstm.loop as loop_module
    from midilstm.batch import CorpusTrainConfig, train_corpus
    from midilstm.corpus import Corpus

    pieces = [chord_piece()] + [random_walk_events(40 + 10 * k, seed=k) for k in range(5)]
    corpus = Corpus(events=np.concatenate(pieces),
                    offsets=np.cumsum([0] + [len(p) for p in pieces]).astype(np.int64),
                    names=[f"piece_{k}.mid" for k in range(len(pieces))])
    calls, starts = [], []
    real_loss, real_windows = loop_module.sequence_loss, batch_module.sample_windows

    def spy_windows(*args):
        out = real_windows(*args)
        starts.append(out.copy())
        return out

    def spy_loss(model, batch, stats=True, before=None):
        calls.append((batch.numpy().copy(), before))
        return real_loss(model, batch, stats, before)

    monkeypatch.setattr(batch_module, "sample_windows", spy_windows)
    monkeypatch.setattr(loop_module, "sequence_loss", spy_loss)
    best = train_corpus(corpus, CorpusTrainConfig(steps=3, batch_size=8, seq_len=16,
                                                  eval_every=3, transpose_semitones=3,
                                                  device="cpu", precision="float32"),
                        {"hidden_size": 8}, progress=False)
    codec = best.codec
    assert len(calls) == len(starts) == 3
    keyed = 0
    for (batch, before), window_starts in zip(calls, starts):
        assert isinstance(before, Held)
        for sequence, start, sounding, key in zip(batch, window_starts, before.sounding.numpy(),
                                                  before.key.numpy()):
            i = int(np.searchsorted(corpus.offsets, start, side="right")) - 1
            s = int(start - corpus.offsets[i])
            original = codec.encode(corpus.piece(i))
            shift = int(sequence[0, 0] - original[s, 0])
            np.testing.assert_array_equal(sequence[:, 0] - shift, original[s:s + 17, 0])
            expected = rolled(held_before(original, codec.n_pitches), s, shift)
            np.testing.assert_array_equal(sounding, expected[0])
            np.testing.assert_array_equal(key, expected[1])
            keyed += key.sum() > 0
    assert keyed > 10


# --- (4) transposition moves the held pitches with the sequence ---------------------------------
def test_transpose_shifts_before_like_the_pitches_and_keeps_every_held_pitch():
    rng = np.random.default_rng(6)
    n_pitches, n = 20, 400
    sequences = random_codes(rng, (n, 9), n_pitches=n_pitches)
    sequences[:, :, 0] = rng.integers(6, 14, (n, 1)) + rng.integers(-3, 4, (n, 9))  # mid-range
    sounding = rng.random((n, n_pitches)) < 0.1
    sounding[:40] = False  # some hold nothing
    sounding[40:80, n_pitches - 1] = True  # some hold the top pitch: they cannot go up
    sounding[80:120, 0] = True  # some the bottom one: they cannot go down
    key = (rng.random((n, 12)) * 4).astype(np.float32)  # all 12 classes, different counts
    before = Held(sounding, key)
    plain = transpose(sequences, 5, n_pitches, np.random.default_rng(7))
    out, moved = transpose(sequences, 5, n_pitches, np.random.default_rng(7), before)
    assert isinstance(moved, Held)
    shift = out[:, 0, 0] - sequences[:, 0, 0]
    assert (out[:, :, 0] - sequences[:, :, 0] == shift[:, None]).all()  # whole sequences
    np.testing.assert_array_equal(out[:, :, 1:], sequences[:, :, 1:])
    assert moved.sounding.shape == sounding.shape and moved.sounding.dtype == bool
    for row, moved_row, k in zip(sounding, moved.sounding, shift):
        np.testing.assert_array_equal(np.flatnonzero(moved_row), np.flatnonzero(row) + k)
    # the key counts: class c moves to (c + shift) % 12, round the octave, values untouched
    assert moved.key.shape == key.shape and moved.key.dtype == key.dtype
    for row, moved_row, k in zip(key, moved.key, shift):
        np.testing.assert_array_equal(moved_row, row[(np.arange(12) - k) % 12])
    assert (shift > 0).any() and (shift < 0).any()  # both ways round
    # and a sequence rebuilt from its moved start counts the same key, moved
    counts = key_profiles(torch.as_tensor(sequences), torch.as_tensor(key)).numpy()
    counts_out = key_profiles(torch.as_tensor(out), torch.as_tensor(moved.key)).numpy()
    for b in range(n):
        np.testing.assert_array_equal(np.roll(counts[b], int(shift[b]), axis=-1), counts_out[b])
    assert (shift[40:80] <= 0).all() and (shift[80:120] >= 0).all()
    assert (shift[40:80] < 0).any() and (shift[80:120] > 0).any() and (shift != 0).mean() > 0.5
    assert ((out[:, :, 0] >= 0) & (out[:, :, 0] < n_pitches)).all()
    # where nothing is held, the same draws and shifts as without ``before``
    np.testing.assert_array_equal(out[:40], plain[:40])
    # and a sequence rebuilt from its moved start reads the same sounding pitches, moved
    flags = sounding_flags(torch.as_tensor(sequences), n_pitches, torch.as_tensor(sounding))
    flags_out = sounding_flags(torch.as_tensor(out), n_pitches, torch.as_tensor(moved.sounding))
    for b in range(n):
        k = int(shift[b])
        np.testing.assert_array_equal(np.roll(flags[b].numpy(), k, axis=-1), flags_out[b].numpy())
    # off: both come back unchanged
    same, same_before = transpose(sequences, 0, n_pitches, np.random.default_rng(7), before)
    assert same is sequences and same_before is before


# --- (5) generation's fast path sees what the torch model sees ---------------------------------
EVENTS = random_walk_events(200, seed=1)
CODEC = fitted_codec(EVENTS, n_time_bins=6)
PRIMER = make_events([(60, 90, 0.0), (64, 90, 0.0), (67, 90, 0.2), (60, 0, 0.3)])  # 2 held


def generate_and_replay(model, streams, sampling=None, n_steps=60, seed=3):
    """Generate ``n_steps`` events per stream after PRIMER and replay every fed event through
    the torch model: (improviser, log-probs seen after each event from the primer's last on,
    the codes fed (streams, events, 3), the torch model's log-probs and state)."""
    improviser = Improviser(model, CODEC, sampling or SamplingConfig(), seed=seed,
                            n_variations=streams)
    improviser.prime(PRIMER)
    fed = [np.repeat(code[None], streams, axis=0) for code in CODEC.encode(PRIMER)]
    seen = [improviser.log_probs]
    for _ in range(n_steps):
        codes, _ = improviser.step()  # what was fed: a held-too-long note's off included
        fed.append(codes)
        seen.append(improviser.log_probs)
    codes = torch.as_tensor(np.stack(fed, axis=1))  # (streams, events, 3)
    with torch.no_grad():
        expected, state = model(codes)
    return improviser, seen, codes, expected, state


def assert_same_log_probs(seen, expected):
    first = len(PRIMER) - 1
    for t, log_probs in enumerate(seen):
        for head in range(3):
            np.testing.assert_allclose(log_probs[head], expected[head][:, first + t].numpy(),
                                       atol=1e-4, rtol=0, err_msg=f"step {t}, head {head}")


def blind_pitch_log_probs(model, codes, start, width):
    """The torch model's pitch log-probs with the input columns [start, start + width) zeroed:
    the same weights blind to one of its inputs."""
    with torch.no_grad():
        x, _ = model.inputs(codes)
        x[..., start:start + width] = 0.0
        out, _ = model.lstm(x)
        return torch.log_softmax(model.head(out)[..., :CODEC.n_pitches], -1)


def class_width(model):
    return (sum(CODEC.sizes) if model.config.input_mode == "one_hot"
            else 3 * model.config.embedding_dim)


@pytest.mark.parametrize("streams", [3, BLAS_STREAMS])  # the compiled loops, numpy's products
@pytest.mark.parametrize("kw", [dict(), dict(input_mode="embedding", embedding_dim=6,
                                             num_layers=2)])
def test_generation_steps_like_the_torch_model_with_the_sounding_input(kw, streams):
    model = tiny_model(CODEC, seed=7, **kw)
    assert model.config.sounding_input
    # no polyphony limit, a long note limit: the untrained model piles up many held notes
    improviser, seen, codes, expected, (_, held) = generate_and_replay(
        model, streams, SamplingConfig(max_polyphony=0, max_note_s=2.0))
    held_counts = (sounding_flags(codes, CODEC.n_pitches)[:, len(PRIMER):]).sum(-1).numpy().T
    assert held_counts.max() >= 3 and (held_counts > 0).mean() > 0.5  # the input mattered
    np.testing.assert_array_equal(held.sounding.numpy(), ~np.isnan(improviser.sounding_since))
    assert_same_log_probs(seen, expected)
    # the comparison can fail: the same weights without the sounding input give other numbers
    width = CODEC.n_pitches if model.sounding_embedding is None else model.config.embedding_dim
    blind_pitch = blind_pitch_log_probs(model, codes, class_width(model), width)
    assert np.abs(blind_pitch[:, -1].numpy() - seen[-1][0]).max() > 1e-3


@pytest.mark.parametrize("streams", [3, BLAS_STREAMS])  # the compiled loops, numpy's products
@pytest.mark.parametrize("kw", [dict(), dict(sounding_input=False),  # with and without sounding
                                dict(input_mode="embedding", embedding_dim=6, num_layers=2)])
def test_generation_steps_like_the_torch_model_with_the_key_input(kw, streams):
    model = tiny_model(CODEC, seed=10, **kw)
    assert model.config.key_input
    improviser, seen, codes, expected, (_, held) = generate_and_replay(
        model, streams, SamplingConfig(max_polyphony=0, max_note_s=2.0), seed=4)
    assert improviser.stepper.weights.table_k.shape == (N_PITCH_CLASSES, 4 * model.config.hidden_size)
    # the key counts the improviser tracked are the torch model's, after the same events
    assert improviser.key.shape == (streams, N_PITCH_CLASSES) and improviser.key.dtype == np.float64
    assert held.key.shape == (streams, N_PITCH_CLASSES)
    np.testing.assert_allclose(improviser.key, held.key.double().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(improviser.key, [brute_force_key(c)[-1] for c in codes.numpy()],
                               rtol=1e-5, atol=1e-6)
    assert (improviser.key > 0).sum(axis=1).min() >= 3  # several classes struck in each stream
    assert_same_log_probs(seen, expected)
    # the comparison can fail: the same weights blind to the key give other numbers
    blind_pitch = blind_pitch_log_probs(model, codes, model.lstm.input_size - N_PITCH_CLASSES,
                                        N_PITCH_CLASSES)
    assert np.abs(blind_pitch[:, -1].numpy() - seen[-1][0]).max() > 1e-3
    # and the fast path itself reads the key: with the key's weights zeroed, other numbers
    deaf = copy.deepcopy(model)
    with torch.no_grad():
        deaf.lstm.weight_ih_l0[:, -N_PITCH_CLASSES:] = 0.0
    other = Improviser(deaf, CODEC, n_variations=streams)
    assert not other.stepper.weights.table_k.any()
    other.prime(PRIMER)
    first = Improviser(model, CODEC, n_variations=streams)
    first.prime(PRIMER)
    assert np.abs(other.log_probs[0] - first.log_probs[0]).max() > 1e-3


@pytest.mark.parametrize("streams", [3, BLAS_STREAMS])  # the compiled loops, numpy's products
@pytest.mark.parametrize("kw", [dict(), dict(sounding_input=False, key_input=False),
                                dict(input_mode="embedding", embedding_dim=6, num_layers=2)])
def test_generation_steps_like_the_torch_model_with_the_age_input(kw, streams):
    model = tiny_model(CODEC, seed=11, **kw)
    assert model.config.age_input
    improviser, seen, codes, expected, (_, held) = generate_and_replay(
        model, streams, SamplingConfig(max_polyphony=0, max_note_s=2.0), seed=5)
    assert improviser.stepper.weights.table_a.shape == (CODEC.n_pitches,
                                                        4 * model.config.hidden_size)
    # the ages the improviser tracked are the torch model's and a plain loop's
    np.testing.assert_array_equal(improviser.ages, held.age.double().numpy())
    np.testing.assert_array_equal(improviser.ages,
                                  [brute_force_ages(c, CODEC.n_pitches)[-1] for c in codes.numpy()])
    assert improviser.ages.max() >= 3  # some notes have sounded a while
    assert_same_log_probs(seen, expected)
    # the comparison can fail: the same weights blind to the ages give other numbers
    width = CODEC.n_pitches if model.age_embedding is None else model.config.embedding_dim
    start = class_width(model) + (width if model.config.sounding_input else 0)
    blind_pitch = blind_pitch_log_probs(model, codes, start, width)
    assert np.abs(blind_pitch[:, -1].numpy() - seen[-1][0]).max() > 1e-3


def test_a_checkpoint_from_before_the_age_input_loads_without_it(tmp_path):
    """Saved with the sounding and key inputs but before ``age_input`` existed: no ages."""
    model = tiny_model(CODEC, seed=9, age_input=False)
    path = Checkpoint(model=model, codec=CODEC).save(tmp_path / "new.pt")
    payload = torch.load(path, weights_only=True)
    del payload["model_config"]["age_input"]  # as written before the field existed
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.model.config == model.config and not loaded.model.config.age_input
    improviser = Improviser(loaded.model, loaded.codec)
    assert improviser.stepper.weights.table_a.shape == (0, 4 * model.config.hidden_size)
    out = generate(loaded.model, loaded.codec, EVENTS[:10], n_events=30, seed=1)[0]
    assert walk_notes(out)[:2] == (0, 0)


@pytest.mark.parametrize("streams", [2, BLAS_STREAMS])
def test_a_lesson_model_generates_like_its_torch_model_too(streams):
    model = tiny_model(CODEC, seed=8, **LESSON_INPUTS)
    improviser = Improviser(model, CODEC, seed=1, n_variations=streams)
    assert improviser.stepper.weights.table_s.shape == (0, 4 * model.config.hidden_size)
    assert improviser.stepper.weights.table_k.shape == (0, 4 * model.config.hidden_size)
    improviser.prime(PRIMER)
    fed = [np.repeat(code[None], streams, axis=0) for code in CODEC.encode(PRIMER)]
    for _ in range(20):
        fed.append(improviser.step()[0])
    with torch.no_grad():
        expected, (_, held) = model(torch.as_tensor(np.stack(fed, axis=1)))
    assert held == Held(None, None)
    for head in range(3):
        np.testing.assert_allclose(improviser.log_probs[head], expected[head][:, -1].numpy(),
                                   atol=1e-4, rtol=0)


# --- (6) the texture limits of a piece ---------------------------------------------------------
def random_notes(rng, per_pitch=8):
    """Notes on a 0.25 s grid (exact in binary), one at a time per pitch, many of them
    starting when another ends; each pitch's notes may touch (end = next start)."""
    rows = []
    for pitch in rng.choice(np.arange(40, 80), int(rng.integers(1, 8)), replace=False):
        t = 0.25 * int(rng.integers(0, 8))
        for _ in range(int(rng.integers(1, per_pitch))):
            length = 0.25 * int(rng.integers(1, 12))
            rows.append((t, t + length, int(pitch), int(rng.integers(1, 128))))
            gap = 0 if rng.random() < 0.4 else int(rng.integers(1, 16))  # 0: touches the next
            t += length + 0.25 * gap
    notes = np.array(rows, NOTE_DTYPE)
    return notes[np.lexsort((notes["pitch"], notes["start_s"]))]


def brute_force_texture(notes):
    longest = max(end - start for start, end, _, _ in notes.tolist())
    # at each start, the notes started and not yet ended (a note ending then has ended)
    most = max(sum(1 for s, e, _, _ in notes.tolist() if s <= t < e)
               for t in notes["start_s"].tolist())
    return longest, most


def test_texture_limits_against_a_count_over_every_onset():
    rng = np.random.default_rng(9)
    seen = set()
    for _ in range(40):
        notes = random_notes(rng)
        longest, most = texture_limits(notes_to_events(notes))
        expected_longest, expected_most = brute_force_texture(notes)
        assert longest == pytest.approx(expected_longest, abs=1e-9)
        assert most == expected_most
        seen.add(most)
    assert len(seen) >= 4  # the cases differ


def test_texture_limits_by_hand():
    # C 0-1 s, E 0.5-2 s, G 1-1.5 s (starts as C ends: counted after C ended), C again 2-5 s
    events = make_events([(60, 80, 0.0), (64, 80, 0.5), (60, 0, 0.5), (67, 80, 0.0),
                          (67, 0, 0.5), (64, 0, 0.5), (60, 80, 0.0), (60, 0, 3.0)])
    assert texture_limits(events) == (pytest.approx(3.0), 2)
    assert texture_limits(make_events([])) == (0.0, 0)
    codec = fitted_codec(np.concatenate([events, make_events([(70, 90, 1.0), (70, 0, 0.5)])]))
    assert codec.longest_note_s == pytest.approx(3.0) and codec.max_polyphony == 2


# --- (7) the polyphony limit holds -------------------------------------------------------------
def eager_model(codec):
    """A model that almost never ends a note, over all pitches: without a limit, notes pile up."""
    model = tiny_model(codec)
    with torch.no_grad():
        model.head.weight.zero_()
        bias = torch.zeros(sum(codec.sizes))
        bias[codec.n_pitches] = -30.0  # velocity class 0: note-off
        model.head.bias.copy_(bias)
    return model


def most_sounding(events) -> int:
    sounding, most = set(), 0
    for pitch, velocity in zip(events["pitch"].tolist(), events["velocity"].tolist()):
        (sounding.add if velocity > 0 else sounding.discard)(pitch)
        most = max(most, len(sounding))
    return most


@pytest.mark.parametrize("streams", [2, BLAS_STREAMS])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_no_generated_stream_sounds_more_than_max_polyphony(k, streams):
    model = eager_model(CODEC)
    primer = make_events([(60, 80, 0.0), (60, 0, 0.2)])
    free = generate(model, CODEC, primer, n_events=60, n_variations=streams, seed=2,
                    sampling=SamplingConfig(max_polyphony=0, max_note_s=0))
    assert min(most_sounding(out) for out in free) > 6  # without the limit, notes pile up
    outs = generate(model, CODEC, primer, n_events=150, n_variations=streams, seed=2,
                    sampling=SamplingConfig(max_polyphony=k, max_note_s=0))
    for out in outs:
        assert walk_notes(out)[:2] == (0, 0)
        assert most_sounding(out) == k  # reached, never passed


def test_by_default_the_polyphony_is_the_training_musics():
    codec = fitted_codec(chord_piece())
    assert codec.max_polyphony == 3  # two held bass notes under a one-note melody
    model = eager_model(codec)
    outs = generate(model, codec, make_events([(60, 80, 0.0), (60, 0, 0.2)]), n_events=100,
                    n_variations=4, seed=1)
    assert max(most_sounding(out) for out in outs) == 3


# --- (8) checkpoints saved before the sounding and key inputs -----------------------------------
def test_an_old_checkpoint_without_the_fields_loads_as_the_lesson_model(tmp_path):
    model = tiny_model(CODEC, seed=9, **LESSON_INPUTS)
    path = Checkpoint(model=model, codec=CODEC).save(tmp_path / "new.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["model_config"]["sounding_input"] is False
    assert payload["model_config"]["key_input"] is False
    del payload["model_config"]["sounding_input"]  # as written before the fields existed
    del payload["model_config"]["key_input"]
    for name in ("longest_note_s", "max_polyphony"):  # and a codec from before the limits
        del payload["codec"][name]
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.model.config == model.config and not loaded.model.config.sounding_input
    assert not loaded.model.config.key_input
    assert loaded.model.lstm.input_size == sum(CODEC.sizes)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert (loaded.codec.longest_note_s, loaded.codec.max_polyphony) == (None, None)
    codes = torch.as_tensor(CODEC.encode(EVENTS[:40]))[None]
    with torch.no_grad():
        for a, b in zip(loaded.model(codes)[0], model(codes)[0]):
            torch.testing.assert_close(a, b)
    # it generates with the old rule (the codec never measured its music): 5 s, no polyphony limit
    improviser = Improviser(loaded.model, loaded.codec)
    assert (improviser.sampling.max_note_s, improviser.sampling.max_polyphony) == (5.0, 0)
    out = generate(loaded.model, loaded.codec, EVENTS[:10], n_events=30, seed=1)[0]
    assert walk_notes(out)[:2] == (0, 0)


@pytest.mark.parametrize("input_mode", ["one_hot", "embedding"])
def test_a_checkpoint_from_before_the_key_input_loads_without_it(tmp_path, input_mode):
    """Saved with the sounding input but before ``key_input`` existed: it reads no key."""
    model = tiny_model(CODEC, seed=9, key_input=False, input_mode=input_mode, embedding_dim=4)
    path = Checkpoint(model=model, codec=CODEC).save(tmp_path / "new.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["model_config"]["key_input"] is False
    del payload["model_config"]["key_input"]  # as written before the field existed
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.model.config == model.config
    assert loaded.model.config.sounding_input and not loaded.model.config.key_input
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    codes = torch.as_tensor(CODEC.encode(EVENTS[:40]))[None]
    with torch.no_grad():
        out, (_, held) = loaded.model(codes)
        for a, b in zip(out, model(codes)[0]):
            torch.testing.assert_close(a, b)
    assert held.key is None and held.sounding is not None
    improviser = Improviser(loaded.model, loaded.codec)
    assert improviser.stepper.weights.table_k.shape == (0, 4 * model.config.hidden_size)
    assert improviser.stepper.weights.table_s.shape == (CODEC.n_pitches, 4 * model.config.hidden_size)
    out = generate(loaded.model, loaded.codec, EVENTS[:10], n_events=30, seed=1)[0]
    assert walk_notes(out)[:2] == (0, 0)
