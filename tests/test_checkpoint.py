"""Checkpoints: a safe plain file that rebuilds everything needed to generate."""
import io

import numpy as np
import pytest
import torch

from helpers_model import fitted_codec, random_walk_events, tiny_model
from helpers_model import one_thread  # noqa: F401  (autouse: one torch thread)
from midilstm.checkpoint import FORMAT_VERSION, Checkpoint, load_checkpoint
from midilstm.export import events_to_midi
from midilstm.generate import generate
from midilstm.model import ModelConfig
from midilstm.train import TrainConfig, train

EVENTS = random_walk_events(150, seed=3)
CODEC = fitted_codec(EVENTS, n_time_bins=6, time_strategy="quantile", velocity_bins=16)
CODES = CODEC.encode(EVENTS)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    config = ModelConfig(sizes=CODEC.sizes, hidden_size=16, num_layers=2,
                         input_mode="embedding", embedding_dim=4, dropout=0.1)
    best = train(CODEC, [CODES[:240]], [CODES[240:]],
                 TrainConfig(epochs=2, seq_len=16, batch_size=8, seed=4), config,
                 checkpoint_path=path, params={"piece": "walk", "temperature": 0.9},
                 data_hashes=["abc123"], progress=False)
    return best, path


def midi_bytes(events) -> bytes:
    buffer = io.BytesIO()
    events_to_midi(events).save(file=buffer)
    return buffer.getvalue()


def test_the_file_loads_with_weights_only(saved):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION
    assert set(payload["model_state"]) == set(tiny_model(
        CODEC, num_layers=2, input_mode="embedding", embedding_dim=4).state_dict())
    assert payload["data_hashes"] == ["abc123"]
    assert {"python", "torch", "numpy"} <= set(payload["versions"])


def test_load_restores_config_codec_history_params_and_hashes(saved):
    best, path = saved
    loaded = load_checkpoint(path)
    assert loaded.model.config == best.model.config
    assert isinstance(loaded.model.config.sizes, tuple)
    assert loaded.codec == CODEC
    np.testing.assert_array_equal(loaded.codec.encode(EVENTS), CODES)  # same encodings
    np.testing.assert_array_equal(loaded.codec.decode(CODES), CODEC.decode(CODES))
    assert loaded.history == best.history and len(loaded.history) == 2
    assert loaded.best_epoch == best.best_epoch
    assert loaded.params == {"piece": "walk", "temperature": 0.9}
    assert loaded.data_hashes == ["abc123"]
    assert loaded.train_config["seed"] == 4
    assert loaded.optimizer_state and loaded.optimizer_state["state"]
    assert not loaded.model.training
    for key, value in best.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_a_loaded_model_generates_without_training_data(saved):
    best, path = saved
    loaded = load_checkpoint(path)
    primer = [(60, 80, 0.0), (60, 0, 0.3), (62, 70, 0.1), (62, 0, 0.2)]  # not from the data
    out = generate(loaded.model, loaded.codec, primer, n_events=40, seed=1)[0]
    assert len(out) >= 40
    assert midi_bytes(out) == midi_bytes(generate(best.model, CODEC, primer, n_events=40,
                                                  seed=1)[0])


def test_numpy_values_are_saved_as_plain_numbers(tmp_path):
    ckpt = Checkpoint(model=tiny_model(CODEC), codec=CODEC,
                      history=[{"val": {"nll": np.float64(1.5)}}],
                      params={"n": np.int64(3), "arr": np.arange(3)})
    ckpt.save(tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded.history == [{"val": {"nll": 1.5}}]
    assert loaded.params == {"n": 3, "arr": [0, 1, 2]}


def test_an_unknown_format_is_refused(tmp_path):
    torch.save({"format_version": 999}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(tmp_path / "x.pt")
