"""What the corpus commands do (``corpus``, ``train``, ``generate``, ``report``), given the
options ``cli`` parsed: they import torch, so ``cli`` imports this module only when one of
them is the command. Bad input is raised (``MidilstmError``) for ``cli`` to show in one line
with its exit status; what they made is printed, one line per file. Each checks first that it
can write where its output goes (``failures.check_writable``), so permission denied is one line
and exit status 2 before any work; a disk that fills up midway is one line and status 1
(``cli``). The options' tables are here too, beside the commands that take them.
"""
from __future__ import annotations

import os
import sys
from dataclasses import fields

from .errors import MidiInputError
from .failures import OutputError, check_writable, check_writable_file

WAV_RATE = 16000  # as notebook 04 writes its WAV files

TRAIN_OPTIONS = {  # CorpusTrainConfig fields: (type, help); the defaults are the config's
    "steps": (int, "optimiser steps (under torchrun: each step takes a batch from every process)"),
    "batch_size": (int, "windows per step in each process"),
    "seq_len": (int, "events per training window"),
    "eval_every": (int, "steps between validations (and checkpoint writes)"),
    "transpose_semitones": (int, "transpose each window by up to this many semitones (0: off)"),
    "seed": (int, "seed of the initial weights, the windows drawn and the transpositions"),
    "threads": (int, "torch CPU threads per process (0: torch's default)"),
    "lr": (float, "Adam learning rate"),
    "grad_clip": (float, "clip the gradient norm at this"),
    "time_budget_s": (float, "stop at the first validation after so many seconds (default: none)"),
    "val_fraction": (float, "share of whole pieces held out for validation"),
    "hidden_size": (int, "units per LSTM layer"),  # these: ModelConfig fields
    "num_layers": (int, "LSTM layers"),
    "dropout": (float, "dropout between layers and before the heads"),
    "embedding_dim": (int, "per component, with --input-mode embedding"),
}
GENERATE_OPTIONS = {  # name: (type, default, help)
    "primer_events": (int, 30, "how many of the primer's events"),
    "n": (int, 4, "how many variations"),
    "events": (int, 500, "events per variation"),
    "temperature": (float, 1.0, "< 1: safer and more repetitive, > 1: more adventurous"),
    "top_k": (int, 0, "sample among the k most likely classes of each head (0: off)"),
    "top_p": (float, 0.9, "sample among the classes holding this much probability (1: off)"),
    "seed": (int, 0, "the random choices of sampling"),
    "bpm": (float, 120.0, "tempo written into the MIDI files (timing is in seconds either way)"),
    "roll_seconds": (float, 30.0, "seconds of each sample drawn in the piano roll"),
}


def corpus(args) -> int:
    from .cache import CacheError
    from .corpus import read_corpus

    check_writable(args.out, "the corpus folder")
    try:
        read = read_corpus(args.sources, cache_dir=None if args.no_cache else args.cache,
                           workers=args.workers, scheduler=args.scheduler, fast=args.fast)
    except CacheError as err:  # the cache cannot be used (read-only, someone else's): refused
        raise OutputError(err.what, err.reason) from None
    for path, reason in read.bad:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if len(read) == 0:
        raise MidiInputError(" ".join(map(str, args.sources)), "no readable MIDI files")
    read.save(args.out)
    print(f"{args.out}: {len(read)} pieces, {len(read.events):,} events; "
          + ", ".join(f"{k} {v}" for k, v in read.stats.items()))
    return 1 if read.bad else 0  # saved, but some files could not be read


