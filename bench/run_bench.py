"""midilstm against the lesson's method, in one run: ``python bench/run_bench.py [--quick]``.

Measures (see bench/README.md):
1. time to reach the reference's best validation NLL (default piece, same split, same codec,
   same model size);
2. generation speed: one stream for both, and midilstm with 64 variations in a batch;
3. peak memory (peak RSS of a child process) when training on a synthetic 100,000-event piece,
   and midilstm on a 1,000,000-event piece.
Prints raw figures and ratios against the targets, and writes bench/results/latest.json.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

import lesson_reference as ref  # noqa: E402
from midilstm.codec import EventCodec  # noqa: E402
from midilstm.data import split_pieces  # noqa: E402
from midilstm.generate import generate  # noqa: E402
from midilstm.model import ModelConfig  # noqa: E402
from midilstm.music import default_piece  # noqa: E402
from midilstm.parse import read_midi  # noqa: E402
from midilstm.train import TrainConfig, train  # noqa: E402

VAL_FRACTION = 0.1
MEMORY_RATIOS = ("memory_ratio_100k", "midilstm_peak_rss_1M_GB")
# midilstm's training config for the benchmark. Same model as the reference (ModelConfig
# defaults: 1 layer, hidden 128, one-hot input, dropout 0.2). See README for why these values.
# Time to target: midilstm's method (loss on every step, contiguous sequences, transposition)
# with the settings that reach the reference's best soonest (see bench/README.md). The shipped
# defaults use 64-step sequences instead, slower to that NLL but better music; the run reports
# their ratio too.
MIDILSTM_CONFIG = dict(batch_size=64, seq_len=16, lr=2e-2, transpose_semitones=5)
MIDILSTM_MAX_EPOCHS = 300

TARGETS = {  # name: (comparison, threshold)
    "time_to_target_speedup": (">=", 10.0),
    "generation_speedup_1_stream": (">=", 15.0),
    "generation_speedup_64_variations": (">=", 50.0),
    "memory_ratio_100k": ("<=", 0.1),
    "midilstm_peak_rss_1M_GB": ("<=", 2.0),
}


# --- data -------------------------------------------------------------------------------------
def load_default():
    events = read_midi(default_piece()).events
    (train_events,), (val_events,) = split_pieces([events], VAL_FRACTION)
    codec = EventCodec().fit([train_events])
    return events, train_events, val_events, codec


def synthetic_piece(n_events: int, seed: int = 0) -> np.ndarray:
    """The default piece's events tiled to ``n_events``, each copy transposed by a random
    number of semitones that keeps it inside the codec's pitch range."""
    base = read_midi(default_piece()).events
    codec = EventCodec()
    low = codec.pitch_low - int(base["pitch"].min())
    high = codec.pitch_high - int(base["pitch"].max())
    rng = np.random.default_rng(seed)
    copies = []
    for _ in range(-(-n_events // len(base))):
        copy = base.copy()
        copy["pitch"] += int(rng.integers(low, high + 1))
        copies.append(copy)
    return np.concatenate(copies)[:n_events]


# --- machine ----------------------------------------------------------------------------------
def machine_info() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    from importlib.metadata import version
    return {"cpu_model": cpu, "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)), "memory_total_GB": mem_gb,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "mido": version("mido"),
            "platform": platform.platform(), "load_avg_start": os.getloadavg()}


def warm_up():
    """Pay one-time costs before any timing, so neither side is charged for them: the first
    ``torch.optim.Adam`` imports torch._dynamo (about 1 s), the first LSTM call initialises
    the CPU kernels."""
    lstm = torch.nn.LSTM(8, 8, batch_first=True)
    optimizer = torch.optim.Adam(lstm.parameters())
    lstm(torch.zeros(2, 3, 8))[0].sum().backward()
    optimizer.step()


# --- 1. time to target ------------------------------------------------------------------------
class _TargetReached(KeyboardInterrupt):
    """Raised from train()'s on_epoch hook: train() catches KeyboardInterrupt and returns the
    best checkpoint, so this stops training as soon as the target is met."""


def bench_reference_training(events, train_events, codec, epochs: int) -> dict:
    codes = codec.encode(events)
    c0 = time.process_time()
    cpu = []
    result = ref.train(codes, len(train_events), codec.sizes, epochs,
                       on_epoch=lambda r: (cpu.append(time.process_time() - c0),
                                           print(f"  reference epoch {r['epoch']:3d}: val NLL "
                                                 f"{r['val_nll']:.3f}  ({r['elapsed_s']:.1f} s)",
                                                 flush=True)))
    for record, c in zip(result["history"], cpu):
        record["cpu_s"] = c
    best = result["best_epoch"]
    epoch_s = statistics.median(r["seconds"] for r in result["history"])
    return {"epochs": epochs, "best_val_nll": result["best_nll"], "best_epoch": best,
            "seconds_to_best": result["seconds_to_best"],
            "cpu_seconds_to_best": result["history"][best - 1]["cpu_s"],
            "setup_s": result["setup_s"], "median_epoch_s": epoch_s,
            "estimated_seconds_to_best": result["setup_s"] + best * epoch_s,
            "train_windows": len(train_events) - ref.WINDOW,
            "history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                        for r in result["history"]],
            "_model": result["model"]}


def bench_midilstm_training(train_events, val_events, codec, target_nll: float,
                            settings: dict = MIDILSTM_CONFIG) -> dict:
    config = TrainConfig(epochs=MIDILSTM_MAX_EPOCHS, threads=None, **settings)
    history, state = [], {"hit": None}
    t0, c0 = time.perf_counter(), time.process_time()
    last = [t0]

    def on_epoch(record):
        now = time.perf_counter()
        entry = {"epoch": record["epoch"], "val_nll": round(record["val"]["nll"], 4),
                 "train_nll": round(record["train"]["nll"], 4),
                 "seconds": round(now - last[0], 4), "elapsed_s": round(now - t0, 4),
                 "cpu_s": round(time.process_time() - c0, 4)}
        last[0] = now
        history.append(entry)
        if record["val"]["nll"] <= target_nll:
            state["hit"] = entry
            raise _TargetReached

    with contextlib.redirect_stdout(io.StringIO()):  # train() reports the "interrupt"
        checkpoint = train(codec, [codec.encode(train_events)], [codec.encode(val_events)],
                           config, ModelConfig(sizes=codec.sizes), progress=False,
                           on_epoch=on_epoch)
    hit = state["hit"]
    epoch_s = statistics.median(h["seconds"] for h in history[1:] or history)
    out = {"config": config.to_dict(), "model": ModelConfig(sizes=codec.sizes).to_dict(),
           "reached": hit is not None, "epochs_run": len(history),
           "best_val_nll": min(h["val_nll"] for h in history), "median_epoch_s": epoch_s,
           "history": history, "_model": checkpoint.model}
    if hit:
        out.update(epoch_to_target=hit["epoch"], seconds_to_target=hit["elapsed_s"],
                   cpu_seconds_to_target=hit["cpu_s"],
                   estimated_seconds_to_target=history[0]["seconds"] + (hit["epoch"] - 1) * epoch_s)
    return out


# --- 2. generation ----------------------------------------------------------------------------
def _median_rate(fn, n_notes: int, repeats: int) -> tuple[float, list]:
    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        fn(r)
        rates.append(n_notes / (time.perf_counter() - start))
    return statistics.median(rates), [round(x, 1) for x in rates]


def bench_generation(ref_model, model, codec, events, n_events: int, repeats: int) -> dict:
    primer = events[:ref.WINDOW]  # the lesson's seed: the piece's first 30 events
    primer_codes = codec.encode(primer)
    torch.set_grad_enabled(False)
    for streams in (1, 64):  # numba compiles (or loads from its cache) on first use: not timed
        generate(model, codec, primer, n_events=2, n_variations=streams)
    try:
        ref_rate, ref_all = _median_rate(
            lambda r: ref.generate(ref_model, primer_codes, n_events, seed=r), n_events, repeats)
        one_rate, one_all = _median_rate(
            lambda r: generate(model, codec, primer, n_events=n_events, seed=r), n_events, repeats)
        many_rate, many_all = _median_rate(
            lambda r: generate(model, codec, primer, n_events=n_events, n_variations=64, seed=r),
            64 * n_events, repeats)
    finally:
        torch.set_grad_enabled(True)
    return {"events_per_stream": n_events, "repeats": repeats,
            "reference_notes_per_s": ref_rate, "midilstm_1_stream_notes_per_s": one_rate,
            "midilstm_64_variations_notes_per_s": many_rate,
            "all_rates": {"reference": ref_all, "midilstm_1": one_all, "midilstm_64": many_all}}


# --- 3. memory (each measurement in its own child process) --------------------------------------
def _rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_memory(which: str, n_events: int, batches: int) -> dict:
    """Runs in a child: build the synthetic piece, train, report the peak RSS."""
    events = synthetic_piece(n_events)
    (train_events,), (val_events,) = split_pieces([events], VAL_FRACTION)
    codec = EventCodec().fit([train_events])
    rss_before = _rss_now_mb()
    start = time.perf_counter()
    if which == "reference":
        result = ref.train(codec.encode(events), len(train_events), codec.sizes, epochs=1,
                           max_batches=batches)
        steps = result["steps"]
    else:
        config = TrainConfig(epochs=1, threads=None,
                             **{**MIDILSTM_CONFIG, "patience": 1})
        train(codec, [codec.encode(train_events)], [codec.encode(val_events)], config,
              ModelConfig(sizes=codec.sizes), progress=False)
        steps = -(-(len(train_events) - 1) // config.seq_len // config.batch_size)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return {"which": which, "events": n_events, "train_steps": steps,
            "seconds": time.perf_counter() - start, "rss_before_train_MB": rss_before,
            "peak_rss_MB": peak_kb / 1024}


def run_child(which: str, n_events: int, batches: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", which,
           "--threads", str(torch.get_num_threads()),
           "--events", str(n_events), "--batches", str(batches)]
    print(f"  child: {which} on {n_events:,} events ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        return {"which": which, "events": n_events, "error": proc.stderr[-2000:],
                "returncode": proc.returncode}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["rusage_children_max_so_far_MB"] = children
    print(f"    peak RSS {result['peak_rss_MB']:,.0f} MB in {result['seconds']:.1f} s", flush=True)
    return result


# --- report -----------------------------------------------------------------------------------
def verdict(name: str, value) -> str:
    if value is None:
        return "FAIL"
    op, threshold = TARGETS[name]
    ok = value >= threshold if op == ">=" else value <= threshold
    return "PASS" if ok else "FAIL"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer reference epochs, shorter generation, 1 repeat (iteration)")
    parser.add_argument("--skip-memory", action="store_true", help="no memory children")
    parser.add_argument("--ref-epochs", type=int, help="reference training epochs (default 40)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both sides (default 1: steadier on a shared CPU)")
    parser.add_argument("--out", default=str(BENCH / "results" / "latest.json"))
    parser.add_argument("--child", choices=("reference", "midilstm"), help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=100_000, help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_memory(args.child, args.events, args.batches)))
        return 0

    ref_epochs = args.ref_epochs or (15 if args.quick else 40)
    gen_events, repeats = (500, 1) if args.quick else (2000, 3)
    t_start = time.perf_counter()
    results = {"quick": args.quick, "machine": machine_info()}
    m = results["machine"]
    print(f"machine: {m['cpu_model']}, {m['usable_cores']} cores, torch {m['torch']} "
          f"({m['torch_threads']} threads), load avg {m['load_avg_start'][0]:.1f}")

    events, train_events, val_events, codec = load_default()
    warm_up()
    results["data"] = {"piece": default_piece().name, "events": len(events),
                       "train_events": len(train_events), "val_events": len(val_events),
                       "val_targets": len(val_events) - 1, "codec": codec.to_dict() | {
                           "time_edges_s": len(codec.time_edges_s),
                           "time_centers_s": len(codec.time_centers_s)},
                       "sizes": codec.sizes, "one_hot_width": sum(codec.sizes)}

    print(f"1/3 time to target: reference, {ref_epochs} epochs")
    reference = bench_reference_training(events, train_events, codec, ref_epochs)
    print(f"  reference best val NLL {reference['best_val_nll']:.4f} at epoch "
          f"{reference['best_epoch']} after {reference['seconds_to_best']:.1f} s")
    print(f"  midilstm {MIDILSTM_CONFIG}, until val NLL <= {reference['best_val_nll']:.4f}")
    mine = bench_midilstm_training(train_events, val_events, codec, reference["best_val_nll"])
    print(f"  midilstm: " + (f"reached at epoch {mine['epoch_to_target']} after "
                             f"{mine['seconds_to_target']:.2f} s" if mine["reached"] else
                             f"not reached in {mine['epochs_run']} epochs (best "
                             f"{mine['best_val_nll']:.4f})"))
    shipped = bench_midilstm_training(train_events, val_events, codec, reference["best_val_nll"], {})
    shipped.pop("_model")
    print(f"  midilstm with its shipped defaults: " + (
        f"reached at epoch {shipped['epoch_to_target']} after {shipped['seconds_to_target']:.2f} s"
        if shipped["reached"] else "not reached"))

    print(f"2/3 generation: {gen_events} events per stream, {repeats} repeat(s)")
    gen = bench_generation(reference.pop("_model"), mine.pop("_model"), codec, events,
                           gen_events, repeats)
    results.update(reference_training=reference, midilstm_training=mine,
                   midilstm_training_shipped_defaults=shipped, generation=gen)

    memory = {}
    if not args.skip_memory:
        print("3/3 memory: peak RSS of child processes")
        memory = {"reference_100k": run_child("reference", 100_000, 20),
                  "midilstm_100k": run_child("midilstm", 100_000, 0),
                  "midilstm_1M": run_child("midilstm", 1_000_000, 0)}
    results["memory"] = memory

    def peak(key):
        return memory.get(key, {}).get("peak_rss_MB")

    ratios = {
        "time_to_target_speedup": (reference["seconds_to_best"] / mine["seconds_to_target"]
                                   if mine["reached"] else None),
        "generation_speedup_1_stream": gen["midilstm_1_stream_notes_per_s"] / gen["reference_notes_per_s"],
        "generation_speedup_64_variations": gen["midilstm_64_variations_notes_per_s"] / gen["reference_notes_per_s"],
        "memory_ratio_100k": (peak("midilstm_100k") / peak("reference_100k")
                              if peak("midilstm_100k") and peak("reference_100k") else None),
        "midilstm_peak_rss_1M_GB": peak("midilstm_1M") / 1024 if peak("midilstm_1M") else None,
    }
    diagnostics = {
        "time_to_target_speedup_shipped_defaults": (
            reference["seconds_to_best"] / shipped["seconds_to_target"] if shipped["reached"] else None),
        "time_to_target_speedup_cpu_time": (reference["cpu_seconds_to_best"] / mine["cpu_seconds_to_target"]
                                            if mine["reached"] else None),
        "time_to_target_speedup_median_epochs": (reference["estimated_seconds_to_best"] / mine["estimated_seconds_to_target"]
                                                 if mine["reached"] else None),
    }
    results["ratios"] = {k: {"value": v, "target": f"{TARGETS[k][0]} {TARGETS[k][1]}",
                             "verdict": "SKIPPED" if v is None and args.skip_memory
                             and k in MEMORY_RATIOS else verdict(k, v)}
                         for k, v in ratios.items()}
    results["diagnostics"] = diagnostics
    results["machine"]["load_avg_end"] = os.getloadavg()
    results["total_seconds"] = time.perf_counter() - t_start

    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {out}")
    return 0


def print_table(results):
    r, m, g, mem = (results["reference_training"], results["midilstm_training"],
                    results["generation"], results["memory"])
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    rows = [
        ("reference best val NLL (nats/event)", fmt(r["best_val_nll"], ".4f"),
         f"epoch {r['best_epoch']}/{r['epochs']}"),
        ("reference time to its best (s)", fmt(r["seconds_to_best"], ".1f"),
         f"cpu {r['cpu_seconds_to_best']:.1f} s, median epoch {r['median_epoch_s']:.2f} s"),
        ("midilstm time to that NLL (s)", fmt(m.get("seconds_to_target"), ".2f"),
         (f"epoch {m['epoch_to_target']}, cpu {m['cpu_seconds_to_target']:.1f} s"
          if m["reached"] else f"not reached, best {m['best_val_nll']:.4f}")),
        ("reference generation (notes/s)", fmt(g["reference_notes_per_s"], ",.0f"), "1 stream"),
        ("midilstm generation (notes/s)", fmt(g["midilstm_1_stream_notes_per_s"], ",.0f"), "1 stream"),
        ("midilstm generation (notes/s)", fmt(g["midilstm_64_variations_notes_per_s"], ",.0f"),
         "64 variations, aggregate"),
    ]
    for key, label in (("reference_100k", "reference peak RSS, 100k events (MB)"),
                       ("midilstm_100k", "midilstm peak RSS, 100k events (MB)"),
                       ("midilstm_1M", "midilstm peak RSS, 1M events (MB)")):
        entry = mem.get(key, {})
        rows.append((label, fmt(entry.get("peak_rss_MB"), ",.0f"),
                     "error" if "error" in entry else
                     (f"{entry['train_steps']} steps, {entry['rss_before_train_MB']:,.0f} MB "
                      f"before training" if entry else "skipped")))
    width = max(len(a) for a, _, _ in rows)
    print("\nraw figures")
    for a, b, c in rows:
        print(f"  {a:<{width}}  {b:>12}  {c}")
    print("\nratios (midilstm vs reference)")
    for k, v in results["ratios"].items():
        print(f"  {k:<34} {fmt(v['value'], '.2f'):>10}  target {v['target']:<7} {v['verdict']}")
    for k, v in results["diagnostics"].items():
        print(f"  {k:<34} {fmt(v, '.2f'):>10}  (diagnostic)")
    mach = results["machine"]
    print(f"\nmachine: {mach['cpu_model']}, {mach['usable_cores']} cores, "
          f"{mach['memory_total_GB']} GB, torch {mach['torch']} ({mach['torch_threads']} threads); "
          f"load avg {mach['load_avg_start'][0]:.1f} -> {mach['load_avg_end'][0]:.1f}; "
          f"total {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
