"""Training: every step of contiguous sequences, an honest validation, the best checkpoint kept.

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
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .checks import check_int, check_positive
from .checkpoint import Checkpoint, load_checkpoint
from .codec import HEADS, EventCodec
from .constants import DEVICE_PATTERN
from .data import NO_VALIDATION, count_targets, training_sequences, transpose
from .errors import ParameterError
from .model import ModelConfig, build, torch_threads
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

    def __post_init__(self):
        check_int("epochs", self.epochs, 1)
        check_int("seq_len", self.seq_len, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("patience", self.patience, 1)
        check_int("transpose_semitones", self.transpose_semitones, 0)
        check_int("seed", self.seed, 0)
        check_positive("lr", self.lr)
        check_positive("grad_clip", self.grad_clip)
        if self.threads is not None:
            check_int("threads", self.threads, 1)
        if not isinstance(self.device, str) or not re.fullmatch(DEVICE_PATTERN, self.device):
            raise ParameterError("device", f"must be 'auto', 'cpu', 'mps' or 'cuda[:N]', "
                                           f"not {self.device!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def partial_path(checkpoint_path) -> Path:
    """Where ``train`` keeps the best checkpoint so far until training ends."""
    path = Path(checkpoint_path)
    return path.with_name(f".{path.name}.partial")


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sequence_loss(model: torch.nn.Module, batch: torch.Tensor, stats: bool = True,
                  before=None):
    """Summed NLL of the three heads over every step of ``batch`` (n, seq_len + 1, 3), plus
    per-head (nll_sum, correct, count) for the metrics (``None`` with ``stats=False``: the
    argmax for the accuracy costs about 8% of a small model's training step). ``before``: what
    held before each sequence (``sounding.Held`` of tensors), for a model that reads it."""
    log_probs, _ = model(batch[:, :-1], (None, before))
    targets = batch[:, 1:]
    per_head, total = [], 0.0
    for i, lp in enumerate(log_probs):
        nll = F.nll_loss(lp.reshape(-1, lp.shape[-1]), targets[..., i].reshape(-1), reduction="sum")
        if stats:
            correct = (lp.argmax(-1) == targets[..., i]).sum()
            per_head.append((nll.detach(), correct, targets[..., i].numel()))
        total = total + nll
    return total / targets[..., 0].numel(), per_head if stats else None


def optimiser_step(model: torch.nn.Module, optimizer, loss: torch.Tensor, grad_clip: float):
    """Backpropagate ``loss``, clip the gradient norm to ``grad_clip`` (keeps the LSTM stable
    at a high learning rate) and update the weights."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


@torch.no_grad()
def evaluate(model: torch.nn.Module, codes_list: list, device=None, chunk: int = 2048) -> dict:
    """Per-head mean NLL (nats per event) and accuracy over every next-event prediction of each
    sequence, run from the start of each piece with the LSTM state carried across chunks."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = np.zeros((3, 3))  # head x (nll_sum, correct, count)
    for codes in codes_list:
        x = torch.as_tensor(np.asarray(codes), dtype=torch.long, device=device)[None]
        state = None
        for start in range(0, x.shape[1] - 1, chunk):
            piece = x[:, start:start + chunk + 1]
            log_probs, state = model(piece[:, :-1], state)
            for i, lp in enumerate(log_probs):
                target = piece[0, 1:, i]
                totals[i] += (F.nll_loss(lp[0], target, reduction="sum").item(),
                              (lp[0].argmax(-1) == target).sum().item(), target.numel())
    model.train(was_training)
    if totals[0, 2] == 0:
        raise ParameterError("codes_list", "nothing to evaluate: no piece has 2 events (a "
                             "prediction needs an event before it); check data.count_targets first")
    return _metrics(totals)


def _metrics(totals) -> dict:
    out = {}
    for i, head in enumerate(HEADS):
        nll_sum, correct, count = totals[i]
        out[f"nll_{head}"] = float(nll_sum / max(count, 1))
        out[f"acc_{head}"] = float(correct / max(count, 1))
    out["nll"] = sum(out[f"nll_{h}"] for h in HEADS)
    return out


def train(codec: EventCodec, train_codes: list, val_codes: list, config: TrainConfig = TrainConfig(),
          model_config: ModelConfig | None = None, *, checkpoint_path=None, resume_from=None,
          params: dict | None = None, data_hashes=(), progress: bool = True,
          on_epoch=None, log_every: int = 0) -> Checkpoint:
    """Train and return the best-validation checkpoint (also written to ``checkpoint_path``).

    ``train_codes``/``val_codes`` are lists of (n, 3) code arrays, one per piece; ``val_codes``
    may be empty (too little music): then the last epoch is kept, without early stopping.
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
    partial = partial_path(checkpoint_path) if checkpoint_path else None
    if partial is not None:
        partial.unlink(missing_ok=True)  # left by a run that was killed
    if not validating:
        print(f"no validation data ({NO_VALIDATION}): training {config.epochs} epochs without "
              "early stopping and keeping the last one")
    with torch_threads(config.threads):
        best, trained = _fit(codec, train_codes, val_codes, config, model_config, validating,
                             partial, resume_from, params, data_hashes, progress, on_epoch,
                             log_every)
    if partial is not None and trained:
        best.save(partial)  # the final history, even when the best epoch was early
        os.replace(partial, checkpoint_path)
    best.model.eval()
    return best


def _fit(codec, train_codes, val_codes, config, model_config, validating, partial, resume_from,
         params, data_hashes, progress, on_epoch, log_every):
    """The epochs; returns ``(best checkpoint, whether it holds trained weights)``."""
    device = pick_device(config.device)
    rng = np.random.default_rng(config.seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)  # weights and dropout, without touching the caller's RNG
        if resume_from is not None:
            best = load_checkpoint(resume_from)
            model = copy.deepcopy(best.model).to(device)  # training must not change ``best``
            if tuple(model.config.sizes) != tuple(codec.sizes):
                raise ParameterError("resume_from", f"model sizes {model.config.sizes} do not "
                                     f"match the codec's {codec.sizes}")
        else:
            model = build(model_config).to(device)
            best = None
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        history = []
        if best is not None:
            history = list(best.history)
            if best.optimizer_state:
                optimizer.load_state_dict(best.optimizer_state)
                for group in optimizer.param_groups:  # the saved state carries the old lr
                    group["lr"] = config.lr
            rng = np.random.default_rng([config.seed, len(history)])  # fresh stream per resume
        best_nll = min((h["val"]["nll"] for h in history if h.get("val")), default=math.inf)
        best = best or _snapshot(model, codec, config, history, -1, params, data_hashes, optimizer)
        stale, completed = 0, 0
        held = [held_before(codes, codec.n_pitches) for codes in train_codes]
        bar = tqdm(range(len(history), config.epochs), desc="training", unit="epoch",
                   disable=not progress, initial=len(history), total=config.epochs)
        try:
            for epoch in bar:
                record = _train_epoch(model, optimizer, train_codes, held, config, codec, rng,
                                      device, epoch)
                if validating:
                    record["val"] = evaluate(model, val_codes, device)
                else:
                    record["val"], record["validation"] = None, NO_VALIDATION
                history.append(record)
                completed += 1
                # Without validation the latest epoch is the best we know of.
                score = record["val"]["nll"] if validating else -math.inf
                if score < best_nll or not validating:
                    best_nll, stale = score, 0
                    best = _snapshot(model, codec, config, history, epoch, params, data_hashes,
                                     optimizer)
                    if partial is not None:
                        best.save(partial)
                else:
                    stale += 1
                best.history = list(history)
                bar.set_postfix(_summary(record, best_nll, validating))
                if log_every and (record["epoch"] % log_every == 0 or epoch + 1 == config.epochs):
                    print(_log_line(record, config.epochs, best.best_epoch), flush=True)
                if on_epoch:
                    on_epoch(record)
                if validating and stale >= config.patience:
                    break
        except KeyboardInterrupt:  # keep what we have: the best checkpoint so far
            if completed == 0 and best.best_epoch < 1:
                raise  # nothing trained: nothing to keep, the old checkpoint stays
            print(f"interrupted after {len(history)} epochs; keeping the best (epoch {best.best_epoch})")
        finally:
            bar.close()
    return best, completed > 0 or best.best_epoch >= 1


def _summary(record, best_nll, validating) -> dict:
    out = {"train": f"{record['train']['nll']:.3f}"}
    if validating:
        out.update(val=f"{record['val']['nll']:.3f}", best=f"{best_nll:.3f}")
    return out


def _log_line(record, epochs, best_epoch) -> str:
    """One progress line: ``epoch 5/200  train 4.123  val 4.456  best epoch 3  12,345 events/s``."""
    val = (f"val {record['val']['nll']:.3f}  best epoch {best_epoch}" if record["val"]
           else f"val {record['validation']}")
    rate = record["events"] / record["seconds"] if record["seconds"] > 0 else float("nan")
    return (f"epoch {record['epoch']}/{epochs}  train {record['train']['nll']:.3f}  {val}  "
            f"{rate:,.0f} events/s")


def _train_epoch(model, optimizer, train_codes, held, config, codec, rng, device, epoch):
    """One pass over freshly cut and shuffled training sequences (``held``: per piece, what
    holds before each event, ``sounding.held_before``)."""
    sequences, before = training_sequences(train_codes, config.seq_len, rng, held)
    sequences, before = transpose(sequences, config.transpose_semitones, codec.n_pitches, rng,
                                  before)
    batches = torch.as_tensor(sequences, dtype=torch.long).split(config.batch_size)
    befores = zip(*(torch.as_tensor(part).split(config.batch_size) for part in before))
    model.train()
    totals = np.zeros((3, 3))
    start = time.perf_counter()
    for batch, held_at_start in zip(batches, befores):
        loss, stats = sequence_loss(model, batch.to(device),
                                    before=Held(*(part.to(device) for part in held_at_start)))
        optimiser_step(model, optimizer, loss, config.grad_clip)
        for i, (nll, correct, count) in enumerate(stats):
            totals[i] += (nll.item(), correct.item(), count)
    return {"epoch": epoch + 1, "seconds": time.perf_counter() - start,
            "events": int(totals[0, 2]), "train": _metrics(totals)}


def _snapshot(model, codec, config, history, epoch, params, data_hashes, optimizer) -> Checkpoint:
    """A detached copy of the current state, so later epochs cannot change it."""
    return Checkpoint(model=copy.deepcopy(model).cpu(), codec=codec, train_config=config.to_dict(),
                      history=list(history), best_epoch=epoch + 1, params=dict(params or {}),
                      data_hashes=list(data_hashes), optimizer_state=_cpu(optimizer.state_dict()))


def _cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj
