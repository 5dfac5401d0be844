"""Training: learns, validates honestly, stops early, keeps the best, is repeatable, resumes,
survives Ctrl-C, and writes its checkpoint atomically."""
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

import midilstm.train as train_module
from helpers_model import fitted_codec, pattern_events, tiny_config, tiny_model
from helpers_model import one_thread  # noqa: F401  (autouse: one torch thread)
from midilstm.checkpoint import load_checkpoint
from midilstm.codec import HEADS
from midilstm.train import TrainConfig, evaluate, train

EVENTS = pattern_events(40)  # 320 events, a bar of 8 repeated
CODEC = fitted_codec(EVENTS)
CODES = CODEC.encode(EVENTS)
TRAIN, VAL = [CODES[:256]], [CODES[256:]]
FAST = TrainConfig(epochs=10, seq_len=16, batch_size=4, lr=5e-2, patience=10, seed=0,
                   transpose_semitones=0)  # the patterns below are in one key


def run(config=FAST, **kw):
    kw.setdefault("model_config", tiny_config(CODEC))
    return train(CODEC, kw.pop("train_codes", TRAIN), kw.pop("val_codes", VAL), config,
                 progress=False, **kw)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "best.pt"
    return run(checkpoint_path=path), path


def unigram_nll(train_codes, val_codes) -> float:
    """Per-event NLL (nats, summed over heads) of the training class frequencies on validation."""
    train_all, val_all = np.concatenate(train_codes), np.concatenate(val_codes)
    total = 0.0
    for i, n in enumerate(CODEC.sizes):
        p = np.bincount(train_all[:, i], minlength=n) / len(train_all)
        total += -np.mean(np.log(np.maximum(p[val_all[1:, i]], 1e-12)))
    return total


def test_learns_a_repeating_pattern_almost_perfectly(trained):
    best, _ = trained
    val = evaluate(best.model, VAL)
    for head in HEADS:
        assert val[f"acc_{head}"] >= 0.95, val
    assert val["nll"] < 0.5


def test_validation_beats_an_untrained_model_and_a_unigram_baseline(trained):
    best, _ = trained
    untrained = evaluate(tiny_model(CODEC), VAL)["nll"]
    baseline = unigram_nll(TRAIN, VAL)
    # the pattern's entropy per head: 4 pitches; half offs + 4 velocities; time 3:2:1:1:1 of 8
    entropy = (math.log(4) + (0.5 * math.log(2) + 0.5 * math.log(8))
               + (3 / 8 * math.log(8 / 3) + 2 / 8 * math.log(4) + 3 / 8 * math.log(8)))
    assert baseline == pytest.approx(entropy, rel=0.01)
    trained_nll = best.history[best.best_epoch - 1]["val"]["nll"]
    assert trained_nll < baseline / 3
    assert trained_nll < untrained / 10


def test_history_has_per_head_train_and_val_metrics_every_epoch(trained):
    best, _ = trained
    assert [h["epoch"] for h in best.history] == list(range(1, FAST.epochs + 1))
    for record in best.history:
        assert record["seconds"] > 0
        for part in ("train", "val"):
            metrics = record[part]
            for head in HEADS:
                assert metrics[f"nll_{head}"] >= 0
                assert 0 <= metrics[f"acc_{head}"] <= 1
            assert metrics["nll"] == pytest.approx(sum(metrics[f"nll_{h}"] for h in HEADS))
    # it learned: the last epoch is far better than the first
    assert best.history[-1]["train"]["nll"] < best.history[0]["train"]["nll"] / 3


def test_best_checkpoint_is_the_best_validation_epoch(trained):
    best, path = trained
    val_nll = [h["val"]["nll"] for h in best.history]
    assert best.best_epoch == int(np.argmin(val_nll)) + 1
    assert evaluate(best.model, VAL)["nll"] == pytest.approx(min(val_nll), rel=1e-6)
    on_disk = load_checkpoint(path)
    assert on_disk.best_epoch == best.best_epoch
    assert same_weights(on_disk.model, best.model)
    assert len(on_disk.history) == len(best.history)  # the final history is saved too


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    frozen = replace(FAST, lr=0.0, epochs=30, patience=3)  # weights never change
    best = run(frozen)
    assert len(best.history) == 1 + 3 < frozen.epochs
    assert best.best_epoch == 1


def test_early_stopping_with_a_validation_set_the_training_data_misleads():
    # validation is the pattern with its pitches shuffled: learning the training pattern
    # helps at first (the velocity and time heads), then hurts
    rng = np.random.default_rng(0)
    val = VAL[0].copy()
    val[:, 0] = rng.permutation(val[:, 0])
    best = run(replace(FAST, epochs=40, patience=3), val_codes=[val])
    n = len(best.history)
    assert n < 40
    assert n - best.best_epoch == 3
    val_nll = [h["val"]["nll"] for h in best.history]
    assert best.best_epoch == int(np.argmin(val_nll)) + 1
    # the weights returned are those of the best epoch, not of the last one
    assert evaluate(best.model, [val])["nll"] == pytest.approx(min(val_nll), rel=1e-6)
    assert evaluate(best.model, [val])["nll"] < val_nll[-1]


