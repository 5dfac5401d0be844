"""Corpus-scale training: windows from a memory-mapped corpus, one process or many.

The commands (``midilstm.batch_cli``), run as this module so that ``torchrun`` can start it::

    python -m midilstm.batch corpus music_folder/ --out runs/bach_corpus      # read, cache, save
    python -m midilstm.batch train --data runs/bach_corpus --out runs/bach.pt --steps 3000
    torchrun --nproc_per_node 2 -m midilstm.batch train --data runs/bach_corpus --out runs/bach.pt
    python -m midilstm.batch generate --checkpoint runs/bach.pt --out runs/bach_samples
    python -m midilstm.batch report --checkpoint runs/bach.pt --data runs/bach_corpus

Training draws random windows of ``seq_len + 1`` events from the corpus (``sample_windows``:
uniform over every window that lies inside one piece, never across two) and encodes them batch
by batch, straight from the memory-mapped event array: nothing per piece or per sequence is
held in memory, so the corpus can be larger than memory. Whole pieces are held out for
validation (``corpus.split_names``). The loss and the validation are ``train.sequence_loss``
and ``train.evaluate``, as in the notebooks.

Under ``torchrun`` (or any initialised ``torch.distributed``) the same command trains with
DistributedDataParallel: gloo on CPU, nccl on CUDA. ``batch_size`` is per process, so N
processes train on N times the windows per step: on a CPU, one process per core (one thread
each) is the fastest way to use the cores. Every rank draws the same global batch of window
positions from the shared seed and reads only its own share of them; gradients are averaged,
so N processes with batch B each step like one process with batch N x B (with dropout and
transposition drawn per rank). Only rank 0 evaluates and writes the checkpoint.

On a CPU that computes bfloat16 natively (``native_bfloat16``), the forward and backward
passes run in bfloat16 mixed precision (``torch.autocast``; the weights, the optimiser and the
validation stay float32): 1.3-1.4x the events/s of float32 on an AVX-512 BF16 CPU.
"""
from __future__ import annotations

import copy
import gc
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import distributed as dist
from tqdm.auto import tqdm

from .baselines import baseline_table
from .checkpoint import Checkpoint
from .codec import EventCodec
from .checks import check_int, check_positive
from .corpus import Corpus, split_names
from .data import _check_fraction, transpose
from .errors import ParameterError
from .model import ModelConfig, build, torch_threads
from .sounding import N_PITCH_CLASSES, Held, held_before
from .train import evaluate, optimiser_step, pick_device, sequence_loss


PRECISIONS = ("auto", "float32", "bfloat16")
# The network for a corpus, chosen by measurement (docs/corpus.md, section 3): the
# lesson's width with learned embeddings in place of one-hot inputs, which learn more per second.
CORPUS_MODEL = {"hidden_size": 128, "num_layers": 1, "input_mode": "embedding"}