def train(args) -> int:
    from torch import distributed as dist

    from .batch import CORPUS_MODEL, CorpusTrainConfig, init_distributed, train_corpus
    from .corpus import load_corpus, read_corpus
    from .model import ModelConfig
    from .train import pick_device

    options = {f.name: getattr(args, f.name) for f in fields(CorpusTrainConfig)
               if hasattr(args, f.name)}  # every option train has, under its field's name
    config = CorpusTrainConfig(**{**options, "threads": args.threads or None})
    model_options = {name: getattr(args, name) for name in (
        "hidden_size", "num_layers", "dropout", "input_mode", "embedding_dim",
        "sounding_input", "key_input", "age_input")}
    ModelConfig(sizes=(1, 1, 1), **{**CORPUS_MODEL, **model_options})  # refused before reading
    check_writable_file(args.out, "the checkpoint")  # before training, not at its first save
    init_distributed(args.device)
    try:
        data = args.data
        corpus = load_corpus(data) if (data / "corpus.json").exists() else \
            read_corpus(data, workers=1 if dist.is_initialized() else None, progress=False)
        if len(corpus) == 0:
            raise MidiInputError(data, "no readable MIDI files, and not a corpus folder")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
        if (not dist.is_initialized() and config.threads == 1 and cores > 1
                and pick_device(config.device).type == "cpu"):
            print(f"training in 1 process on 1 of {cores} CPU cores; to use them all: torchrun "
                  f"--standalone --nproc_per_node {cores} -m midilstm.batch train ... (the "
                  f"batch is per process: {cores} x {config.batch_size} windows per step)",
                  file=sys.stderr)
        best = train_corpus(corpus, config, model_options, checkpoint_path=args.out,
                            params={"data": str(data)})
        if best is not None:
            last = best.history[best.best_epoch - 1]
            print(f"wrote {args.out}: best validation {last['val']['nll']:.3f} nats/event at "
                  f"step {last['step']}")
        return 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def generate(args) -> int:
    from .audio import render, write_wav
    from .checkpoint import load_checkpoint
    from .events import make_events
    from .export import write_midi
    from .generate import generate as improvise
    from .parse import read_midi
    from .sampling import SamplingConfig

    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k or None,
                              top_p=args.top_p)  # before the checkpoint: refused at once
    check_writable(args.out, "the output folder")
    if args.piano_roll is not None:
        check_writable_file(args.piano_roll, "the piano roll")
    ckpt = load_checkpoint(args.checkpoint)
    if args.primer is not None:
        primer = read_midi(args.primer).events[:args.primer_events]
    else:  # one middle C: the model continues from a single note
        primer = make_events([(60, 64, 0.0)])
    samples = improvise(ckpt.model, ckpt.codec, primer, n_events=args.events,
                        n_variations=args.n, seed=args.seed, sampling=sampling)
    for i, events in enumerate(samples):
        path = write_midi(events, args.out / f"sample_{i}.mid", bpm=args.bpm)
        if args.wav:
            wav = write_wav(render(events, WAV_RATE), path.with_suffix(".wav"), WAV_RATE)
            print(f"wrote {path} and {wav.name} ({len(events)} events)")
        else:
            print(f"wrote {path} ({len(events)} events)")
    if args.piano_roll is not None:
        from .plots import piano_rolls, save_png

        knobs = f"temperature {args.temperature}, top-k {args.top_k}, top-p {args.top_p}"
        fig = piano_rolls({f"sample {i} ({knobs})": events for i, events in enumerate(samples[:3])},
                          max_seconds=args.roll_seconds)
        save_png(fig, args.piano_roll, dpi=80)
        print(f"wrote {args.piano_roll}")
    return 0


def report(args) -> int:
    from .baselines import to_bits
    from .batch import held_out_report
    from .checkpoint import load_checkpoint
    from .corpus import load_corpus

    if args.curve is not None:
        check_writable_file(args.curve, "the learning curve")
    ckpt = load_checkpoint(args.checkpoint)
    table = held_out_report(ckpt, load_corpus(args.data))
    print(f"held-out NLL on {len(ckpt.held_out)} whole pieces ({args.checkpoint}, best of "
          f"{len(ckpt.history)} validations):\n")
    print("| predictor | nats/event | bits/event | pitch | velocity | time |")
    print("|---|---|---|---|---|---|")
    for name, m in table.items():
        print(f"| {name} | {m['nll']:.3f} | {to_bits(m['nll']):.3f} | {m['nll_pitch']:.3f} | "
              f"{m['nll_velocity']:.3f} | {m['nll_time']:.3f} |")
    if args.curve is not None:
        from .plots import save_png, step_learning_curve

        baselines = {k: table[k] for k in ("unigram", "bigram")}
        save_png(step_learning_curve(ckpt.history, baselines), args.curve, dpi=80)
        print(f"\nwrote {args.curve}")
    return 0
