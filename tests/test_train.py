"""Training: learns, validates honestly, stops early, keeps the best, is repeatable, resumes,
survives Ctrl-C, and writes its checkpoint atomically."""
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

import midilstm.loop as loop_module
import midilstm.train as train_module
from helpers_model import fitted_codec, pattern_events, tiny_config, tiny_model
from helpers_model import one_thread  # noqa: F401  (autouse: one torch thread)
from midilstm.checkpoint import load_checkpoint
from midilstm.codec import HEADS
from midilstm.data import NO_VALIDATION
from midilstm.errors import ParameterError
from midilstm.sounding import N_PITCH_CLASSES, Held
from midilstm.train import TrainConfig, evaluate, partial_path, train
from midilstm.model import LESSON_INPUTS

EVENTS = pattern_events(40)  # 320 events, a bar of 8 repeated
CODEC = fitted_codec(EVENTS)
CODES = CODEC.encode(EVENTS)
TRAIN, VAL = [CODES[:256]], [CODES[256:]]
FAST = TrainConfig(epochs=10, seq_len=16, batch_size=4, lr=5e-2, patience=10, seed=0,
                   transpose_semitones=0)  # the patterns below are in one key
# The fixture's default model also reads the sounding pitches and the key: 89 + 12 more
# inputs, whose weights take a few more epochs to settle than the lesson model's (10 epochs:
# val nll ~0.51)
TRAINED = replace(FAST, epochs=15)


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
    return run(TRAINED, checkpoint_path=path), path


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
    assert best.model.config.sounding_input and best.model.config.key_input  # the default
    val = evaluate(best.model, VAL)
    for head in HEADS:
        assert val[f"acc_{head}"] >= 0.95, val
    assert val["nll"] < 0.5


def test_the_lesson_model_learns_the_pattern_too():
    best = run(model_config=tiny_config(CODEC, **LESSON_INPUTS))
    assert best.model.lstm.input_size == sum(CODEC.sizes)
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
    assert [h["epoch"] for h in best.history] == list(range(1, TRAINED.epochs + 1))
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


def test_early_stopping_stops_after_patience_epochs_without_improvement(monkeypatch):
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, closure=None: None)  # frozen
    frozen = replace(FAST, epochs=30, patience=3)  # weights never change
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
    # rate (regression: it was ignored on resume; 1.0 is the most the parameter table allows)
    # on noise makes every resumed epoch worse.
    first = run(replace(FAST, epochs=4), checkpoint_path=tmp_path / "a.pt")
    noise = np.random.default_rng(0).integers(0, CODEC.sizes, (256, 3))
    resumed = run(replace(FAST, epochs=7, lr=1.0), resume_from=tmp_path / "a.pt",
                  checkpoint_path=tmp_path / "a.pt", model_config=None, train_codes=[noise])
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


