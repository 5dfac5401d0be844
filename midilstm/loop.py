"""The training loop, every trainer's: the loss, the optimiser step, the validation, and rounds
of them with the best checkpoint kept.

``fit`` runs rounds of optimiser steps, each followed by a validation; it keeps the best
checkpoint (to a partial file beside its path until training ends, so an old checkpoint is only
ever replaced by a trained one), stops early after ``patience`` rounds without improvement or
at a time budget, and keeps the best so far on Ctrl-C. What feeds it differs: epochs of a few
pieces (``train.train``, notebook 03) or random windows of a corpus (``batch.train_corpus``),
with bfloat16 and DistributedDataParallel as ``Loop`` options.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch.nn import functional as F
from tqdm.auto import tqdm

from .checkpoint import Checkpoint
from .codec import HEADS, EventCodec
from .data import NO_VALIDATION
from .errors import ParameterError

PRECISIONS = ("auto", "float32", "bfloat16")


def partial_path(checkpoint_path) -> Path:
    """Where ``train`` keeps the best checkpoint so far until training ends."""
    path = Path(checkpoint_path)
    return path.with_name(f".{path.name}.partial")


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


@dataclass(frozen=True)
class Loop:
    """How ``fit`` runs: at most ``rounds`` rounds (a round is a run of optimiser steps followed
    by one validation: an epoch of a few pieces, or ``eval_every`` steps of a corpus), stopping
    after ``patience`` rounds without improvement or at the first validation after
    ``time_budget_s`` seconds of training. ``bf16``: forward and backward in bfloat16 mixed
    precision. ``stats``: per-head training NLL and accuracy (the argmax costs ~8%).
    ``world``: processes under ``torch.distributed`` (only rank 0 validates and keeps)."""

    rounds: int
    unit: str = "epoch"  # what a round is called in records, logs and the progress bar
    patience: int | None = None
    time_budget_s: float | None = None
    grad_clip: float = 1.0
    bf16: bool = False
    stats: bool = True
    log_every: int = 0
    progress: bool = True
    rank: int = 0
    world: int = 1


@dataclass(frozen=True)
class Keep:
    """What every kept checkpoint carries besides the model and its history, and where it goes:
    the best so far to ``partial_path(path)`` while training, moved over ``path`` at the end."""

    codec: EventCodec
    train_config: dict
    params: dict
    data_hashes: list
    held_out: list
    path: Path | str | None = None

    def snapshot(self, model, history, best_round, optimizer) -> Checkpoint:
        """A detached copy of the current state, so later rounds cannot change it."""
        return Checkpoint(model=copy.deepcopy(model).cpu().eval(), codec=self.codec,
                          train_config=self.train_config, history=list(history),
                          best_epoch=best_round, params=dict(self.params),
                          data_hashes=list(self.data_hashes), held_out=list(self.held_out),
                          optimizer_state=_cpu(optimizer.state_dict()))


def fit(model, optimizer, rounds, loop: Loop, keep: Keep, *, validate=None, stepper=None,
        best: Checkpoint | None = None, on_record=None) -> Checkpoint | None:
    """The training loop. ``rounds`` yields, round after round, an iterable of ``(batch,
    before)`` (codes ``(n, seq_len + 1, 3)`` and what held before each sequence, on the model's
    device). After each round: ``validate(model)`` (metrics as ``evaluate``; None: keep the
    latest round), the record appended to the history, the best checkpoint kept. Ctrl-C keeps
    the best so far. ``stepper``: what computes the loss (a DistributedDataParallel wrapper of
    ``model``). ``best``: the checkpoint training resumes from (its history goes on). Returns
    the best checkpoint on rank 0, None on the other ranks."""
    main = loop.rank == 0
    partial = partial_path(keep.path) if keep.path and main else None
    if partial is not None:
        partial.unlink(missing_ok=True)  # left by a run that was killed
    history = list(best.history) if best else []
    best_nll = min((h["val"]["nll"] for h in history if h.get("val")), default=math.inf)
    if main and best is None:
        best = keep.snapshot(model, history, -1, optimizer)
    stale, steps = 0, history[-1]["step"] if history and "step" in history[-1] else 0
    elapsed = sum(h["seconds"] for h in history)
    bar = _progress_bar(loop, len(history), elapsed, disable=not (loop.progress and main))
    completed = 0
    try:
        for batches in rounds:
            record, steps = _train_round(model, stepper or model, optimizer, batches, loop,
                                         len(history) + 1, steps)
            elapsed += record["seconds"]
            record["elapsed_s"] = elapsed
            stop = False
            if main:
                record["val"] = validate(model) if validate else None
                if validate is None:
                    record["validation"] = NO_VALIDATION
                history.append(record)
                if validate is None or record["val"]["nll"] < best_nll:  # none: the latest
                    best_nll, stale = record["val"]["nll"] if validate else best_nll, 0
                    best = keep.snapshot(model, history, len(history), optimizer)
                    if partial is not None:
                        best.save(partial)
                else:
                    stale += 1
                best.history = list(history)
                _report(bar, record, loop, best_nll, best.best_epoch, validate is not None)
                if on_record:
                    on_record(record)
                stop = bool(validate and loop.patience and stale >= loop.patience) or bool(
                    loop.time_budget_s and elapsed >= loop.time_budget_s)
            else:
                history.append(record)
            completed += 1
            if _agree(stop, loop, model):
                bar.total = bar.n  # a stop by rule is a finished bar, not a failed one
                break
    except KeyboardInterrupt:  # keep what we have: the best checkpoint so far
        if not main or (completed == 0 and best.best_epoch < 1):
            raise  # nothing trained: nothing to keep, the old checkpoint stays
        print(f"interrupted after {len(history)} {loop.unit}s; keeping the best "
              f"({loop.unit} {best.best_epoch})")
    finally:
        bar.close()
    if not main:
        return None
    if partial is not None and (completed or best.best_epoch >= 1):
        best.save(partial)  # the final history, even when the best round was early
        os.replace(partial, keep.path)
    return best


def _train_round(model, stepper, optimizer, batches, loop, number, steps):
    """One round of optimiser steps; returns its record (without validation) and the steps."""
    model.train()
    totals, losses, n_steps = np.zeros((3, 3)), 0.0, 0
    start = time.perf_counter()
    for batch, before in batches:
        with torch.autocast(batch.device.type, torch.bfloat16, enabled=loop.bf16):
            loss, stats = sequence_loss(stepper, batch, stats=loop.stats, before=before)
        optimiser_step(stepper, optimizer, loss, loop.grad_clip)
        losses, n_steps = losses + loss.item(), n_steps + 1
        totals[:, 2] += batch[:, 1:, 0].numel() * loop.world
        for i, (nll, correct, _) in enumerate(stats or ()):
            totals[i, :2] += (nll.item(), correct.item())
    seconds = time.perf_counter() - start
    events = int(totals[0, 2])
    train = _metrics(totals) if loop.stats else {"nll": losses / max(n_steps, 1)}
    return ({loop.unit: number, "step": steps + n_steps, "seconds": seconds, "events": events,
             "events_per_s": events / seconds if seconds > 0 else math.nan, "train": train},
            steps + n_steps)


def _agree(stop: bool, loop: Loop, model) -> bool:
    """Rank 0's decision to stop, shared with every rank (nccl broadcasts only CUDA tensors)."""
    if loop.world == 1:
        return stop
    flag = torch.tensor([float(stop)], device=next(model.parameters()).device)
    dist.broadcast(flag, 0)
    return bool(flag.item())


