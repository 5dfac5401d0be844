"""The corpus commands (``corpus``, ``train``, ``generate``, ``report``), for ``python -m midilstm``
and ``python -m midilstm.batch`` (which ``torchrun`` runs); what they do is ``midilstm.batch``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from torch import distributed as dist

from .baselines import to_bits
from .batch import (CORPUS_MODEL, PRECISIONS, CorpusTrainConfig, held_out_report,
                    init_distributed, train_corpus)
from .checkpoint import load_checkpoint
from .constants import INPUT_MODES
from .corpus import load_corpus, read_corpus
from .errors import MidiInputError, MidilstmError
from .model import ModelConfig
from .train import pick_device


def add_batch_commands(commands) -> None:
    """``corpus``, ``train``, ``generate`` and ``report`` subcommands (also for
    ``python -m midilstm``)."""
    corpus = commands.add_parser("corpus", help="read MIDI files into a cached corpus folder")
    corpus.add_argument("sources", nargs="+", help="MIDI files, folders or glob patterns")
    corpus.add_argument("--out", required=True, type=Path, help="corpus folder to write")
    corpus.add_argument("--workers", type=int, default=None, help="parser processes")
    corpus.add_argument("--cache", default="default",
                        help="cache folder ('default': $MIDILSTM_CACHE or ~/.cache/midilstm)")
    corpus.add_argument("--no-cache", action="store_true")
    corpus.set_defaults(handler=_one_line_errors(_corpus_command))

    train = commands.add_parser("train", help="train on a corpus folder (torchrun-ready)")
    train.add_argument("--data", required=True, type=Path,
                       help="a corpus folder (from 'corpus') or MIDI files/folder")
    train.add_argument("--out", required=True, type=Path, help="checkpoint file to write")
    defaults = CorpusTrainConfig()
    for name in ("steps", "batch_size", "seq_len", "eval_every", "transpose_semitones", "seed",
                 "threads"):
        train.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("lr", "grad_clip", "time_budget_s", "val_fraction"):
        train.add_argument(f"--{name.replace('_', '-')}", type=float,
                           default=getattr(defaults, name))
    train.add_argument("--device", default="auto")
    train.add_argument("--precision", choices=PRECISIONS, default=defaults.precision,
                       help="'auto': bfloat16 mixed precision on a CPU that has it natively")
    model = ModelConfig(sizes=(1, 1, 1), **CORPUS_MODEL)
    train.add_argument("--hidden-size", type=int, default=model.hidden_size)
    train.add_argument("--num-layers", type=int, default=model.num_layers)
    train.add_argument("--dropout", type=float, default=model.dropout)
    train.add_argument("--input-mode", choices=INPUT_MODES, default=model.input_mode)
    train.add_argument("--embedding-dim", type=int, default=model.embedding_dim,
                       help="per component, with --input-mode embedding")
    train.add_argument("--sounding-input", action=argparse.BooleanOptionalAction,
                       default=model.sounding_input,
                       help="the LSTM also reads which pitches sound (default: yes)")
    train.add_argument("--key-input", action=argparse.BooleanOptionalAction,
                       default=model.key_input,
                       help="the LSTM also reads the key profile of the recent notes "
                            "(default: yes)")
    train.set_defaults(handler=_one_line_errors(_train_command))

    generate = commands.add_parser("generate", help="improvise MIDI files from a checkpoint")
    generate.add_argument("--checkpoint", required=True, type=Path)
    generate.add_argument("--out", required=True, type=Path, help="folder for sample_<i>.mid")
    generate.add_argument("--primer", type=Path, help="MIDI file whose first events prime")
    generate.add_argument("--primer-events", type=int, default=30)
    generate.add_argument("--n", type=int, default=4, help="how many variations")
    generate.add_argument("--events", type=int, default=500, help="events per variation")
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-p", type=float, default=0.9,
                          help="sample among the classes holding this much probability "
                               "(default 0.9, as notebook 04)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--bpm", type=float, default=120.0)
    generate.add_argument("--piano-roll", type=Path, help="also draw the first 3 as a PNG")
    generate.add_argument("--roll-seconds", type=float, default=30.0,
                          help="seconds of each sample drawn in the piano roll")
    generate.set_defaults(handler=_one_line_errors(_generate_command))

    report = commands.add_parser("report", help="held-out NLL against baselines; learning curve")
    report.add_argument("--checkpoint", required=True, type=Path)
    report.add_argument("--data", required=True, type=Path, help="the corpus folder trained on")
    report.add_argument("--curve", type=Path, help="PNG file for the learning curve")
    report.set_defaults(handler=_one_line_errors(_report_command))


def _one_line_errors(handler):
    """Bad input ends the command with its one-line message and exit status 2."""
    def run(args) -> int:
        try:
            return handler(args)
        except MidilstmError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return run


def _corpus_command(args) -> int:
    cache = None if args.no_cache else args.cache
    corpus = read_corpus(args.sources, cache_dir=cache, workers=args.workers)
    corpus.save(args.out)
    for path, reason in corpus.bad:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{args.out}: {len(corpus)} pieces, {len(corpus.events):,} events; "
          + ", ".join(f"{k} {v}" for k, v in corpus.stats.items()))
    return 0


def _train_command(args) -> int:
    init_distributed(args.device)
    try:
        data = args.data
        corpus = load_corpus(data) if (data / "corpus.json").exists() else \
            read_corpus(data, workers=1 if dist.is_initialized() else None, progress=False)
        if len(corpus) == 0:
            raise MidiInputError(data, "no readable MIDI files, and not a corpus folder")
        config = CorpusTrainConfig(
            steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
            grad_clip=args.grad_clip, transpose_semitones=args.transpose_semitones,
            eval_every=args.eval_every, time_budget_s=args.time_budget_s,
            val_fraction=args.val_fraction, seed=args.seed, device=args.device,
            threads=args.threads or None, precision=args.precision)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
        if (not dist.is_initialized() and config.threads == 1 and cores > 1
                and pick_device(config.device).type == "cpu"):
            print(f"training in 1 process on 1 of {cores} CPU cores; to use them all: torchrun "
                  f"--standalone --nproc_per_node {cores} -m midilstm.batch train ... (the "
                  f"batch is per process: {cores} x {config.batch_size} windows per step)",
                  file=sys.stderr)
        model_options = {"hidden_size": args.hidden_size, "num_layers": args.num_layers,
                         "dropout": args.dropout, "input_mode": args.input_mode,
                         "embedding_dim": args.embedding_dim,
                         "sounding_input": args.sounding_input, "key_input": args.key_input}
        best = train_corpus(corpus, config, model_options, checkpoint_path=args.out,
                            params={"data": str(data)})
        if best is not None:
            print(f"wrote {args.out}: best validation {best.history[best.best_epoch - 1]['val']['nll']:.3f}"
                  f" nats/event at step {best.history[best.best_epoch - 1]['step']}")
        return 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _generate_command(args) -> int:
    from .events import make_events
    from .export import write_midi
    from .generate import generate
    from .parse import read_midi
    from .sampling import SamplingConfig

    ckpt = load_checkpoint(args.checkpoint)
    if args.primer is not None:
        primer = read_midi(args.primer).events[:args.primer_events]
    else:  # one middle C: the model continues from a single note
        primer = make_events([(60, 64, 0.0)])
    samples = generate(ckpt.model, ckpt.codec, primer, n_events=args.events,
                       n_variations=args.n, seed=args.seed,
                       sampling=SamplingConfig(temperature=args.temperature, top_p=args.top_p))
    for i, events in enumerate(samples):
        path = write_midi(events, args.out / f"sample_{i}.mid", bpm=args.bpm)
        print(f"wrote {path} ({len(events)} events)")
    if args.piano_roll is not None:
        from .plots import piano_rolls, save_png
        fig = piano_rolls({f"sample {i} (temperature {args.temperature}, top-p {args.top_p})":
                           events for i, events in enumerate(samples[:3])},
                          max_seconds=args.roll_seconds)
        save_png(fig, args.piano_roll, dpi=80)
        print(f"wrote {args.piano_roll}")
    return 0


def _report_command(args) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    table = held_out_report(ckpt, load_corpus(args.data))
    n_val = len(ckpt.params["val_pieces"])
    print(f"held-out NLL on {n_val} whole pieces ({args.checkpoint}, best of "
          f"{len(ckpt.history)} validations):\n")
    print("| predictor | nats/event | bits/event | pitch | velocity | time |")
    print("|---|---|---|---|---|---|")
    for name, m in table.items():
        print(f"| {name} | {m['nll']:.3f} | {to_bits(m['nll']):.3f} | {m['nll_pitch']:.3f} | "
              f"{m['nll_velocity']:.3f} | {m['nll_time']:.3f} |")
    if args.curve is not None:
        baselines = {k: table[k] for k in ("unigram", "bigram")}
        from .plots import save_png, step_learning_curve
        save_png(step_learning_curve(ckpt.history, baselines), args.curve, dpi=80)
        print(f"\nwrote {args.curve}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m midilstm.batch",
        description="Corpus-scale reading, training, generation and reports, without notebooks.")
    add_batch_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)
