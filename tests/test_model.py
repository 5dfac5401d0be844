"""NoteLSTM: shapes, normalised heads, both input modes, the sounding and key inputs, the input
tables, the frozen config."""
import dataclasses

import numpy as np
import pytest
import torch

from helpers_model import fitted_codec, pattern_events, tiny_model
from helpers_model import one_thread  # noqa: F401  (autouse: one torch thread)
from midilstm.errors import ParameterError
from midilstm.lstm import NoteLSTM
from midilstm.model import LESSON_INPUTS, ModelConfig
from midilstm.sounding import (N_PITCH_CLASSES, Held, age_share, key_profiles, key_shares,
                               note_ages, sounding_flags)

CODEC = fitted_codec(pattern_events(4))
LESSON = LESSON_INPUTS
MODES = [dict(input_mode="one_hot"), dict(input_mode="embedding", embedding_dim=5),
         dict(input_mode="one_hot", num_layers=2), dict(input_mode="embedding", num_layers=2),
         dict(input_mode="one_hot", **LESSON),
         dict(input_mode="embedding", embedding_dim=5, **LESSON),
         dict(input_mode="one_hot", key_input=False, age_input=False),  # the sounding pitches
         dict(input_mode="embedding", embedding_dim=5, sounding_input=False,
              age_input=False),  # the key only
         dict(input_mode="one_hot", sounding_input=False, key_input=False),  # the ages only
         dict(input_mode="embedding", embedding_dim=5, key_input=False)]  # sounding and ages


def random_codes(sizes, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, n, shape, generator=g) for n in sizes], dim=-1)


@pytest.mark.parametrize("kw", MODES)
def test_output_shapes_and_each_head_is_a_normalised_distribution(kw):
    model = tiny_model(CODEC, **kw)
    codes = random_codes(CODEC.sizes, (3, 7))
    log_probs, ((h, c), held) = model(codes)
    assert isinstance(held, Held)
    sounding, key, age = held
    assert len(log_probs) == 3
    for lp, n in zip(log_probs, CODEC.sizes):
        assert lp.shape == (3, 7, n)
        assert (lp <= 0).all()
        torch.testing.assert_close(lp.logsumexp(-1), torch.zeros(3, 7), atol=1e-5, rtol=0)
    assert h.shape == c.shape == (model.config.num_layers, 3, model.config.hidden_size)
    if model.config.sounding_input or model.config.age_input:  # pitches sounding after the last
        assert sounding.shape == (3, CODEC.n_pitches) and sounding.dtype == torch.bool
        torch.testing.assert_close(sounding, sounding_flags(codes, CODEC.n_pitches)[:, -1])
    else:
        assert sounding is None
    if model.config.age_input:  # how many events each has sounded, after the last event
        assert age.shape == (3, CODEC.n_pitches) and age.dtype == torch.float32
        torch.testing.assert_close(age, note_ages(sounding_flags(codes, CODEC.n_pitches))[:, -1])
    else:
        assert age is None
    if model.config.key_input:  # the decayed note-on counts after the last event
        assert key.shape == (3, N_PITCH_CLASSES) and key.dtype == torch.float32
        torch.testing.assert_close(key, key_profiles(codes)[:, -1])
        assert (key > 0).any()
    else:
        assert key is None


@pytest.mark.parametrize("kw", MODES)
def test_carrying_the_state_equals_one_long_forward(kw):
    model = tiny_model(CODEC, **kw)
    codes = random_codes(CODEC.sizes, (2, 10), seed=1)
    whole, _ = model(codes)
    first, state = model(codes[:, :4])
    second, _ = model(codes[:, 4:], state)
    for w, a, b in zip(whole, first, second):
        torch.testing.assert_close(torch.cat([a, b], dim=1), w, atol=1e-6, rtol=1e-5)


