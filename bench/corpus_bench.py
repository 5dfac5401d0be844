"""Corpus reading and corpus training, measured as ratios in one run.

    .venv/bin/python music/make_corpus.py          # once: the Bach chorales in corpus/bach/
    OMP_NUM_THREADS=1 .venv/bin/python bench/corpus_bench.py [--corpus corpus/bach] [--quick]
        [--parts reading,training,memory] [--epochs 4]

Measures (medians of ``--repeats`` where timing is short):

* reading: cold (empty cache) with 2 worker processes against 1; warm cache against cold; and
  where the cold time goes (hashing the files, parsing without a cache with 1 and 2 workers,
  so the rest is writing the cache entries);
* the faster reader: symusic against ``read_midi`` (mido) on every file, notes compared under
  our rules (``bench/reader_agreement.py``) and both timed;
* where training speed comes from: events/s of ``python -m midilstm.batch train`` in one
  process on the lesson's network with one-hot or embedding input, in float32 or bfloat16,
  and the defaults at batch 16, 64 and 256;
* training against the single-piece trainer, on the same pieces, in turns: ``--epochs`` epochs
  of ``train.train(TrainConfig())`` (one thread, today's default), then the corpus trainer's
  defaults for the same wall time in 1 process and in 2 (``torchrun``); ``TrainConfig(
  threads=None)`` under torch's default thread count (a fresh process without
  ``OMP_NUM_THREADS``: the issue's "today"), then the corpus trainer in 2 processes for that
  wall time. Events/s and validation NLL on the held-out pieces after the same time. One more
  turn runs beside two busy loops, as on a shared machine;
* ``--parts long`` (about 10 min): ``--long-epochs`` epochs of ``TrainConfig()`` against the
  corpus trainer in 2 processes for the same wall time, validation NLL over time drawn in
  ``docs/corpus_vs_train.png``;
* peak memory (max RSS of a fresh process) training on a corpus of 1,000,000 notes (the Bach
  pieces repeated under new names, saved and memory-mapped).

The Yang & Lerch comparison is ``bench/set_evaluation.py``. Writes
``bench/results/corpus_bench.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from midilstm.baselines import baseline_table  # noqa: E402
from midilstm.checkpoint import load_checkpoint  # noqa: E402
from midilstm.batch import CorpusTrainConfig, train_corpus  # noqa: E402
from midilstm.codec import EventCodec  # noqa: E402
from midilstm.corpus import Corpus, load_corpus, read_corpus  # noqa: E402
from midilstm.data import split_names  # noqa: E402
from midilstm.events import events_to_notes  # noqa: E402
from midilstm.files import write_json_atomic  # noqa: E402
from midilstm.model import ModelConfig  # noqa: E402
from midilstm.parse import Selection, expand_sources, read_midi  # noqa: E402
from midilstm.train import TrainConfig, train  # noqa: E402

FACTORS = ("one_hot float32", "one_hot bfloat16", "embedding float32",
           "embedding bfloat16 (defaults)", "defaults, batch 64", "defaults, batch 256")
PARTS = ("reading", "training", "memory")  # and "long", only when asked for
LESSON = {"hidden_size": 128, "num_layers": 1,  # the lesson's network (ModelConfig now also
          "sounding_input": False, "key_input": False}  # tells the sounding pitches and key)


def timed(func):
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker processes)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_reading(source, repeats) -> dict:
    """Cold 1 / 2 workers and warm, each repeat in fresh cache folders; then where the cold
    time goes: hashing every file, and parsing with no cache at all (1 and 2 workers)."""
    times = {k: [] for k in ("cold_1_worker_s", "cold_2_workers_s", "warm_s", "hash_s",
                             "parse_1_worker_s", "parse_2_workers_s", "cores_used_2_workers")}
    paths = expand_sources(source)
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            seconds, one = timed(lambda: read_corpus(source, cache_dir=a, workers=1,
                                                     progress=False))
            times["cold_1_worker_s"].append(seconds)
            cpu = cpu_seconds()
            seconds, two = timed(lambda: read_corpus(source, cache_dir=b, workers=2,
                                                     progress=False))
            times["cold_2_workers_s"].append(seconds)
            # CPU seconds per wall second: 2 if both workers had a core all the time
            times["cores_used_2_workers"].append((cpu_seconds() - cpu) / seconds)
            assert one.stats["parsed"] == two.stats["parsed"] == one.stats["pieces"]
            np.testing.assert_array_equal(one.events, two.events)
            for _ in range(3):
                seconds, hot = timed(lambda: read_corpus(source, cache_dir=b, workers=2,
                                                         progress=False))
                assert hot.stats["parsed"] == 0
                times["warm_s"].append(seconds)
        times["hash_s"].append(timed(lambda: [hashlib.sha256(p.read_bytes()).digest()
                                              for p in paths])[0])
        for workers, key in ((1, "parse_1_worker_s"), (2, "parse_2_workers_s")):
            times[key].append(timed(lambda: read_corpus(source, cache_dir=None, workers=workers,
                                                        progress=False))[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    med["rounds"] = times
    med["files"], med["events"] = one.stats["files"], len(one.events)
    med["megabytes"] = sum(p.stat().st_size for p in paths) / 1e6
    med["speedup_2_workers"] = med["cold_1_worker_s"] / med["cold_2_workers_s"]
    med["speedup_2_workers_no_cache"] = med["parse_1_worker_s"] / med["parse_2_workers_s"]
    med["speedup_warm"] = med["cold_2_workers_s"] / med["warm_s"]
    med["cache_write_1_worker_s"] = med["cold_1_worker_s"] - med["parse_1_worker_s"]
    med["load_average"] = os.getloadavg()
    return med


def bench_reader_choice(source, repeats) -> dict:
    """symusic against read_midi on every file: does it give the same notes under our rules
    (``reader_agreement.reference_notes``: all notes, zero-length ones dropped, the piano's
    restrike rule), and how much faster does it parse? Timed per pass over all files."""
    from reader_agreement import compare, reference_notes
    import symusic
    paths = expand_sources(source)
    selection = Selection(include_drums=True, pitch_low=0, pitch_high=127)
    agree, disagree, notes = 0, [], 0
    for path in paths:
        ours = events_to_notes(read_midi(path, selection).events)[0]
        result = compare(ours, reference_notes("symusic", path))
        notes += len(ours)
        if result["exact"] == len(ours) == result["reference"]:
            agree += 1
        else:
            disagree.append((str(path), len(ours), result["reference"], result["exact"]))
    ours_s, theirs_s, theirs_rule_s = [], [], []
    for _ in range(repeats):
        ours_s.append(timed(lambda: [read_midi(p) for p in paths])[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs_s.append(timed(lambda: [symusic.Score(str(p), ttype="second")
                                           for p in paths])[0])
            theirs_rule_s.append(timed(lambda: [reference_notes("symusic", p)
                                                for p in paths])[0])
    med = statistics.median
    return {"files": len(paths), "notes": notes, "agree": agree, "disagree": disagree[:20],
            "n_disagree": len(disagree), "read_midi_s": med(ours_s), "symusic_s": med(theirs_s),
            "symusic_with_rules_s": med(theirs_rule_s),
            "speedup_symusic": med(ours_s) / med(theirs_s),
            "speedup_symusic_with_rules": med(ours_s) / med(theirs_rule_s)}


def baseline_codes(corpus: Corpus):
    """The pieces as ``train.train`` takes them: the same split and codec as ``batch``."""
    train_idx, val_idx = split_names(corpus.names)
    codec = EventCodec().fit([corpus.piece(i) for i in train_idx])
    return (codec, [codec.encode(corpus.piece(i)) for i in train_idx],
            [codec.encode(corpus.piece(i)) for i in val_idx])


def baseline_run(corpus: Corpus, config: TrainConfig) -> dict:
    """``train.train`` on the corpus's training pieces for ``config.epochs`` epochs, validated on
    the held-out ones after each: its training wall time, events/s and last validation NLL."""
    codec, train_codes, val_codes = baseline_codes(corpus)
    ckpt = train(codec, train_codes, val_codes, config, ModelConfig(sizes=codec.sizes, **LESSON),
                 progress=False)
    seconds = sum(h["seconds"] for h in ckpt.history)
    import torch
    return {"seconds": seconds, "events_per_s": sum(h["events"] for h in ckpt.history) / seconds,
            "val_nll": ckpt.history[-1]["val"]["nll"], "threads": torch.get_num_threads(),
            "curve": [(float(t), h["val"]["nll"]) for t, h in zip(
                np.cumsum([h["seconds"] for h in ckpt.history]), ckpt.history)]}


def default_threads_child(directory: str, epochs: int) -> None:
    """In a fresh process without OMP_NUM_THREADS: torch's own thread count."""
    config = TrainConfig(epochs=epochs, patience=epochs, threads=None)
    print(json.dumps(baseline_run(load_corpus(directory), config)))