@dataclass(frozen=True)
class CorpusTrainConfig:
    """Defaults measured on the Bach corpus, 2 CPU cores (``docs/corpus.md``, section 3): one
    torch thread per process, one process per core under torchrun. On a CPU the batch that updates
    most often learns most per second: after 30 s in one process, held-out NLL 1.67 nats per
    event at batch 16 (lr 1e-2) against 2.30 at batch 64 (lr 2e-2), though batch 64 ran 1.4x
    the events/s. On a GPU a larger ``batch_size`` pays; not measured here."""

    steps: int = 3000  # optimiser steps (a corpus is sampled, not cut into epochs)
    batch_size: int = 16  # sequences per step in each process (global batch: x processes)
    seq_len: int = 64
    lr: float = 1e-2
    grad_clip: float = 1.0
    transpose_semitones: int = 5  # random transposition of training windows; 0 = off
    eval_every: int = 250  # steps between validations (and checkpoint writes)
    time_budget_s: float | None = None  # stop at the first validation after this many seconds
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    threads: int | None = 1  # torch CPU threads per process (None: torch's default)
    precision: str = "auto"  # "bfloat16": mixed precision (weights and validation stay float32);
    #                          "auto": bfloat16 on a CPU that computes it natively

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ParameterError("precision", f"must be one of {', '.join(PRECISIONS)}, "
                                              f"not {self.precision!r}")
        for name in ("steps", "batch_size", "seq_len", "eval_every"):
            check_int(name, getattr(self, name), 1)
        check_int("transpose_semitones", self.transpose_semitones, 0)
        check_int("seed", self.seed, 0)
        check_positive("lr", self.lr)
        check_positive("grad_clip", self.grad_clip)
        if self.time_budget_s is not None:
            check_positive("time_budget_s", self.time_budget_s)
        if self.threads is not None:
            check_int("threads", self.threads, 1)
        _check_fraction(self.val_fraction)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_windows(offsets: np.ndarray, pieces, length: int, n: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Start indices (into the corpus event array) of ``n`` windows of ``length`` events,
    uniform over every window that lies inside one of ``pieces`` (indices into ``offsets``).
    Pieces shorter than ``length`` have no windows."""
    pieces = np.asarray(pieces, np.int64)
    starts = offsets[pieces]
    counts = np.maximum(offsets[pieces + 1] - starts - length + 1, 0)
    cumulative = np.cumsum(counts)
    if len(cumulative) == 0 or cumulative[-1] == 0:
        raise ParameterError("seq_len", f"no piece has {length} events (seq_len + 1)")
    draws = rng.integers(0, cumulative[-1], n)
    which = np.searchsorted(cumulative, draws, side="right")
    return starts[which] + draws - (cumulative[which] - counts[which])


def train_corpus(corpus: Corpus, config: CorpusTrainConfig = CorpusTrainConfig(),
                 model_options: dict | None = None, codec: EventCodec | None = None, *,
                 checkpoint_path=None, progress: bool = True, params: dict | None = None):
    """Train on ``corpus``; returns the best-validation ``Checkpoint`` on rank 0 (``None`` on
    the other ranks). ``model_options`` are ``ModelConfig`` fields (hidden_size, num_layers,
    dropout, input_mode, embedding_dim, sounding_input, key_input) that replace those of
    ``CORPUS_MODEL``; the codec is fitted on the training pieces unless given."""
    rank, world = _rank_and_world()
    device = _device(config.device)
    bf16 = config.precision == "bfloat16" or (config.precision == "auto"
                                              and native_bfloat16(device))
    if bf16:
        check_bfloat16(device)
    with torch_threads(config.threads):
        train_idx, val_idx = split_names(corpus.names, config.val_fraction)
        if not val_idx:
            raise ParameterError("data", f"{len(corpus)} piece(s): need at least 2 to hold "
                                         f"whole pieces out")
        codec = codec or EventCodec().fit([corpus.piece(i) for i in train_idx])
        model_options = {**CORPUS_MODEL, **(model_options or {})}
        model_config = ModelConfig(sizes=codec.sizes, **model_options)
        longest = int(corpus.lengths()[train_idx].max())
        if longest < 2:
            raise ParameterError("data", "no training piece has 2 events: nothing to learn from")
        length = min(config.seq_len, longest - 1) + 1
        val_codes = [codec.encode(corpus.piece(i)) for i in val_idx] if rank == 0 else []
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        model = build(model_config).to(device)
        torch.manual_seed(config.seed + rank)  # dropout: a different mask per rank
        stepper = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        shared = np.random.default_rng(config.seed)  # window positions: the same on all ranks
        own = np.random.default_rng([config.seed, rank])  # transposition: this rank's share
        window = np.arange(length)
        held = _held_before(corpus, codec, train_idx)
        history, best, best_nll, running = [], None, math.inf, np.zeros(2)
        train_names = [corpus.names[i] for i in train_idx]
        base_params = {"val_pieces": [corpus.names[i] for i in val_idx],
                       "n_train_pieces": len(train_names), "world_size": world,
                       "precision": "bfloat16" if bf16 else "float32",
                       "model_options": model_options, **(params or {})}
        start = time.perf_counter()
        bar = tqdm(range(config.steps), desc="training", unit="step",
                   disable=not progress or rank != 0)
        for step in bar:
            starts = sample_windows(corpus.offsets, train_idx, length,
                                    config.batch_size * world, shared)
            mine = starts[rank::world]
            codes = codec.encode(corpus.events[mine[:, None] + window].reshape(-1))
            codes = codes.reshape(len(mine), length, 3)
            codes, before = transpose(codes, config.transpose_semitones, codec.n_pitches, own,
                                      Held(*(part[mine] for part in held)))
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                loss, _ = sequence_loss(stepper, torch.as_tensor(codes, device=device),
                                        stats=False, before=Held(*(torch.as_tensor(
                                            part, device=device) for part in before)))
            optimiser_step(stepper, optimizer, loss, config.grad_clip)
            running += (loss.item(), 1)
            events_per_s = (step + 1) * config.batch_size * world * (length - 1) / (
                time.perf_counter() - start)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{running[0] / running[1]:.3f}",
                                events_per_s=f"{events_per_s:,.0f}")
            if (step + 1) % config.eval_every and step + 1 != config.steps:
                continue
            stop = torch.zeros(1, device=device)  # nccl broadcasts only CUDA tensors
            if rank == 0:
                now = time.perf_counter()
                record = {"step": step + 1, "seconds": now - start,
                          "events_per_s": events_per_s,
                          "train": {"nll": float(running[0] / running[1])},
                          "val": evaluate(model, val_codes, device)}
                start += time.perf_counter() - now  # validation time is not training time
                history.append(record)
                running[:] = 0
                if record["val"]["nll"] < best_nll or best is None:
                    best_nll = record["val"]["nll"]
                    best = _snapshot(model, codec, config, history, base_params)
                    if checkpoint_path:
                        best.save(checkpoint_path)
                best.history = list(history)
                if progress:
                    bar.write(f"step {step + 1}: train {record['train']['nll']:.3f}, val "
                              f"{record['val']['nll']:.3f} nats/event, {events_per_s:,.0f} "
                              f"events/s")
                budget = config.time_budget_s
                stop[0] = float(budget is not None and record["seconds"] >= budget)
            if world > 1:
                dist.broadcast(stop, 0)
            if stop.item():
                break
        bar.close()
        if rank == 0 and checkpoint_path:
            best.save(checkpoint_path)  # the full history
        if world > 1:  # free DDP now: its hooks form reference cycles, and collected only at
            del stepper  # interpreter exit, its gloo threads could abort the process (about 1
            gc.collect()  # run in 15 of the 2-process test)
        return best if rank == 0 else None


def _held_before(corpus: Corpus, codec: EventCodec, pieces) -> Held:
    """What holds before each event of the corpus (``sounding.held_before``), for the given
    pieces (others stay empty): (events, pitches) bools and (events, 12) float32 counts, 137
    bytes an event."""
    held = Held(np.zeros((len(corpus.events), codec.n_pitches), bool),
                np.zeros((len(corpus.events), N_PITCH_CLASSES), np.float32))
    for i in pieces:
        start, end = corpus.offsets[i], corpus.offsets[i + 1]
        for whole, part in zip(held, held_before(codec.encode(corpus.piece(i)), codec.n_pitches)):
            whole[start:end] = part
    return held


def held_out_split(checkpoint: Checkpoint, corpus: Corpus) -> tuple[list, list]:
    """Indices ``(train, val)`` of ``corpus``'s pieces, val being those the checkpoint lists
    as held out (``params["val_pieces"]``), so a report scores exactly what training did not
    see even if the split rule or the corpus changed since."""
    held = checkpoint.params.get("val_pieces")
    if not held:
        raise ParameterError("checkpoint", "lists no held-out pieces (not trained by "
                                           "midilstm.batch train)")
    missing = set(held) - set(corpus.names)
    if missing:
        raise ParameterError("data", f"{len(missing)} held-out piece(s) of the checkpoint are "
                                     f"not in the corpus, e.g. {sorted(missing)[0]}")
    held = set(held)
    return ([i for i, n in enumerate(corpus.names) if n not in held],
            [i for i, n in enumerate(corpus.names) if n in held])


def held_out_report(checkpoint: Checkpoint, corpus: Corpus) -> dict:
    """Validation NLL of the checkpoint's model on its held-out pieces next to the baselines
    fitted on the training pieces, all with the checkpoint's codec: ``{"model": metrics,
    "unigram": ..., "bigram": ..., "repeat_last": ...}`` (metrics as ``train.evaluate``)."""
    train_idx, val_idx = held_out_split(checkpoint, corpus)
    codec = checkpoint.codec
    train_codes = [codec.encode(corpus.piece(i)) for i in train_idx]
    val_codes = [codec.encode(corpus.piece(i)) for i in val_idx]
    return {"model": evaluate(checkpoint.model, val_codes, torch.device("cpu")),
            **baseline_table(train_codes, val_codes, codec.sizes)}


def _snapshot(model, codec, config, history, params) -> Checkpoint:
    return Checkpoint(model=copy.deepcopy(model).cpu().eval(), codec=codec,
                      train_config=config.to_dict(), history=list(history),
                      best_epoch=len(history), params=dict(params))


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


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device(name: str) -> torch.device:
    """Under DDP with CUDA each process takes the GPU of its local rank."""
    device = pick_device(name)
    if device.type == "cuda" and device.index is None and dist.is_initialized():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device


def init_distributed(device: str = "auto") -> bool:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU,
    nccl on CUDA). Returns whether there is one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if pick_device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return True


# --- the command line ------------------------------------------------------------------------


if __name__ == "__main__":  # python -m midilstm.batch ..., as torchrun runs it
    from .batch_cli import main
    sys.exit(main())
