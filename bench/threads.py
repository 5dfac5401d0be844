"""How many torch threads should training use? ``python bench/threads.py [--epochs N]``.

Times training epochs of the shipped ``03_train`` configuration (hidden 128, one-hot inputs,
batch 16, sequences of 64, the default piece, validation included) with torch threads 1, 2 and
torch's default, first on the machine as it is ("idle") and then with two busy-looping
processes beside it ("loaded": ``python -c "while True: pass"``, twice), as on a shared
machine. Prints the median epoch time of each, and ratios against 1 thread on the idle machine.
The rounds alternate between thread counts, so slow drifts of the machine hit each alike.

It also times generation of 64 variations (where the LSTM step is matrix products) with the
shipped one-thread product (``generate._times_transposed``) against numpy's ``@``, whose
OpenBLAS runs one thread per core, idle and loaded alike.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import midilstm.generate as generation  # noqa: E402
from midilstm.codec import EventCodec  # noqa: E402
from midilstm.data import split_pieces  # noqa: E402
from midilstm.model import ModelConfig, build  # noqa: E402
from midilstm.music import default_piece  # noqa: E402
from midilstm.parse import read_midi  # noqa: E402
from midilstm.train import TrainConfig, train  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice, before anyone changes it


def epoch_seconds(codec, train_codes, val_codes, threads, epochs: int) -> list:
    """Wall seconds of each epoch after the first (training plus validation)."""
    stamps = [time.perf_counter()]
    config = TrainConfig(epochs=epochs, patience=epochs, threads=threads, device="cpu")
    train(codec, train_codes, val_codes, config, ModelConfig(sizes=codec.sizes), progress=False,
          on_epoch=lambda record: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps[1:], stamps[2:])]  # the first epoch warms up


def generation_seconds(model, codec, primer, numpy_blas: bool, repeats: int = 3) -> list:
    """Seconds to generate 64 variations of 300 events, with the shipped product or numpy's."""
    shipped = generation._times_transposed
    if numpy_blas:
        generation._times_transposed = lambda a, w: a @ w.T
    try:
        seconds = []
        for seed in range(repeats):
            start = time.perf_counter()
            generation.generate(model, codec, primer, n_events=300, n_variations=64, seed=seed)
            seconds.append(time.perf_counter() - start)
        return seconds
    finally:
        generation._times_transposed = shipped


def busy_processes(n: int) -> list:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per measurement (>= 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the thread counts")
    args = parser.parse_args(argv)
    events = read_midi(default_piece()).events
    (train_events,), (val_events,) = split_pieces([events], 0.1)
    codec = EventCodec().fit([train_events])
    train_codes, val_codes = [codec.encode(train_events)], [codec.encode(val_events)]
    counts = sorted({1, 2, DEFAULT_THREADS})
    print(f"{os.cpu_count()} logical cores, torch {torch.__version__}, default threads "
          f"{DEFAULT_THREADS}; {len(train_events)} training events, load avg "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    torch.manual_seed(0)
    model = build(ModelConfig(sizes=codec.sizes)).eval()  # untrained: speed is the same
    generation.warm_up()
    times, gen_times = {}, {}
    for load in ("idle", "loaded"):
        workers = busy_processes(2) if load == "loaded" else []
        try:
            for _ in range(args.rounds):
                for threads in counts:
                    seconds = epoch_seconds(codec, train_codes, val_codes, threads, args.epochs)
                    times.setdefault((load, threads), []).extend(seconds)
                    print(f"  {load:6} threads {threads}: "
                          + " ".join(f"{s:.2f}" for s in seconds), flush=True)
                for numpy_blas in (False, True):
                    seconds = generation_seconds(model, codec, train_events[:30], numpy_blas)
                    gen_times.setdefault((load, numpy_blas), []).extend(seconds)
                    print(f"  {load:6} generation, {'numpy @' if numpy_blas else 'shipped'}: "
                          + " ".join(f"{s:.2f}" for s in seconds), flush=True)
        finally:
            for worker in workers:
                worker.kill()
                worker.wait()
    base = statistics.median(times[("idle", 1)])
    print(f"\nmedian seconds per epoch (ratio to 1 thread idle; loaded/idle)")
    print(f"{'threads':>12} {'idle':>14} {'loaded':>14} {'loaded/idle':>12}")
    for threads in counts:
        idle = statistics.median(times[("idle", threads)])
        loaded = statistics.median(times[("loaded", threads)])
        label = f"{threads}{' (default)' if threads == DEFAULT_THREADS else ''}"
        print(f"{label:>12} {idle:7.2f} ({idle / base:4.1f}x) {loaded:7.2f} ({loaded / base:4.1f}x)"
              f" {loaded / idle:11.1f}x")
    print("\nmedian seconds to generate 64 variations x 300 events (loaded/idle)")
    for numpy_blas, label in ((False, "shipped: one-thread product"),
                              (True, "numpy @ (OpenBLAS, a thread per core)")):
        idle = statistics.median(gen_times[("idle", numpy_blas)])
        loaded = statistics.median(gen_times[("loaded", numpy_blas)])
        print(f"  {label:38} idle {idle:6.2f}  loaded {loaded:6.2f}  ({loaded / idle:.1f}x)")
    print(f"load avg at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