def test_same_seed_same_weights_bitwise_and_another_seed_differs():
    config = replace(FAST, epochs=2)
    a, b = run(config), run(config)
    assert same_weights(a.model, b.model)
    assert a.history[-1]["train"] == b.history[-1]["train"]
    c = run(replace(config, seed=1))
    assert not same_weights(a.model, c.model)


def test_training_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(replace(FAST, epochs=1))
    torch.testing.assert_close(torch.rand(3), expected)


def test_resume_continues_the_history(tmp_path):
    first = run(replace(FAST, epochs=3), checkpoint_path=tmp_path / "a.pt")
    resumed = run(replace(FAST, epochs=5), resume_from=tmp_path / "a.pt",
                  checkpoint_path=tmp_path / "b.pt", model_config=None)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]
    assert resumed.history[:3] == first.history
    assert resumed.best_epoch >= first.best_epoch
    assert load_checkpoint(tmp_path / "b.pt").history == resumed.history
    # it went on learning from where it stopped
    assert resumed.history[-1]["val"]["nll"] < first.history[-1]["val"]["nll"]


def test_resume_keeps_the_best_weights_when_nothing_improves(tmp_path):
    # Regression: the resumed model was trained in place, so the "best" checkpoint returned
    # (and saved) held the weights of the last epoch, not of the best one. A huge learning
    # rate (regression: it was ignored on resume) makes every resumed epoch worse.
    first = run(replace(FAST, epochs=4), checkpoint_path=tmp_path / "a.pt")
    resumed = run(replace(FAST, epochs=7, lr=20.0), resume_from=tmp_path / "a.pt",
                  checkpoint_path=tmp_path / "a.pt", model_config=None)
    val_nll = [h["val"]["nll"] for h in resumed.history]
    assert len(val_nll) == 7
    assert min(val_nll[4:]) > min(val_nll[:4])  # the big lr did act
    assert resumed.best_epoch == first.best_epoch
    assert same_weights(resumed.model, first.model)
    assert evaluate(resumed.model, VAL)["nll"] == pytest.approx(min(val_nll), rel=1e-6)
    assert same_weights(load_checkpoint(tmp_path / "a.pt").model, first.model)


def test_ctrl_c_keeps_the_best_checkpoint_on_disk_and_returns_it(tmp_path):
    path = tmp_path / "best.pt"

    def interrupt(record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt

    best = run(checkpoint_path=path, on_epoch=interrupt)
    assert len(best.history) == 3
    assert 1 <= best.best_epoch <= 3
    on_disk = load_checkpoint(path)
    assert on_disk.best_epoch == best.best_epoch
    assert len(on_disk.history) == 3
    assert same_weights(on_disk.model, best.model)
    assert not best.model.training


def test_checkpoint_on_disk_is_always_the_best_so_far(tmp_path):
    path = tmp_path / "best.pt"
    seen = []

    def check(record):
        seen.append(record["val"]["nll"])
        on_disk = load_checkpoint(path)
        assert on_disk.best_epoch == int(np.argmin(seen)) + 1

    run(replace(FAST, epochs=4), checkpoint_path=path, on_epoch=check)
    assert len(seen) == 4


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch, trained):
    best, _ = trained
    path = tmp_path / "best.pt"
    old = run(replace(FAST, epochs=1), checkpoint_path=path)
    old_bytes = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr("midilstm.files.os.fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        best.save(path)
    assert path.read_bytes() == old_bytes  # the old file, whole
    assert load_checkpoint(path).best_epoch == old.best_epoch
    assert os.listdir(tmp_path) == ["best.pt"]  # no half-written temporary left behind
    monkeypatch.undo()
    best.save(path)  # and a successful write replaces it
    assert load_checkpoint(path).best_epoch == best.best_epoch
    assert os.listdir(tmp_path) == ["best.pt"]


def test_transposition_only_touches_training_sequences(monkeypatch):
    calls, evaluated = [], []
    real_transpose, real_evaluate = train_module.transpose, train_module.evaluate

    def spy_transpose(sequences, *args):
        out = real_transpose(sequences, *args)
        calls.append((sequences, out))
        return out

    def spy_evaluate(model, codes_list, *args, **kw):
        evaluated.append([c.copy() for c in codes_list])
        return real_evaluate(model, codes_list, *args, **kw)

    monkeypatch.setattr(train_module, "transpose", spy_transpose)
    monkeypatch.setattr(train_module, "evaluate", spy_evaluate)
    val_before = [v.copy() for v in VAL]
    run(replace(FAST, epochs=2, transpose_semitones=5))
    assert len(calls) == 2 and len(evaluated) == 2
    for sequences, out in calls:
        assert sequences.shape[1] == FAST.seq_len + 1  # training sequences, not validation
        assert (out[..., 1:] == sequences[..., 1:]).all()
        assert (out[..., 0] != sequences[..., 0]).any()
    for codes_list in evaluated:
        np.testing.assert_array_equal(codes_list[0], val_before[0])
    np.testing.assert_array_equal(VAL[0], val_before[0])


def test_model_sizes_must_match_the_codec():
    with pytest.raises(ValueError, match="do not match"):
        run(model_config=replace(tiny_config(CODEC), sizes=(3, 4, 5)))