def test_one_hot_input_is_three_concatenated_one_hots():
    codes = torch.tensor([[[0, 0, 0], [5, 127, 4]]])
    n_p, n_v, _ = CODEC.sizes
    n_classes = sum(CODEC.sizes)
    lesson = tiny_model(CODEC, **LESSON)
    x = lesson.embed(codes)
    assert x.shape == (1, 2, n_classes)
    assert lesson.lstm.input_size == n_classes
    assert x.sum(-1).tolist() == [[3.0, 3.0]]
    assert torch.nonzero(x[0, 1]).flatten().tolist() == [5, n_p + 127, n_p + n_v + 4]
    inputs, after = lesson.inputs(codes)
    assert torch.equal(inputs, x) and after == Held(None, None)
    # sounding + key reads the sounding pitches (one more 0/1 input per pitch class), then
    # the key profile (12 shares of the pitch classes struck lately)
    model = tiny_model(CODEC, age_input=False)
    assert model.lstm.input_size == n_classes + n_p + N_PITCH_CLASSES
    assert torch.equal(model.embed(codes), x)  # the classes' part is unchanged
    inputs, after = model.inputs(codes)
    assert inputs.shape == (1, 2, n_classes + n_p + N_PITCH_CLASSES)
    assert torch.equal(inputs[..., :n_classes], x)
    sounding, key = inputs[..., n_classes:n_classes + n_p], inputs[..., n_classes + n_p:]
    # after event 0 (pitch 0 off) nothing sounds; after event 1 (pitch 5 on) pitch 5 does
    assert torch.nonzero(sounding[0, 0]).flatten().tolist() == []
    assert torch.nonzero(sounding[0, 1]).flatten().tolist() == [5]
    assert after.sounding.tolist() == [[p == 5 for p in range(n_p)]]
    # an off strikes nothing (no shares yet); the on of pitch 5 makes class 5 the whole key
    assert key[0, 0].tolist() == [0.0] * 12
    assert key[0, 1].tolist() == [float(k == 5) for k in range(12)]
    assert after.key.tolist() == [[float(k == 5) for k in range(12)]]
    held = torch.zeros(1, n_p, dtype=torch.bool)
    held[0, [0, 7]] = True  # held before: 0 is ended by event 0, 7 goes on sounding
    counts = torch.zeros(1, 12)
    counts[0, 0], counts[0, 7] = 1.0, 3.0  # struck before: class 0 once, class 7 three times
    inputs, after = model.inputs(codes, Held(held, counts))
    sounding, key = inputs[..., n_classes:n_classes + n_p], inputs[..., n_classes + n_p:]
    assert torch.nonzero(sounding[0, 0]).flatten().tolist() == [7]
    assert torch.nonzero(sounding[0, 1]).flatten().tolist() == [5, 7]
    # the off leaves the counts; the on of pitch 5 decays them (x 0.97) and adds 1 to class 5
    expected = torch.zeros(2, 12)
    expected[0, 0], expected[0, 7] = 0.25, 0.75
    expected[1, 0], expected[1, 5], expected[1, 7] = 0.97, 1.0, 2.91
    expected[1] /= 0.97 + 1.0 + 2.91
    torch.testing.assert_close(key[0], expected)
    torch.testing.assert_close(after.key[0], torch.tensor(
        [0.97 if k == 0 else 1.0 if k == 5 else 2.91 if k == 7 else 0.0 for k in range(12)]))
    # either part of ``before`` may be left out: nothing held, nothing struck
    inputs_no_key, after_no_key = model.inputs(codes, Held(held, None))
    assert torch.equal(inputs_no_key[..., :n_classes + n_p], inputs[..., :n_classes + n_p])
    assert inputs_no_key[0, 0, n_classes + n_p:].tolist() == [0.0] * 12
    assert torch.equal(model.inputs(codes, Held(None, counts))[0][..., n_classes + n_p:], key)


