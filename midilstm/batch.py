"""Corpus-scale training: windows from a memory-mapped corpus, one process or many.

The commands (``midilstm.cli``, their work in ``midilstm.corpus_commands``), run as this
module so that ``torchrun`` can start it::

    python -m midilstm.batch corpus music_folder/ --out runs/bach_corpus      # read, cache, save
    python -m midilstm.batch train --data runs/bach_corpus --out runs/bach.pt --steps 3000
    torchrun --nproc_per_node 2 -m midilstm.batch train --data runs/bach_corpus --out runs/bach.pt
    python -m midilstm.batch generate --checkpoint runs/bach.pt --out runs/bach_samples
    python -m midilstm.batch report --checkpoint runs/bach.pt --data runs/bach_corpus

Training draws random windows of ``seq_len + 1`` events from the corpus (``sample_windows``:
uniform over every window that lies inside one piece, never across two) and encodes them batch
by batch, straight from the memory-mapped event array: nothing per piece or per sequence is
held in memory, so the corpus can be larger than memory. Whole pieces are held out for
validation by the notebooks' rule (``data.split_names``), and the loop is theirs too
(``loop.fit``): only the source of the batches differs (``Windows``).

Under ``torchrun`` (or any initialised ``torch.distributed``) the same command trains with
DistributedDataParallel: gloo on CPU, nccl on CUDA. ``batch_size`` is per process, so N
processes train on N times the windows per step: on a CPU, one process per core (one thread
each) is the fastest way to use the cores. Every rank draws the same global batch of window
positions from the shared seed and reads only its own share of them; gradients are averaged,
so N processes with batch B each step like one process with batch N x B (with dropout and
transposition drawn per rank). Only rank 0 evaluates and writes the checkpoint.

On a CPU that computes bfloat16 natively (``loop.native_bfloat16``), the forward and backward
passes run in bfloat16 mixed precision (``torch.autocast``; the weights, the optimiser and the
validation stay float32): 1.3-1.4x the events/s of float32 on an AVX-512 BF16 CPU.
"""
from __future__ import annotations

import gc
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import distributed as dist

from .baselines import baseline_table
from .checkpoint import Checkpoint
from .codec import EventCodec
from .checks import check_int
from .corpus import Corpus
from .data import split_names, transpose
from .errors import ParameterError
from .model import ModelConfig, build, torch_threads
from .sounding import N_PITCH_CLASSES, Held, held_before
from .loop import PRECISIONS  # noqa: F401  (the command line's choices)
from .loop import Keep, Loop, evaluate, fit, use_bfloat16
from .train import TrainConfig, pick_device

# The network for a corpus, chosen by measurement (docs/corpus.md, section 3): the
# lesson's width with learned embeddings in place of one-hot inputs, which learn more per second.
CORPUS_MODEL = {"hidden_size": 128, "num_layers": 1, "input_mode": "embedding"}