def corpus_run(directory: Path, seconds: float, processes: int = 1, steps: int | None = None,
               eval_every: int = 25, **options) -> dict:
    """``python -m midilstm.batch train`` (under torchrun for 2+ processes) on the saved corpus
    with its defaults (plus ``options`` as command-line flags) until the first validation after
    ``seconds`` of training (or ``steps``): median events/s and the last validation NLL."""
    with tempfile.TemporaryDirectory() as tmp:
        flags = ["--data", str(directory), "--out", f"{tmp}/m.pt", "--eval-every", str(eval_every),
                 "--steps", str(steps or 10**9)]
        flags += ["--time-budget-s", str(seconds)] if steps is None else []
        for name, value in options.items():
            flags += [f"--{name.replace('_', '-')}", str(value)]
        launcher = [sys.executable, "-m", "midilstm.batch"] if processes == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "midilstm.batch"]
        done = subprocess.run(launcher + ["train"] + flags, capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode:
            sys.exit(f"corpus training failed ({' '.join(flags)}):\n{done.stderr[-2000:]}")
        ckpt = load_checkpoint(f"{tmp}/m.pt")
    history = ckpt.history
    return {"events_per_s": statistics.median(h["events_per_s"] for h in history),
            "val_nll": history[-1]["val"]["nll"], "seconds": history[-1]["elapsed_s"],
            "processes": processes, "precision": ckpt.params["precision"],
            "curve": [(h["elapsed_s"], h["val"]["nll"]) for h in history]}


def busy_loops(n: int):
    """``n`` processes spinning (what other jobs on a shared machine do); kill them after."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def bench_training(corpus: Corpus, directory: Path, rounds: int, epochs: int,
                   speed_sequences: int) -> dict:
    """Where the speed comes from (1 process, events/s of the lesson's network with one-hot
    or embedding input, float32 or bfloat16, and the defaults at batch 64 and 256); then,
    ``rounds`` times in turn (the machine is shared: turns spread the noise over all) and once
    more beside two busy loops: ``epochs`` epochs of ``train.train(TrainConfig())``, the corpus
    trainer's defaults for the same wall time in 1 and 2 processes, ``epochs`` epochs of
    ``TrainConfig(threads=None)`` in a process with torch's default threads, and the corpus
    trainer in 2 processes for that wall time. All validated on the held-out pieces."""
    codec, train_codes, val_codes = baseline_codes(corpus)
    out = {"train_events": sum(len(c) - 1 for c in train_codes), "epochs": epochs,
           "factors": {}}
    for label, options in zip(FACTORS, ({"input_mode": "one_hot", "precision": "float32"},
                                        {"input_mode": "one_hot", "precision": "bfloat16"},
                                        {"precision": "float32"}, {}, {"batch_size": 64},
                                        {"batch_size": 256})):
        batch = options.get("batch_size", 16)
        steps = max(8, speed_sequences // batch)
        run = corpus_run(directory, 0, steps=steps, eval_every=steps, **options)
        out["factors"][label] = run["events_per_s"]
        out["factors_precision"] = {**out.get("factors_precision", {}), label: run["precision"]}
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    rows = {f"{name}{load}": [] for load in ("", " loaded")
            for name in ("TrainConfig()", "corpus 1 process", "corpus 2 processes",
                         "TrainConfig(threads=None)", "corpus 2 processes, same time as threads=None")}
    for turn in range(rounds + 1):
        load, loops = ("", []) if turn < rounds else (" loaded", busy_loops(2))
        try:
            base = baseline_run(corpus, TrainConfig(epochs=epochs, patience=epochs))
            rows[f"TrainConfig(){load}"].append(base)
            if not load:
                rows["corpus 1 process"].append(corpus_run(directory, base["seconds"]))
            rows[f"corpus 2 processes{load}"].append(corpus_run(directory, base["seconds"], 2))
            child = subprocess.run([sys.executable, __file__, "--threads-child", str(directory),
                                    "--epochs", str(epochs)], check=True, capture_output=True,
                                   text=True, env=env).stdout
            default = json.loads(child.strip().splitlines()[-1])
            rows[f"TrainConfig(threads=None){load}"].append(default)
            rows[f"corpus 2 processes, same time as threads=None{load}"].append(
                corpus_run(directory, default["seconds"], 2))
        finally:
            for loop in loops:
                loop.kill()
    table = baseline_table(train_codes, val_codes, codec.sizes)
    out["held_out_nll"] = {name: table[name]["nll"] for name in ("unigram", "bigram")}
    out["rows"] = {name: {"rounds": runs, "threads": runs[0].get("threads"),
                          **{k: statistics.median(r[k] for r in runs)
                             for k in ("seconds", "events_per_s", "val_nll")}}
                   for name, runs in rows.items() if runs}
    return out


def bench_long(corpus: Corpus, directory: Path, epochs: int) -> dict:
    """Minutes, not seconds: ``epochs`` epochs of ``TrainConfig()``, then the corpus trainer in
    2 processes for the same wall time; validation NLL over time, drawn in
    ``docs/corpus_vs_train.png``."""
    base = baseline_run(corpus, TrainConfig(epochs=epochs, patience=epochs))
    ours = corpus_run(directory, base["seconds"], 2, eval_every=250)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for run, label in ((base, "train.train(TrainConfig()), 1 process"),
                       (ours, "python -m midilstm train defaults, torchrun 2 processes")):
        ax.plot(*zip(*run["curve"]), "o-", ms=2, label=f"{label}: {run['events_per_s']:,.0f} "
                                                       f"events/s")
    ax.set(xlabel="training wall time (s, validation excluded)", ylabel="held-out NLL (nats/event)",
           title="Bach chorales, 40 held-out pieces")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "corpus_vs_train.png", dpi=80)
    return {"epochs": epochs, "TrainConfig()": base, "corpus 2 processes": ours}


def million_note_corpus(corpus: Corpus, directory: Path, notes: int = 1_000_000) -> Path:
    """The pieces repeated under new names until they hold ``notes`` notes (2 events each)."""
    copies = -(-2 * notes // len(corpus.events))
    events = np.concatenate([corpus.events] * copies)
    offsets = np.concatenate([corpus.offsets[:-1] + k * len(corpus.events)
                              for k in range(copies)] + [[copies * len(corpus.events)]])
    names = [f"copy{k}/{Path(n).name.replace('.mid', f'_{k}.mid')}" for k in range(copies)
             for n in corpus.names]
    Corpus(events=events, offsets=offsets.astype(np.int64), names=names).save(directory)
    return directory


def memory_child(directory: str) -> None:
    """Run in a fresh process: train a few steps on the saved corpus, print max RSS (MB)."""
    corpus = load_corpus(directory)
    train_corpus(corpus, CorpusTrainConfig(steps=30, batch_size=64, eval_every=30),
                 progress=False)
    print(json.dumps({"notes": int(np.sum(corpus.events["velocity"] > 0)),
                      "events": len(corpus.events),
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def bench_memory(corpus: Corpus) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        million_note_corpus(corpus, Path(tmp) / "big")
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(Path(tmp) / "big")],
                             check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus" / "bach")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and epochs")
    parser.add_argument("--parts", type=lambda text: tuple(text.split(",")), default=PARTS,
                        help="comma-separated subset of reading,training,memory,long (the "
                             "others are kept from the last results file; 'long' only runs "
                             "when named)")
    parser.add_argument("--long-epochs", type=int, default=60,
                        help="epochs of TrainConfig() in the 'long' part (about 4.5 s each)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--threads-child", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs of TrainConfig() per training comparison (about 5 s each)")
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.threads_child:
        default_threads_child(args.threads_child, args.epochs)
        return 0
    if not args.corpus.exists():
        print(f"error: {args.corpus}: no corpus; build it with music/make_corpus.py",
              file=sys.stderr)
        return 2
    repeats = 1 if args.quick else args.repeats
    load_start = os.getloadavg()
    warm_up = read_corpus(args.corpus, cache_dir=None, workers=1, progress=False)
    train_corpus(warm_up.subset(range(4)), CorpusTrainConfig(steps=2, batch_size=2, eval_every=2),
                 {"hidden_size": 8}, progress=False)  # one-time imports (torch's first step)
    path = ROOT / "bench" / "results" / "corpus_bench.json"
    results = json.loads(path.read_text()) if path.exists() else {}  # parts not run are kept
    if "reading" in args.parts:
        results["reading"] = bench_reading(args.corpus, repeats)
        results["reader_choice"] = bench_reader_choice(args.corpus, min(repeats, 3))
    corpus = read_corpus(args.corpus, cache_dir=None, workers=2, progress=False)
    if "training" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            corpus.save(tmp)
            results["training"] = bench_training(corpus, Path(tmp), min(repeats, 3),
                                                 1 if args.quick else args.epochs,
                                                 1600 if args.quick else 3200)
    if "long" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            corpus.save(tmp)
            results["long"] = bench_long(corpus, Path(tmp), args.long_epochs)
    if "memory" in args.parts:
        results["memory"] = bench_memory(corpus)
    results["load_average"] = {"start": load_start, "end": os.getloadavg()}
    write_json_atomic(path, results)
    print(report(results))
    return 0


def report(results: dict) -> str:
    r, c, t, m = (results[k] for k in ("reading", "reader_choice", "training", "memory"))
    rows, load = t["rows"], results["load_average"]
    base, ours1 = rows["TrainConfig()"], rows["corpus 1 process"]
    f = t["factors"]
    lines = [f"load average (1, 5, 15 min): start {' '.join(f'{x:.1f}' for x in load['start'])}"
             f", end {' '.join(f'{x:.1f}' for x in load['end'])}", "",
             "| measure | value | target |", "|---|---|---|",
             f"| corpus | {r['files']} files, {r['events']:,} events | >= 300 pieces, >= 200,000 events |",
             f"| cold read, 1 worker / 2 workers | {r['cold_1_worker_s']:.2f} s / {r['cold_2_workers_s']:.2f} s = {r['speedup_2_workers']:.2f}x ({r['megabytes']:.1f} MB) | >= 1.7x |",
             f"| cores used by the 2-worker cold read (CPU s / wall s) | {r['cores_used_2_workers']:.2f} | |",
             f"| hashing / parsing 1 worker / parsing 2 workers (no cache) | {r['hash_s']:.2f} s / {r['parse_1_worker_s']:.2f} s / {r['parse_2_workers_s']:.2f} s = {r['speedup_2_workers_no_cache']:.2f}x | |",
             f"| warm cache / cold (2 workers) | {r['warm_s'] * 1000:.0f} ms = {r['speedup_warm']:.0f}x faster | >= 50x |",
             f"| symusic: files whose notes agree with read_midi | {c['agree']} / {c['files']} ({c['notes']:,} notes) | |",
             f"| read_midi / symusic / symusic + our rules | {c['read_midi_s']:.2f} s / {c['symusic_s']:.2f} s / {c['symusic_with_rules_s']:.2f} s = {c['speedup_symusic']:.0f}x / {c['speedup_symusic_with_rules']:.1f}x | |",
             "| events/s, 1 process, batch 16: " + " / ".join(FACTORS[:4]) + " | "
             + " / ".join(f"{f[k]:,.0f}" for k in FACTORS[:4]) + " | |",
             "| events/s, defaults at batch 16 / 64 / 256 | "
             + " / ".join(f"{f[k]:,.0f}" for k in FACTORS[3:]) + " | |"]
    for load_label, suffix in (("", ""), (" beside 2 busy loops", " loaded")):
        b, o2 = rows[f"TrainConfig(){suffix}"], rows[f"corpus 2 processes{suffix}"]
        d, od = rows[f"TrainConfig(threads=None){suffix}"], rows[
            f"corpus 2 processes, same time as threads=None{suffix}"]
        lines += [
            f"| events/s{load_label}: TrainConfig() / corpus, 2 processes | {b['events_per_s']:,.0f} / {o2['events_per_s']:,.0f} = {o2['events_per_s'] / b['events_per_s']:.2f}x | >= 5x |",
            f"| held-out NLL after {b['seconds']:.0f} s{load_label}: TrainConfig() / corpus | {b['val_nll']:.3f} / {o2['val_nll']:.3f} nats per event | no worse |",
            f"| events/s{load_label}: TrainConfig(threads=None), {d['threads']} threads / corpus, 2 processes | {d['events_per_s']:,.0f} / {od['events_per_s']:,.0f} = {od['events_per_s'] / d['events_per_s']:.2f}x | >= 5x |",
            f"| held-out NLL after {d['seconds']:.0f} s{load_label}: threads=None / corpus | {d['val_nll']:.3f} / {od['val_nll']:.3f} nats per event | no worse |"]
    lines += [
        f"| events/s: TrainConfig() / corpus, 1 process | {base['events_per_s']:,.0f} / {ours1['events_per_s']:,.0f} = {ours1['events_per_s'] / base['events_per_s']:.2f}x (NLL {base['val_nll']:.3f} / {ours1['val_nll']:.3f}) | |",
        f"| held-out NLL (nats/event): unigram / bigram | {t['held_out_nll']['unigram']:.3f} / {t['held_out_nll']['bigram']:.3f} | |",
        f"| peak memory training on {m['notes']:,} notes | {m['max_rss_mb']:.0f} MB | <= 1,500 MB |"]
    if "long" in results:
        b, o = results["long"]["TrainConfig()"], results["long"]["corpus 2 processes"]
        lines.append(f"| long: events/s, TrainConfig() ({results['long']['epochs']} epochs) / "
                     f"corpus, 2 processes | {b['events_per_s']:,.0f} / {o['events_per_s']:,.0f}"
                     f" = {o['events_per_s'] / b['events_per_s']:.2f}x | |")
        lines.append(f"| long: held-out NLL after {b['seconds']:.0f} s | {b['val_nll']:.3f} / "
                     f"{o['val_nll']:.3f} nats per event (best {min(v for _, v in b['curve']):.3f}"
                     f" / {min(v for _, v in o['curve']):.3f}) | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
