"""Training: every step of contiguous sequences, an honest validation, the best checkpoint kept.

``train`` learns from all ``seq_len`` steps of every sequence (the lesson learned from the last
step of each 30-event window only), evaluates the held-out part after each epoch, records
per-head NLL and accuracy, keeps the best-validation weights, stops early after ``patience``
epochs without improvement, and writes the best checkpoint atomically each time it improves.
Ctrl-C stops training and keeps the best checkpoint so far.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .checkpoint import Checkpoint, load_checkpoint
from .codec import HEADS, EventCodec
from .data import training_sequences, transpose
from .model import ModelConfig, NoteLSTM


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200  # upper bound; early stopping usually ends far sooner
    seq_len: int = 64  # steps per training sequence, all with a loss; long enough to learn
    #                    which notes are still sounding (shorter: generated notes pile up)
    batch_size: int = 16  # sequences per optimiser step
    lr: float = 1e-2  # Adam learning rate (high, made safe by grad_clip)
    patience: int = 20  # epochs without validation improvement before stopping
    grad_clip: float = 1.0  # max gradient norm: keeps LSTM training stable
    transpose_semitones: int = 5  # random transposition of training sequences only; 0 = off
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA when present, else CPU

    def to_dict(self) -> dict:
        return asdict(self)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sequence_loss(model: NoteLSTM, batch: torch.Tensor):
    """Summed NLL of the three heads over every step of ``batch`` (n, seq_len + 1, 3), plus
    per-head (nll_sum, correct, count) for the metrics."""
    log_probs, _ = model(batch[:, :-1])
    targets = batch[:, 1:]
    stats, total = [], 0.0
    for i, lp in enumerate(log_probs):
        nll = F.nll_loss(lp.reshape(-1, lp.shape[-1]), targets[..., i].reshape(-1), reduction="sum")
        correct = (lp.argmax(-1) == targets[..., i]).sum()
        stats.append((nll.detach(), correct, targets[..., i].numel()))
        total = total + nll
    return total / targets[..., 0].numel(), stats


@torch.no_grad()
def evaluate(model: NoteLSTM, codes_list: list, device=None, chunk: int = 2048) -> dict:
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
        raise ValueError("no validation targets: every validation piece has fewer than 2 events")
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
          on_epoch=None) -> Checkpoint:
    """Train and return the best-validation checkpoint (also written to ``checkpoint_path``).

    ``train_codes``/``val_codes`` are lists of (n, 3) code arrays, one per piece.
    ``resume_from`` continues from a checkpoint file (weights, optimizer, history).
    ``on_epoch(record)`` is called after every epoch (for live plots or logging).
    """
    device = pick_device(config.device)
    rng = np.random.default_rng(config.seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)  # weights and dropout, without touching the caller's RNG
        if resume_from is not None:
            best = load_checkpoint(resume_from)
            model = copy.deepcopy(best.model).to(device)  # training must not change ``best``
            model_config = model.config
        else:
            model_config = model_config or ModelConfig(sizes=codec.sizes)
            model = NoteLSTM(model_config).to(device)
            best = None
        if tuple(model_config.sizes) != tuple(codec.sizes):
            raise ValueError(f"model sizes {model_config.sizes} do not match codec {codec.sizes}")
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        history = []
        if best is not None:
            history = list(best.history)
            if best.optimizer_state:
                optimizer.load_state_dict(best.optimizer_state)
                for group in optimizer.param_groups:  # the saved state carries the old lr
                    group["lr"] = config.lr
            rng = np.random.default_rng([config.seed, len(history)])  # fresh stream per resume
        best_nll = min((h["val"]["nll"] for h in history), default=math.inf)
        best = best or _snapshot(model, codec, config, history, -1, params, data_hashes, optimizer)
        stale = 0
        bar = tqdm(range(len(history), config.epochs), desc="training", unit="epoch",
                   disable=not progress, initial=len(history), total=config.epochs)
        try:
            for epoch in bar:
                record = _train_epoch(model, optimizer, train_codes, config, codec, rng, device,
                                      epoch)
                record["val"] = evaluate(model, val_codes, device)
                history.append(record)
                if record["val"]["nll"] < best_nll:
                    best_nll, stale = record["val"]["nll"], 0
                    best = _snapshot(model, codec, config, history, epoch, params, data_hashes,
                                     optimizer)
                    if checkpoint_path:
                        best.save(checkpoint_path)
                else:
                    stale += 1
                best.history = list(history)
                bar.set_postfix(train=f"{record['train']['nll']:.3f}",
                                val=f"{record['val']['nll']:.3f}", best=f"{best_nll:.3f}")
                if on_epoch:
                    on_epoch(record)
                if stale >= config.patience:
                    break
        except KeyboardInterrupt:  # keep what we have: the best checkpoint so far
            print(f"interrupted after {len(history)} epochs; keeping the best (epoch {best.best_epoch})")
        finally:
            bar.close()
        if checkpoint_path:
            best.save(checkpoint_path)  # final history, even when the best epoch was early
    best.model.eval()
    return best


def _train_epoch(model, optimizer, train_codes, config, codec, rng, device, epoch):
    """One pass over freshly cut and shuffled training sequences."""
    sequences = training_sequences(train_codes, config.seq_len, rng)
    sequences = transpose(sequences, config.transpose_semitones, codec.n_pitches, rng)
    batches = torch.as_tensor(sequences, dtype=torch.long).split(config.batch_size)
    model.train()
    totals = np.zeros((3, 3))
    start = time.perf_counter()
    for batch in batches:
        loss, stats = sequence_loss(model, batch.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        for i, (nll, correct, count) in enumerate(stats):
            totals[i] += (nll.item(), correct.item(), count)
    return {"epoch": epoch + 1, "seconds": time.perf_counter() - start, "train": _metrics(totals)}


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