def test_the_default_also_reads_each_sounding_notes_age():
    codes = torch.tensor([[[0, 0, 0], [5, 127, 4], [9, 0, 1]]])  # 0 off, 5 on, 9 off
    n_p, n_classes = CODEC.n_pitches, sum(CODEC.sizes)
    model = tiny_model(CODEC)  # sounding, ages, then key
    assert model.lstm.input_size == n_classes + 2 * n_p + N_PITCH_CLASSES
    held = torch.zeros(1, n_p, dtype=torch.bool)
    held[0, [0, 7, 9]] = True
    ages = torch.zeros(1, n_p)
    ages[0, 0], ages[0, 7], ages[0, 9] = 3.0, 10.0, 1.0  # events each has sounded before
    inputs, after = model.inputs(codes, Held(held, None, ages))
    shares = inputs[..., n_classes + n_p:n_classes + 2 * n_p]
    # worked by hand: every sounding note is one event older after each event; an off ends
    # its note (share 0), a new note starts at 0; a share is age / (age + 6)
    expected = torch.zeros(3, n_p)
    expected[0, 7], expected[0, 9] = 11 / 17, 2 / 8  # after the off of 0
    expected[1, 7], expected[1, 9] = 12 / 18, 3 / 9  # after the on of 5 (age 0, share 0)
    expected[2, 7], expected[2, 5] = 13 / 19, 1 / 7  # after the off of 9
    torch.testing.assert_close(shares[0], expected)
    assert torch.nonzero(after.age[0]).flatten().tolist() == [5, 7]
    assert after.age[0, [5, 7]].tolist() == [1.0, 13.0]
    # ages without the flags mean nothing: no pitch held before, only 5's own age counts
    inputs, _ = model.inputs(codes, Held(None, None, ages))
    assert torch.nonzero(inputs[0, :, n_classes + n_p:n_classes + 2 * n_p]).tolist() == [[2, 5]]


def test_embedding_input_uses_small_learned_tables():
    model = tiny_model(CODEC, input_mode="embedding", embedding_dim=5, **LESSON)
    assert model.lstm.input_size == 15 and model.sounding_embedding is None
    sounding = tiny_model(CODEC, input_mode="embedding", embedding_dim=5, key_input=False,
                          age_input=False)
    assert sounding.lstm.input_size == 15 + 5  # the sounding pitches' rows, summed
    assert sounding.sounding_embedding.weight.shape == (5, CODEC.n_pitches)
    assert sounding.sounding_embedding.bias is None
    both = tiny_model(CODEC, input_mode="embedding", embedding_dim=5)  # the default: ages, key
    assert both.lstm.input_size == 15 + 5 + 5 + N_PITCH_CLASSES
    assert both.age_embedding.weight.shape == (5, CODEC.n_pitches)
    assert [e.weight.shape for e in model.embeddings] == [(n, 5) for n in CODEC.sizes]
    codes = random_codes(CODEC.sizes, (2, 3))
    x = model.embed(codes)
    assert x.shape == (2, 3, 15)
    torch.testing.assert_close(x[..., 5:10], model.embeddings[1].weight[codes[..., 1]])
    # the default's input: the three embeddings, the sum of the sounding pitches' rows, the
    # age shares through their table, then the key shares, raw
    codes = random_codes(CODEC.sizes, (2, 9), seed=3)
    with torch.no_grad():
        inputs, after = both.inputs(codes)
    flags = sounding_flags(codes, CODEC.n_pitches)
    assert flags.any()
    torch.testing.assert_close(inputs[..., :15], both.embed(codes))
    torch.testing.assert_close(inputs[..., 15:20],
                               flags.float() @ both.sounding_embedding.weight.T)
    torch.testing.assert_close(inputs[..., 20:25], age_share(note_ages(flags))
                               @ both.age_embedding.weight.T)
    torch.testing.assert_close(inputs[..., 25:], key_shares(key_profiles(codes)))
    assert torch.equal(after.sounding, flags[:, -1])


