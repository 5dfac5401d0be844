"""Training: every step of contiguous sequences, an honest validation, the best checkpoint kept.

``train`` feeds the one training loop (``loop.fit``) epochs of a few pieces (notebook 03);
``batch.train_corpus`` feeds the same loop random windows of a corpus.

``train`` learns from all ``seq_len`` steps of every sequence (the lesson learned from the last
step of each 30-event window only), evaluates the held-out part after each epoch, records
per-head NLL and accuracy, keeps the best-validation weights and stops early after ``patience``
epochs without improvement. Ctrl-C stops training and keeps the best checkpoint so far.

A checkpoint already at ``checkpoint_path`` is only ever replaced by a trained one: the best
weights so far go to a partial file beside it (``partial_path``), which is moved over
``checkpoint_path`` when training ends. A run killed mid-training leaves the old file whole;
the next run removes the stale partial file. Bad configurations raise ``ParameterError``
before anything is touched.

With too little music to hold some out (``val_codes`` without any next-event target), training
runs the given epochs without early stopping and keeps the last epoch; each history record
then has ``"val": None`` and ``"validation": "none: too little music"``.

Threads: this model is small. With torch's default (one thread per core) on a busy machine,
its worker threads spin-wait for each other and an epoch takes many times longer; one thread
is as fast when idle and does not collapse under load (``bench/threads.py`` measures it), so
``TrainConfig.threads`` defaults to 1 and the caller's setting is restored afterwards.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .checks import check_int, check_positive
from .checkpoint import Checkpoint, load_checkpoint
from .codec import EventCodec
from .data import NO_VALIDATION, count_targets, training_sequences, transpose
from .errors import ParameterError
from .loop import PRECISIONS, Keep, Loop, fit, use_bfloat16
from .loop import evaluate, optimiser_step, partial_path, sequence_loss  # noqa: F401  (notebook 03)
from .model import ModelConfig, build, torch_threads
from .params import check_fields
from .sounding import Held, held_before


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200  # upper bound; early stopping usually ends far sooner
    seq_len: int = 64  # steps per training sequence, all with a loss (with the lesson's
    #                    inputs, shorter ones cannot learn which notes still sound)
    batch_size: int = 16  # sequences per optimiser step
    lr: float = 1e-2  # Adam learning rate (high, made safe by grad_clip)
    patience: int = 20  # epochs without validation improvement before stopping
    grad_clip: float = 1.0  # max gradient norm: keeps LSTM training stable
    transpose_semitones: int = 5  # random transposition of training sequences only; 0 = off
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    threads: int | None = 1  # torch CPU threads while training (None: leave torch's setting);
    #                          1 is as fast for this model size and does not collapse under load
    precision: str = "float32"  # "bfloat16": mixed precision (weights, optimiser and validation
    #                             stay float32); "auto": bfloat16 where the CPU computes it natively
    time_budget_s: float | None = None  # stop at the first validation after this much training

    def __post_init__(self):
        check_fields(self)  # epochs, seq_len, lr, seed, device, ...: the parameter table's rules
        check_positive("grad_clip", self.grad_clip)
        if self.threads is not None:
            check_int("threads", self.threads, 1)
        if self.time_budget_s is not None:
            check_positive("time_budget_s", self.time_budget_s)
        if self.precision not in PRECISIONS:
            raise ParameterError("precision", f"must be one of {', '.join(PRECISIONS)}, "
                                              f"not {self.precision!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(codec: EventCodec, train_codes: list, val_codes: list, config: TrainConfig = TrainConfig(),
          model_config: ModelConfig | None = None, *, checkpoint_path=None, resume_from=None,
          params: dict | None = None, data_hashes=(), held_out=(), progress: bool = True,
          on_epoch=None, log_every: int = 0) -> Checkpoint:
    """Train and return the best-validation checkpoint (also written to ``checkpoint_path``).

    ``train_codes``/``val_codes`` are lists of (n, 3) code arrays, one per piece; ``val_codes``
    may be empty (too little music): then the last epoch is kept, without early stopping.
    ``held_out``: the names of the validation pieces, kept in the checkpoint.
    ``resume_from`` continues from a checkpoint file (weights, optimizer, history).
    ``on_epoch(record)`` is called after every epoch (for live plots or logging).
    ``log_every=N`` prints one line every N epochs (epoch, losses, events/s) to stdout, for
    runs where the progress bar is not seen (papermill).
    """
    check_int("log_every", log_every, 0)
    if count_targets(train_codes) == 0:
        raise ParameterError("train_codes", "nothing to learn from: no training piece has 2 "
                             "events (a piece with one note has 2: its on and its off)")
    if resume_from is None:
        model_config = model_config or ModelConfig(sizes=codec.sizes)
        if tuple(model_config.sizes) != tuple(codec.sizes):
            raise ParameterError("model_config", f"model sizes {model_config.sizes} do not "
                                 f"match the codec's {codec.sizes}")
    validating = count_targets(val_codes) > 0
    if not validating:
        print(f"no validation data ({NO_VALIDATION}): training {config.epochs} epochs without "
              "early stopping and keeping the last one")
    device = pick_device(config.device)
    with torch_threads(config.threads), torch.random.fork_rng(
            devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)  # weights and dropout, without touching the caller's RNG
        model, optimizer, old = _start(codec, config, model_config, resume_from, device)
        history = list(old.history) if old else []
        rng = np.random.default_rng(config.seed if not history else [config.seed, len(history)])
        held = [held_before(codes, codec.n_pitches) for codes in train_codes]
        epochs = (_epoch_batches(train_codes, held, config, codec, rng, device)
                  for _ in range(len(history), config.epochs))
        loop = Loop(rounds=config.epochs, unit="epoch", patience=config.patience,
                    time_budget_s=config.time_budget_s, grad_clip=config.grad_clip,
                    bf16=use_bfloat16(config.precision, device), log_every=log_every,
                    progress=progress)
        keep = Keep(codec, config.to_dict(), dict(params or {}), list(data_hashes),
                    list(held_out), checkpoint_path)
        return fit(model, optimizer, epochs, loop, keep,
                   validate=(lambda m: evaluate(m, val_codes, device)) if validating else None,
                   best=old, on_record=on_epoch)


def _start(codec, config, model_config, resume_from, device):
    """A new model and optimiser, or those of ``resume_from`` and the checkpoint itself."""
    if resume_from is None:
        model = build(model_config).to(device)
        return model, torch.optim.Adam(model.parameters(), lr=config.lr), None
    old = load_checkpoint(resume_from)
    if tuple(old.model.config.sizes) != tuple(codec.sizes):
        raise ParameterError("resume_from", f"model sizes {old.model.config.sizes} do not "
                                            f"match the codec's {codec.sizes}")
    model = copy.deepcopy(old.model).to(device)  # training must not change the kept best
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if old.optimizer_state:
        optimizer.load_state_dict(old.optimizer_state)
        for group in optimizer.param_groups:  # the saved state carries the old lr
            group["lr"] = config.lr
    return model, optimizer, old


def _epoch_batches(train_codes, held, config, codec, rng, device):
    """One epoch: freshly cut, shuffled and transposed training sequences, batch by batch, with
    what holds before each (``held``: per piece, ``sounding.held_before``)."""
    sequences, before = training_sequences(train_codes, config.seq_len, rng, held)
    sequences, before = transpose(sequences, config.transpose_semitones, codec.n_pitches, rng,
                                  before)
    batches = torch.as_tensor(sequences, dtype=torch.long).split(config.batch_size)
    befores = zip(*(torch.as_tensor(part).split(config.batch_size) for part in before))
    for batch, held_at_start in zip(batches, befores):
        yield batch.to(device), Held(*(part.to(device) for part in held_at_start))