@dataclass(frozen=True)
class CorpusTrainConfig(TrainConfig):
    """``TrainConfig`` for a corpus: a corpus is sampled, not cut into epochs, so ``steps``
    bounds training in place of ``epochs``, with a validation (a round of the training loop)
    every ``eval_every`` steps; ``patience`` counts validations. Defaults measured on the Bach
    corpus, 2 CPU cores (``docs/corpus.md``, section 3): one torch thread per process, one
    process per core under torchrun. On a CPU the batch that updates most often learns most per
    second: after 30 s in one process, held-out NLL 1.67 nats per event at batch 16 (lr 1e-2)
    against 2.30 at batch 64 (lr 2e-2), though batch 64 ran 1.4x the events/s. On a GPU a
    larger ``batch_size`` pays; not measured here."""

    steps: int = 3000  # optimiser steps (global batch: batch_size x processes)
    eval_every: int = 250  # steps between validations (and checkpoint writes)
    val_fraction: float = 0.1  # share of whole pieces held out (``data.split_names``)
    precision: str = "auto"

    def __post_init__(self):
        super().__post_init__()  # with val_fraction: the parameter table's rule
        check_int("steps", self.steps, 1)
        check_int("eval_every", self.eval_every, 1)


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
    """Train on ``corpus`` with ``loop.fit``, the notebooks' loop; returns the best-validation
    ``Checkpoint`` on rank 0 (``None`` on the other ranks). ``model_options`` are
    ``ModelConfig`` fields (hidden_size, num_layers, dropout, input_mode, embedding_dim,
    sounding_input, key_input, arch, ...) that replace those of ``CORPUS_MODEL``; the codec is
    fitted on the training pieces unless given."""
    rank, world = _rank_and_world()
    device = _device(config.device)
    bf16 = use_bfloat16(config.precision, device)
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
        windows = Windows(corpus, codec, train_idx, length, config, rank, world, device)
        n_rounds = math.ceil(config.steps / config.eval_every)
        rounds = (windows.batches(min(config.eval_every, config.steps - r * config.eval_every))
                  for r in range(n_rounds))
        loop = Loop(rounds=n_rounds, unit="round", patience=config.patience,
                    time_budget_s=config.time_budget_s, grad_clip=config.grad_clip, bf16=bf16,
                    stats=False, log_every=1 if progress else 0, progress=progress,
                    rank=rank, world=world)
        held_out = [corpus.names[i] for i in val_idx]
        keep = Keep(codec, config.to_dict(), {
            "n_train_pieces": len(train_idx), "world_size": world,
            "precision": "bfloat16" if bf16 else "float32", "model_options": model_options,
            **(params or {})}, [], held_out, checkpoint_path)
        best = fit(model, optimizer, rounds, loop, keep, stepper=stepper,
                   validate=lambda m: evaluate(m, val_codes, device))
        if world > 1:  # free DDP now: its hooks form reference cycles, and collected only at
            del stepper  # interpreter exit, its gloo threads could abort the process (about 1
            gc.collect()  # run in 15 of the 2-process test)
        return best


class Windows:
    """Training batches of random windows from a memory-mapped corpus. Every rank draws the
    same global batch of window positions from the shared seed and encodes only its own share,
    with what held before each window."""

    def __init__(self, corpus, codec, pieces, length, config, rank, world, device):
        self.corpus, self.codec, self.pieces, self.length = corpus, codec, pieces, length
        self.config, self.rank, self.world, self.device = config, rank, world, device
        self.shared = np.random.default_rng(config.seed)  # positions: the same on all ranks
        self.own = np.random.default_rng([config.seed, rank])  # transposition: this rank's
        self.held = _held_before(corpus, codec, pieces)

    def batches(self, n_steps: int):
        config, window = self.config, np.arange(self.length)
        for _ in range(n_steps):
            starts = sample_windows(self.corpus.offsets, self.pieces, self.length,
                                    config.batch_size * self.world, self.shared)
            mine = starts[self.rank::self.world]
            codes = self.codec.encode(self.corpus.events[mine[:, None] + window].reshape(-1))
            codes = codes.reshape(len(mine), self.length, 3)
            codes, before = transpose(codes, config.transpose_semitones, self.codec.n_pitches,
                                      self.own, Held(*(part[mine] for part in self.held)))
            yield (torch.as_tensor(codes, device=self.device),
                   Held(*(torch.as_tensor(part, device=self.device) for part in before)))


def _held_before(corpus: Corpus, codec: EventCodec, pieces) -> Held:
    """What holds before each event of the corpus (``sounding.held_before``), for the given
    pieces (others stay empty): (events, pitches) bools, (events, 12) float32 counts and
    (events, pitches) float32 ages, 493 bytes an event."""
    held = Held(np.zeros((len(corpus.events), codec.n_pitches), bool),
                np.zeros((len(corpus.events), N_PITCH_CLASSES), np.float32),
                np.zeros((len(corpus.events), codec.n_pitches), np.float32))
    for i in pieces:
        start, end = corpus.offsets[i], corpus.offsets[i + 1]
        for whole, part in zip(held, held_before(codec.encode(corpus.piece(i)), codec.n_pitches)):
            whole[start:end] = part
    return held


def held_out_split(checkpoint: Checkpoint, corpus: Corpus) -> tuple[list, list]:
    """Indices ``(train, val)`` of ``corpus``'s pieces, val being those the checkpoint lists
    as held out (``Checkpoint.held_out``), so a report scores exactly what training did not
    see even if the split rule or the corpus changed since."""
    held = checkpoint.held_out
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