@pytest.mark.parametrize("kw", MODES)
def test_input_tables_sum_is_the_first_layer_input_projection(kw):
    model = tiny_model(CODEC, **kw)
    tables = model.input_tables()
    hidden4 = 4 * model.config.hidden_size
    extra = ([(CODEC.n_pitches, hidden4)] if model.config.sounding_input else []) + (
        [(CODEC.n_pitches, hidden4)] if model.config.age_input else []) + (
        [(N_PITCH_CLASSES, hidden4)] if model.config.key_input else [])
    assert [t.shape for t in tables] == [(n, hidden4) for n in CODEC.sizes] + extra
    codes = random_codes(CODEC.sizes, (4, 6), seed=2)
    with torch.no_grad():
        x, _ = model.inputs(codes)
        expected = x @ model.lstm.weight_ih_l0.T  # W_ih @ x
        summed = sum(t[codes[..., i]] for i, t in enumerate(tables[:3]))
        rest = iter(tables[3:])
        if model.config.sounding_input:  # plus a row per sounding pitch
            flags = sounding_flags(codes, CODEC.n_pitches).float()
            assert flags.sum() > 0  # the random codes do leave notes sounding
            summed = summed + flags @ next(rest)
        if model.config.age_input:  # plus a row per sounding pitch times its age share
            shares = age_share(note_ages(sounding_flags(codes, CODEC.n_pitches)))
            assert (shares > 0).sum() > 0
            summed = summed + shares @ next(rest)
        if model.config.key_input:  # plus each pitch class's row times its share
            shares = key_shares(key_profiles(codes))
            assert (shares > 0).sum() > 4 * 6  # the random codes do strike notes
            summed = summed + shares @ next(rest)
    torch.testing.assert_close(summed, expected, atol=1e-5, rtol=1e-5)


def test_config_is_frozen_validated_and_normalised():
    config = ModelConfig(sizes=[3, 4, 5], hidden_size=8)
    assert config.sizes == (3, 4, 5) and isinstance(config.sizes, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_size = 9
    with pytest.raises(ValueError, match="input_mode"):
        ModelConfig(sizes=(3, 4, 5), input_mode="onehot")
    for field, value in (("hidden_size", 0), ("hidden_size", "128"), ("num_layers", 0),
                         ("dropout", 1.0), ("dropout", -0.1), ("embedding_dim", 2.5),
                         ("sounding_input", 1), ("sounding_input", "true"),
                         ("key_input", 0), ("key_input", "false"), ("key_input", None)):
        with pytest.raises(ParameterError, match=f"^parameter {field}: "):
            ModelConfig(sizes=(3, 4, 5), **{field: value})
    assert ModelConfig(**config.to_dict()) == config
    assert hash(config) == hash(ModelConfig(sizes=(3, 4, 5), hidden_size=8))


def test_defaults_are_the_lesson_model_plus_the_sounding_age_and_key_inputs():
    model = NoteLSTM(ModelConfig(sizes=(89, 128, 12), **LESSON))  # the lesson's
    assert model.lstm.input_size == 229 and model.lstm.hidden_size == 128
    assert model.lstm.num_layers == 1 and model.dropout.p == pytest.approx(0.2)
    assert model.head.out_features == 229
    default = ModelConfig(sizes=(89, 128, 12))
    assert default.sounding_input and default.key_input and default.age_input  # reads all three
    model = NoteLSTM(default)
    assert model.lstm.input_size == 229 + 89 + 89 + 12 and model.lstm.hidden_size == 128
    assert model.lstm.num_layers == 1 and model.dropout.p == pytest.approx(0.2)
    assert model.head.out_features == 229


def test_dropout_only_in_training_mode():
    model = tiny_model(CODEC, dropout=0.5)
    codes = random_codes(CODEC.sizes, (2, 5))
    a, _ = model(codes)
    b, _ = model(codes)
    torch.testing.assert_close(a[0], b[0])  # eval: deterministic
    model.train()
    torch.manual_seed(0)
    c, _ = model(codes)
    assert not np.allclose(a[0].detach().numpy(), c[0].detach().numpy())