def test_partial_file_is_always_the_best_so_far_and_replaces_the_old_one_at_the_end(tmp_path):
    path = tmp_path / "best.pt"
    old = run(replace(FAST, epochs=1), checkpoint_path=path)
    old_bytes = path.read_bytes()
    partial = partial_path(path)
    seen = []

    def check(record):
        seen.append(record["val"]["nll"])
        assert load_checkpoint(partial).best_epoch == int(np.argmin(seen)) + 1
        assert path.read_bytes() == old_bytes  # the old checkpoint, untouched while training

    new = run(replace(FAST, epochs=4), checkpoint_path=path, on_epoch=check)
    assert len(seen) == 4
    assert not partial.exists()
    assert load_checkpoint(path).best_epoch == new.best_epoch != old.best_epoch


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
        calls.append((sequences, args, out))
        return out

    def spy_evaluate(model, codes_list, *args, **kw):
        evaluated.append([c.copy() for c in codes_list])
        return real_evaluate(model, codes_list, *args, **kw)

    monkeypatch.setattr(train_module, "transpose", spy_transpose)
    monkeypatch.setattr(train_module, "evaluate", spy_evaluate)
    val_before = [v.copy() for v in VAL]
    run(replace(FAST, epochs=2, transpose_semitones=5))
    assert len(calls) == 2 and len(evaluated) == 2
    for sequences, args, (out, out_before) in calls:
        assert sequences.shape[1] == FAST.seq_len + 1  # training sequences, not validation
        assert (out[..., 1:] == sequences[..., 1:]).all()
        assert (out[..., 0] != sequences[..., 0]).any()
        # what held before each sequence (the sounding pitches, the key counts) travels with
        # it (the cut points may all fall between notes here: test_sounding checks held
        # pitches)
        before = args[3]
        assert isinstance(before, Held) and isinstance(out_before, Held)
        assert before.sounding.shape == (len(sequences), CODEC.n_pitches)
        assert before.sounding.dtype == bool
        assert before.key.shape == (len(sequences), N_PITCH_CLASSES)
        assert (before.key.sum(axis=1) > 0).mean() > 0.9  # most starts follow struck notes
        shift = out[:, 0, 0] - sequences[:, 0, 0]
        for row, moved, k in zip(before.sounding, out_before.sounding, shift):
            assert (np.flatnonzero(moved) == np.flatnonzero(row) + k).all()
        for row, moved, k in zip(before.key, out_before.key, shift):
            np.testing.assert_array_equal(moved, np.roll(row, k))  # round the octave
    for codes_list in evaluated:
        np.testing.assert_array_equal(codes_list[0], val_before[0])
    np.testing.assert_array_equal(VAL[0], val_before[0])


def test_model_sizes_must_match_the_codec():
    with pytest.raises(ValueError, match="do not match"):
        run(model_config=replace(tiny_config(CODEC), sizes=(3, 4, 5)))


# --- a checkpoint is only ever replaced by a trained one ---------------------------------------
KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import test_train as t
from dataclasses import replace