def _progress_bar(loop: Loop, done: int, elapsed: float, disable: bool):
    """Rounds done of ``loop.rounds``; with a time budget, seconds of it instead, as that is
    what ends a corpus run."""
    if loop.time_budget_s:
        return tqdm(total=round(loop.time_budget_s), initial=min(round(elapsed),
                    round(loop.time_budget_s)), desc="training", unit="s", disable=disable)
    return tqdm(total=loop.rounds, initial=done, desc="training", unit=loop.unit,
                disable=disable)


def _report(bar, record, loop, best_nll, best_round, validating) -> None:
    if loop.time_budget_s:
        bar.update(min(round(record["elapsed_s"]), bar.total) - bar.n)
    else:
        bar.update(1)
    postfix = {"train": f"{record['train']['nll']:.3f}"}
    if validating:
        postfix.update(val=f"{record['val']['nll']:.3f}", best=f"{best_nll:.3f}")
    bar.set_postfix(postfix)
    number = record[loop.unit]
    if loop.log_every and (number % loop.log_every == 0 or number == loop.rounds):
        print(_log_line(record, loop, best_round), flush=True)


def _log_line(record, loop, best_round) -> str:
    """One progress line: ``epoch 5/200  train 4.123  val 4.456  best epoch 3  12,345 events/s``."""
    val = (f"val {record['val']['nll']:.3f}  best {loop.unit} {best_round}" if record["val"]
           else f"val {record['validation']}")
    return (f"{loop.unit} {record[loop.unit]}/{loop.rounds}  train {record['train']['nll']:.3f}"
            f"  {val}  {record['events_per_s']:,.0f} events/s")


def use_bfloat16(precision: str, device: torch.device) -> bool:
    """Whether ``precision`` trains in bfloat16 on ``device`` ("auto": only where the CPU
    computes it natively); checks first that it runs there."""
    bf16 = precision == "bfloat16" or (precision == "auto" and native_bfloat16(device))
    if bf16:
        check_bfloat16(device)
    return bf16


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``precision="auto"`` trains in bfloat16 on ``device``: only on a CPU that computes
    it in hardware (AVX-512 BF16 or AMX); elsewhere oneDNN emulates bfloat16, slower than
    float32, or refuses the LSTM. On CUDA, "auto" stays float32: that path has not been
    measured; ``precision="bfloat16"`` tries it."""
    if device.type != "cpu":
        return False
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch, or not x86
        return False


def check_bfloat16(device: torch.device) -> None:
    """One tiny LSTM step in bfloat16 on ``device``: where it cannot run, one line now instead
    of a oneDNN or cuDNN error at the first training step."""
    lstm = torch.nn.LSTM(2, 2).to(device)
    try:
        with torch.autocast(device.type, torch.bfloat16):
            lstm(torch.zeros(1, 1, 2, device=device))[0].sum().backward()
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ParameterError("precision", f"bfloat16 does not run on {device} here ({reason}); "
                                          f"use float32") from None


def _cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj
