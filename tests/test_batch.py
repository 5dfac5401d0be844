"""Corpus training from the command line: windows that never cross pieces, training that learns,
checkpoints that generate, and DDP with 2 gloo processes matching 1 process."""
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from conftest import off, on, tempo, write_midi_file
from midilstm.baselines import baseline_table
from midilstm.batch import (CorpusTrainConfig, held_out_report, held_out_split, sample_windows,
                            train_corpus)
from midilstm.batch_cli import main
from midilstm.checkpoint import load_checkpoint
from midilstm.corpus import load_corpus, read_corpus
from midilstm.data import split_names
from midilstm.errors import ParameterError
from midilstm.parse import read_midi
from midilstm.loop import native_bfloat16


def make_songs(folder, n_pieces=8, notes=60, seed=0):
    """Real MIDI files: scale-wise random walks (learnable), one per piece, varied lengths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_pieces):
        pitch, messages = 60 + int(rng.integers(-5, 6)), [tempo(120)]
        for _ in range(notes + 7 * k):
            pitch = int(np.clip(pitch + rng.choice([-2, -1, 1, 2]), 40, 90))
            messages += [on(pitch, 80), off(pitch, t=int(rng.choice([120, 240])))]
        write_midi_file(folder / f"song_{k}.mid", [messages])
    return folder


@pytest.fixture
def corpus_dir(tmp_path):
    corpus = read_corpus(make_songs(tmp_path / "songs"), cache_dir=None, workers=1,
                         progress=False)
    return corpus.save(tmp_path / "corpus")


def test_windows_stay_inside_training_pieces_and_cover_them_uniformly():
    offsets = np.array([0, 5, 6, 20, 24, 40])  # piece lengths 5, 1, 14, 4, 16
    pieces = [0, 1, 2, 4]  # piece 3 is held out
    length = 5
    starts = sample_windows(offsets, pieces, length, 60_000, np.random.default_rng(0))
    # brute force: every start whose window of 5 lies inside one of the pieces
    valid = [s for p in pieces for s in range(offsets[p], offsets[p + 1] - length + 1)]
    assert set(starts.tolist()) == set(valid)
    counts = np.array([(starts == s).sum() for s in valid])
    expected = len(starts) / len(valid)
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)  # uniform over windows
    with pytest.raises(ParameterError, match="seq_len"):
        sample_windows(offsets, [1, 3], length, 1, np.random.default_rng(0))


def test_training_learns_and_the_checkpoint_generates(corpus_dir, tmp_path):
    corpus = load_corpus(corpus_dir)
    config = CorpusTrainConfig(steps=60, batch_size=8, seq_len=32, lr=1e-2, eval_every=30,
                               transpose_semitones=2)
    best = train_corpus(corpus, config, {"hidden_size": 32}, checkpoint_path=tmp_path / "m.pt",
                        progress=False)
    first, last = best.history[0]["val"]["nll"], best.history[-1]["val"]["nll"]
    uniform = float(np.log(best.codec.sizes).sum())  # knowing nothing: log of the class counts
    assert [h["step"] for h in best.history] == [30, 60]
    assert last < first < uniform
    _, val = split_names(corpus.names)
    assert best.held_out == [corpus.names[i] for i in val]
    saved = load_checkpoint(tmp_path / "m.pt")
    assert saved.model.config.hidden_size == 32 and saved.history == best.history

    assert main(["generate", "--checkpoint", str(tmp_path / "m.pt"), "--out",
                 str(tmp_path / "gen"), "--n", "2", "--events", "80"]) == 0
    for i in range(2):
        events = read_midi(tmp_path / "gen" / f"sample_{i}.mid").events
        assert len(events) >= 20 and (events["velocity"] > 0).sum() == (events["velocity"] == 0).sum()


def test_command_line_corpus_and_train(tmp_path, capsys):
    songs = make_songs(tmp_path / "songs", n_pieces=4)
    (songs / "broken.mid").write_bytes(b"MThd\x00")
    assert main(["corpus", str(songs), "--out", str(tmp_path / "c"), "--no-cache",
                 "--workers", "1"]) == 1  # saved, but one file could not be read
    assert "broken.mid" in capsys.readouterr().err
    assert json.loads((tmp_path / "c" / "corpus.json").read_text())["stats"]["pieces"] == 4
    assert main(["train", "--data", str(tmp_path / "c"), "--out", str(tmp_path / "m.pt"),
                 "--steps", "4", "--eval-every", "2", "--batch-size", "4", "--seq-len", "16",
                 "--hidden-size", "16", "--num-layers", "2"]) == 0
    assert load_checkpoint(tmp_path / "m.pt").model.config.num_layers == 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores > 1:  # one process uses one core: the command says how to use them all
        assert f"--nproc_per_node {cores}" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "x.pt")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {tmp_path / 'nowhere'}: no readable MIDI files, and not a corpus folder")
    assert not (tmp_path / "x.pt").exists()


def test_report_scores_the_held_out_pieces_against_baselines(corpus_dir, tmp_path, capsys):
    corpus = load_corpus(corpus_dir)
    config = CorpusTrainConfig(steps=40, batch_size=8, seq_len=32, eval_every=20)
    best = train_corpus(corpus, config, {"hidden_size": 24}, checkpoint_path=tmp_path / "m.pt",
                        progress=False)
    report = held_out_report(load_checkpoint(tmp_path / "m.pt"), corpus)
    # the model's NLL is what training measured on its held-out pieces for the kept checkpoint
    kept = best.history[best.best_epoch - 1]["val"]["nll"]
    assert report["model"]["nll"] == pytest.approx(kept, abs=1e-5)
    # the baselines: fitted on the training pieces of the split rule, scored on its held-out ones
    train_idx, val_idx = split_names(corpus.names)
    codes = [best.codec.encode(corpus.piece(i)) for i in range(len(corpus))]
    table = baseline_table([codes[i] for i in train_idx], [codes[i] for i in val_idx],
                           best.codec.sizes)
    for name in ("unigram", "bigram", "repeat_last"):
        assert report[name]["nll"] == pytest.approx(table[name]["nll"])
    assert report["model"]["nll"] < report["unigram"]["nll"]

    assert main(["report", "--checkpoint", str(tmp_path / "m.pt"), "--data", str(corpus_dir),
                 "--curve", str(tmp_path / "curve.png")]) == 0
    out = capsys.readouterr().out
    assert f"| model | {kept:.3f} |" in out and "| bigram |" in out
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["generate", "--checkpoint", str(tmp_path / "m.pt"), "--out",
                 str(tmp_path / "gen"), "--n", "3", "--events", "40", "--piano-roll",
                 str(tmp_path / "roll.png")]) == 0
    assert (tmp_path / "roll.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_refuses_a_corpus_without_the_held_out_pieces(corpus_dir, tmp_path, capsys):
    corpus = load_corpus(corpus_dir)
    best = train_corpus(corpus, CorpusTrainConfig(steps=2, batch_size=4, seq_len=16,
                                                  eval_every=2), {"hidden_size": 8},
                        checkpoint_path=tmp_path / "m.pt", progress=False)
    _, val = held_out_split(best, corpus)
    assert [corpus.names[i] for i in val] == best.held_out
    others = corpus.subset([i for i in range(len(corpus)) if i not in val])
    with pytest.raises(ParameterError, match="not in the corpus"):
        held_out_report(best, others)
    others.save(tmp_path / "others")
    assert main(["report", "--checkpoint", str(tmp_path / "m.pt"), "--data",
                 str(tmp_path / "others")]) == 2
    assert "held-out piece(s) of the checkpoint are not in the corpus" in \
        capsys.readouterr().err


# --- DDP: 2 gloo processes on CPU against 1 process with the same global batch ---------------

# batch_size is per process: 2 x 4 windows against 1 x 8. float32, no per-rank randomness.
DDP_CONFIG = CorpusTrainConfig(steps=8, batch_size=4, seq_len=24, lr=5e-3, eval_every=4,
                               transpose_semitones=0, precision="float32")
DDP_MODEL = {"hidden_size": 24, "dropout": 0.0}


def _ddp_rank(rank, world, rendezvous, corpus_dir, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                                         world_size=world)
    try:
        train_corpus(load_corpus(corpus_dir), DDP_CONFIG, DDP_MODEL, checkpoint_path=out,
                     progress=False)
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one_process(corpus_dir, tmp_path):
    one = train_corpus(load_corpus(corpus_dir), replace(DDP_CONFIG, batch_size=8), DDP_MODEL,
                       progress=False)
    mp.start_processes(_ddp_rank, args=(2, str(tmp_path / "rdv"), str(corpus_dir),
                                        str(tmp_path / "ddp.pt")), nprocs=2, join=True,
                       start_method="spawn")
    two = load_checkpoint(tmp_path / "ddp.pt")
    assert two.params["world_size"] == 2 and one.params["world_size"] == 1
    # Same global batch, same windows: only the order of float sums differs (the gradient is
    # averaged over 2 ranks instead of summed in one), so after 8 Adam steps weights agree to
    # 1e-4 and the validation NLL to 1e-4 nats.
    for name, weight in one.model.state_dict().items():
        torch.testing.assert_close(two.model.state_dict()[name], weight, atol=1e-4, rtol=0)
    for a, b in zip(one.history, two.history):
        assert a["step"] == b["step"]
        assert abs(a["val"]["nll"] - b["val"]["nll"]) < 1e-4
    # and not trivially: training moved the weights much further than the tolerance
    fresh = torch.nn.utils.parameters_to_vector(one.model.parameters())
    torch.manual_seed(0)
    from midilstm.lstm import NoteLSTM
    init = NoteLSTM(one.model.config)
    assert (fresh - torch.nn.utils.parameters_to_vector(init.parameters())).abs().max() > 1e-2


# --- mixed precision ---------------------------------------------------------------------------

NATIVE_BF16 = pytest.mark.skipif(not native_bfloat16(torch.device("cpu")),
                                 reason="this CPU has no AVX-512 BF16 or AMX")


@NATIVE_BF16
def test_bfloat16_training_learns_like_float32_and_keeps_float32_weights(corpus_dir):
    corpus = load_corpus(corpus_dir)
    config = CorpusTrainConfig(steps=60, batch_size=8, seq_len=32, eval_every=30)
    runs = {p: train_corpus(corpus, replace(config, precision=p), {"hidden_size": 32},
                            progress=False) for p in ("float32", "bfloat16")}
    for precision, best in runs.items():
        assert best.params["precision"] == precision
        assert all(w.dtype == torch.float32 for w in best.model.state_dict().values())
    full, mixed = (runs[p].history[-1]["val"]["nll"] for p in ("float32", "bfloat16"))
    first = runs["bfloat16"].history[0]["val"]["nll"]
    # bfloat16 keeps 8 bits of mantissa: the runs differ, but learn the same amount
    assert mixed < first and abs(mixed - full) < 0.1 * full
    assert mixed != full  # the products really ran in bfloat16


@NATIVE_BF16
def test_auto_precision_is_bfloat16_only_where_the_hardware_has_it(corpus_dir, monkeypatch):
    import midilstm.loop as train
    corpus = load_corpus(corpus_dir)
    config = CorpusTrainConfig(steps=2, batch_size=2, seq_len=8, eval_every=2)
    assert config.precision == "auto"
    assert not native_bfloat16(torch.device("cuda"))  # not measured there: float32
    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(train, "native_bfloat16", lambda device, native=native: native)
        best = train_corpus(corpus, config, {"hidden_size": 8}, progress=False)
        assert best.params["precision"] == expected
    with pytest.raises(ParameterError, match="precision: must be one of auto, float32, bfloat16"):
        CorpusTrainConfig(precision="float16")


def test_bfloat16_where_it_cannot_run_is_one_line_before_training(corpus_dir, monkeypatch):
    def refuse(self, *args, **kwargs):  # what oneDNN says on a CPU without bfloat16 support
        raise RuntimeError("could not create a primitive descriptor for the LSTM forward "
                           "propagation primitive\nmore detail")
    monkeypatch.setattr(torch.nn.LSTM, "forward", refuse)
    config = CorpusTrainConfig(steps=2, batch_size=2, seq_len=8, eval_every=2,
                               precision="bfloat16")
    with pytest.raises(ParameterError) as err:
        train_corpus(load_corpus(corpus_dir), config, {"hidden_size": 8}, progress=False)
    assert str(err.value) == (
        "parameter precision: bfloat16 does not run on cpu here (could not create a primitive "
        "descriptor for the LSTM forward propagation primitive); use float32")


def test_the_loss_without_statistics_is_the_same_loss():
    from midilstm.lstm import NoteLSTM
    from midilstm.model import ModelConfig
    from midilstm.train import sequence_loss
    torch.manual_seed(0)
    model = NoteLSTM(ModelConfig(sizes=(20, 8, 6), hidden_size=16)).eval()
    batch = torch.stack([torch.randint(0, n, (3, 11)) for n in (20, 8, 6)], dim=-1)
    with_stats, stats = sequence_loss(model, batch)
    without, none = sequence_loss(model, batch, stats=False)
    assert none is None and len(stats) == 3 and without.item() == with_stats.item()
    # and both are the mean over steps of the summed per-head NLL, computed independently
    log_probs, _ = model(batch[:, :-1])
    by_hand = sum(-lp.gather(-1, batch[:, 1:, i, None]).mean() for i, lp in enumerate(log_probs))
    torch.testing.assert_close(without, by_hand)


def test_the_same_seed_gives_the_same_model_and_another_seed_does_not(corpus_dir):
    corpus = load_corpus(corpus_dir)
    config = CorpusTrainConfig(steps=12, batch_size=4, seq_len=16, eval_every=6)
    runs = [train_corpus(corpus, replace(config, seed=seed), {"hidden_size": 16},
                         progress=False) for seed in (3, 3, 4)]
    same, again, other = ([h["val"]["nll"] for h in r.history] for r in runs)
    assert same == again and same != other
    for name, weight in runs[0].model.state_dict().items():
        assert torch.equal(weight, runs[1].model.state_dict()[name])