def die(record):
    if record["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)

t.run(replace(t.FAST, epochs=5), checkpoint_path={path!r}, on_epoch=die)
"""


def test_a_run_killed_mid_training_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path
    path = tmp_path / "model.pt"
    old = run(replace(FAST, epochs=1), checkpoint_path=path)
    old_bytes = path.read_bytes()
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr  # killed at epoch 2
    assert path.read_bytes() == old_bytes
    assert load_checkpoint(path).best_epoch == old.best_epoch
    assert partial_path(path).exists()  # the killed run's best so far, left behind

    # The next run cleans it up even when it is itself interrupted before any epoch ends.
    def interrupted(*args, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(loop_module, "_train_round", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(replace(FAST, epochs=3), checkpoint_path=path)
    assert not partial_path(path).exists()
    assert path.read_bytes() == old_bytes  # nothing trained: nothing replaced


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("epochs", "ten"), ("epochs", 2.5), ("epochs", True), ("seq_len", 0),
    ("batch_size", -1), ("lr", 0.0), ("lr", float("nan")), ("patience", 0), ("grad_clip", -1.0),
    ("transpose_semitones", -1), ("threads", 0), ("device", "")])
def test_bad_configs_are_refused_naming_the_parameter(field, value):
    with pytest.raises(ParameterError, match=f"^parameter {field}: "):
        TrainConfig(**{field: value})


def test_epochs_0_or_nothing_to_learn_from_touch_nothing(tmp_path):
    path = tmp_path / "model.pt"
    run(replace(FAST, epochs=1), checkpoint_path=path)
    old_bytes = path.read_bytes()
    partial_path(path).write_bytes(b"left by a killed run")
    with pytest.raises(ParameterError, match="epochs"):
        run(replace(FAST, epochs=0), checkpoint_path=path)
    with pytest.raises(ParameterError, match="train_codes"):
        run(train_codes=[CODES[:1]], checkpoint_path=path)
    with pytest.raises(ParameterError, match="log_every"):
        run(checkpoint_path=path, log_every=-1)
    with pytest.raises(ParameterError, match="model_config"):
        run(model_config=replace(tiny_config(CODEC), sizes=(3, 4, 5)), checkpoint_path=path)
    assert path.read_bytes() == old_bytes
    assert partial_path(path).read_bytes() == b"left by a killed run"  # not even cleaned yet
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.pt.partial", "model.pt"]


# --- too little music to validate ----------------------------------------------------------------
def test_without_validation_trains_every_epoch_and_keeps_the_last(tmp_path, capsys):
    path = tmp_path / "model.pt"
    config = replace(FAST, epochs=6, patience=1)  # patience would stop a validated run early
    best = run(config, val_codes=[], checkpoint_path=path)
    assert "no validation data" in capsys.readouterr().out
    assert [h["epoch"] for h in best.history] == list(range(1, 7))
    assert best.best_epoch == 6
    for record in best.history:
        assert record["val"] is None and record["validation"] == NO_VALIDATION
    on_disk = load_checkpoint(path)
    assert on_disk.best_epoch == 6 and same_weights(on_disk.model, best.model)
    assert best.history[-1]["train"]["nll"] < best.history[0]["train"]["nll"]  # it learned


def test_validation_pieces_too_short_to_predict_count_as_none():
    best = run(replace(FAST, epochs=2), val_codes=[CODES[:1], CODES[5:6]])
    assert best.best_epoch == 2 and best.history[0]["val"] is None


def test_evaluate_on_nothing_says_so_in_one_line():
    model = tiny_model(CODEC)
    for codes_list in ([], [CODES[:1]]):
        with pytest.raises(ParameterError, match="nothing to evaluate"):
            evaluate(model, codes_list)


# --- progress lines and threads -----------------------------------------------------------------
def test_log_every_prints_one_line_per_n_epochs(capsys):
    run(replace(FAST, epochs=5), log_every=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert [line.split()[1] for line in lines] == ["2/5", "4/5", "5/5"]  # and the last one
    for line in lines:
        assert "train " in line and "val " in line and line.endswith("events/s")
        assert float(line.split()[-2].replace(",", "")) > 0
    run(replace(FAST, epochs=2))
    assert "epoch" not in capsys.readouterr().out  # off by default


def test_training_uses_the_configured_threads_and_restores_the_callers(monkeypatch):
    seen = []
    real_epoch = loop_module._train_round

    def spy(*args):
        seen.append(torch.get_num_threads())
        return real_epoch(*args)

    monkeypatch.setattr(loop_module, "_train_round", spy)
    torch.set_num_threads(2)
    try:
        run(replace(FAST, epochs=1, threads=1))
        assert seen == [1] and torch.get_num_threads() == 2
        run(replace(FAST, epochs=1, threads=None))  # None: leave torch's setting
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(1)


def test_a_time_budget_stops_at_the_first_validation_after_it(tmp_path):
    clock = iter(range(0, 10_000, 10))  # every perf_counter call: 10 s later
    real = loop_module.time.perf_counter
    loop_module.time.perf_counter = lambda: float(next(clock))
    try:
        best = run(replace(FAST, epochs=50, time_budget_s=25), checkpoint_path=tmp_path / "m.pt")
    finally:
        loop_module.time.perf_counter = real
    # each epoch "takes" 10 s: 10, 20, 30 s of training, and the third validation ends it
    assert [h["elapsed_s"] for h in best.history] == [10, 20, 30]
    assert load_checkpoint(tmp_path / "m.pt").history == best.history
    with pytest.raises(ParameterError, match="time_budget_s"):
        TrainConfig(time_budget_s=0)


def test_the_checkpoint_names_the_pieces_validation_held_out(tmp_path):
    best = run(replace(FAST, epochs=1), checkpoint_path=tmp_path / "m.pt",
               held_out=["tune.mid (end)"])
    assert best.held_out == load_checkpoint(tmp_path / "m.pt").held_out == ["tune.mid (end)"]
    sequences = best.history[0]["events"] // 16  # seq_len 16: every step of each has a loss
    assert best.history[0]["step"] == math.ceil(sequences / 4)  # batch_size 4
