"""Corpus reading and corpus training, measured as ratios in one run.

    .venv/bin/python music/make_corpus.py          # once: the Bach chorales in corpus/bach/
    OMP_NUM_THREADS=1 .venv/bin/python bench/corpus_bench.py [--corpus corpus/bach] [--quick]

Measures (medians of ``--repeats`` where timing is short):

* reading: cold (empty cache) with 2 worker processes against 1; warm cache against cold; and
  where the cold time goes (hashing the files, parsing without a cache with 1 and 2 workers,
  so the rest is writing the cache entries);
* the faster reader: symusic against ``read_midi`` (mido) on every file, notes compared under
  our rules (``bench/reader_agreement.py``) and both timed;
* training speed: events/s of ``midilstm.batch`` at batch 16, 64 and 256, and of ``train.train``
  with ``TrainConfig()`` (one thread, today's default) and with ``TrainConfig(threads=None)``
  under torch's default thread count (a fresh process without ``OMP_NUM_THREADS``: the issue's
  "today"), on the same pieces and model;
* validation NLL on the held-out pieces after the same wall time as each of those epochs;
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
from midilstm.batch import CorpusTrainConfig, train_corpus  # noqa: E402
from midilstm.codec import EventCodec  # noqa: E402
from midilstm.corpus import Corpus, load_corpus, read_corpus, split_names  # noqa: E402
from midilstm.events import events_to_notes  # noqa: E402
from midilstm.files import write_json_atomic  # noqa: E402
from midilstm.model import ModelConfig  # noqa: E402
from midilstm.parse import Selection, expand_sources, read_midi  # noqa: E402
from midilstm.train import TrainConfig, train  # noqa: E402

MODEL = {"hidden_size": 128, "num_layers": 1}  # TrainConfig()'s model: the lesson's network


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


def one_epoch(corpus: Corpus, config: TrainConfig) -> dict:
    """One epoch of ``train.train`` on the corpus's training pieces, validated on the held-out
    ones: its wall time, events/s and validation NLL."""
    codec, train_codes, val_codes = baseline_codes(corpus)
    n_train = sum(len(c) - 1 for c in train_codes)
    ckpt = train(codec, train_codes, val_codes, config, ModelConfig(sizes=codec.sizes, **MODEL),
                 progress=False)
    wall = ckpt.history[0]["seconds"]
    import torch
    return {"seconds": wall, "events_per_s": n_train / wall,
            "val_nll": ckpt.history[0]["val"]["nll"], "threads": torch.get_num_threads()}


def default_threads_child(directory: str) -> None:
    """In a fresh process without OMP_NUM_THREADS: one epoch with torch's own thread count."""
    print(json.dumps(one_epoch(load_corpus(directory), TrainConfig(epochs=1, threads=None))))


def corpus_same_time(corpus: Corpus, seconds: float) -> dict:
    ours = train_corpus(corpus, CorpusTrainConfig(steps=10**9, eval_every=25,
                                                  time_budget_s=seconds), MODEL, progress=False)
    return {"events_per_s": statistics.median(h["events_per_s"] for h in ours.history),
            "val_nll": ours.history[-1]["val"]["nll"], "seconds": ours.history[-1]["seconds"]}


def bench_training(corpus: Corpus, directory: Path, rounds: int, sweep_events: int) -> dict:
    """Events/s at three batch sizes; then, ``rounds`` times in turn (the machine is shared:
    turns spread the noise over all), one epoch of ``train.train(TrainConfig())`` and the
    corpus trainer's defaults for the same wall time, then one epoch of
    ``TrainConfig(threads=None)`` in a process with torch's default threads and the corpus
    trainer for that wall time. All validated on the held-out pieces; medians of the rounds."""
    codec, train_codes, val_codes = baseline_codes(corpus)
    out = {"train_events": sum(len(c) - 1 for c in train_codes)}
    for batch in (16, 64, 256):
        steps = max(4, sweep_events // (batch * 64))
        best = train_corpus(corpus, CorpusTrainConfig(steps=steps, batch_size=batch,
                                                      eval_every=steps), MODEL, progress=False)
        out[f"batch_{batch}_events_per_s"] = best.history[-1]["events_per_s"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    rows = {"one_thread": [], "corpus": [], "default_threads": [], "corpus_vs_default_threads": []}
    for _ in range(rounds):
        rows["one_thread"].append(one_epoch(corpus, TrainConfig(epochs=1)))
        rows["corpus"].append(corpus_same_time(corpus, rows["one_thread"][-1]["seconds"]))
        child = subprocess.run([sys.executable, __file__, "--threads-child", str(directory)],
                               check=True, capture_output=True, text=True, env=env).stdout
        rows["default_threads"].append(json.loads(child.strip().splitlines()[-1]))
        rows["corpus_vs_default_threads"].append(
            corpus_same_time(corpus, rows["default_threads"][-1]["seconds"]))
    table = baseline_table(train_codes, val_codes, codec.sizes)
    out["held_out_nll"] = {name: table[name]["nll"] for name in ("unigram", "bigram")}
    configs = {"one_thread": "TrainConfig(): batch 16, lr 1e-2, 1 thread, one epoch",
               "corpus": "CorpusTrainConfig(): batch 16, lr 1e-2, 1 thread, same time",
               "default_threads": "TrainConfig(threads=None), torch's default threads, one epoch",
               "corpus_vs_default_threads": "CorpusTrainConfig(), same time as threads=None"}
    for name, runs in rows.items():
        out[name] = {"config": configs[name], "rounds": runs,
                     **{k: statistics.median(r[k] for r in runs) for k in runs[0]}}
    ours_default, default = out["corpus_vs_default_threads"], out["default_threads"]
    out["speedup_vs_one_thread"] = out["corpus"]["events_per_s"] / out["one_thread"][
        "events_per_s"]
    out["speedup_vs_default_threads"] = ours_default["events_per_s"] / default["events_per_s"]
    return out


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
    train_corpus(corpus, CorpusTrainConfig(steps=30, batch_size=64, eval_every=30), MODEL,
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
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--threads-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.threads_child:
        default_threads_child(args.threads_child)
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
    results = {"reading": bench_reading(args.corpus, repeats),
               "reader_choice": bench_reader_choice(args.corpus, min(repeats, 3))}
    corpus = read_corpus(args.corpus, cache_dir=None, workers=2, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        corpus.save(tmp)
        results["training"] = bench_training(corpus, Path(tmp), min(repeats, 3),
                                             100_000 if args.quick else 200_000)
    results["memory"] = bench_memory(corpus)
    results["load_average"] = {"start": load_start, "end": os.getloadavg()}
    write_json_atomic(ROOT / "bench" / "results" / "corpus_bench.json", results)
    print(report(results))
    return 0


def report(results: dict) -> str:
    r, c, t, m = (results[k] for k in ("reading", "reader_choice", "training", "memory"))
    one, ours, default, ours_d = t["one_thread"], t["corpus"], t["default_threads"], \
        t["corpus_vs_default_threads"]
    load = results["load_average"]
    return f"""
load average (1, 5, 15 min): start {load['start'][0]:.1f} {load['start'][1]:.1f} {load['start'][2]:.1f}, end {load['end'][0]:.1f} {load['end'][1]:.1f} {load['end'][2]:.1f}

| measure | value | target |
|---|---|---|
| corpus | {r['files']} files, {r['events']:,} events | >= 300 pieces, >= 200,000 events |
| cold read, 1 worker / 2 workers | {r['cold_1_worker_s']:.2f} s / {r['cold_2_workers_s']:.2f} s = {r['speedup_2_workers']:.2f}x ({r['megabytes']:.1f} MB) | >= 1.7x |
| cores used by the 2-worker cold read (CPU s / wall s) | {r['cores_used_2_workers']:.2f} (rounds: {', '.join(f"{x:.2f}" for x in r['rounds']['cores_used_2_workers'])}) | |
| of which: hashing / parsing 1 worker / parsing 2 workers (no cache) | {r['hash_s']:.2f} s / {r['parse_1_worker_s']:.2f} s / {r['parse_2_workers_s']:.2f} s = {r['speedup_2_workers_no_cache']:.2f}x | |
| writing the cache (cold 1 worker minus parsing) | {r['cache_write_1_worker_s']:.2f} s | |
| warm cache / cold (2 workers) | {r['warm_s'] * 1000:.0f} ms = {r['speedup_warm']:.0f}x faster | >= 50x |
| symusic: files whose notes agree with read_midi | {c['agree']} / {c['files']} ({c['notes']:,} notes) | |
| read_midi / symusic / symusic + our rules, all files | {c['read_midi_s']:.2f} s / {c['symusic_s']:.2f} s / {c['symusic_with_rules_s']:.2f} s = {c['speedup_symusic']:.0f}x / {c['speedup_symusic_with_rules']:.1f}x | |
| training events/s: TrainConfig(threads=None), {default['threads']:.0f} threads / corpus defaults | {default['events_per_s']:,.0f} / {ours_d['events_per_s']:,.0f} = {t['speedup_vs_default_threads']:.2f}x (rounds: {', '.join(f"{r['events_per_s']:,.0f}" for r in default['rounds'])}) | >= 5x |
| validation NLL after {default['seconds']:.0f} s: threads=None / corpus | {default['val_nll']:.3f} / {ours_d['val_nll']:.3f} nats per event | no worse |
| training events/s: TrainConfig() (1 thread) / corpus defaults | {one['events_per_s']:,.0f} / {ours['events_per_s']:,.0f} = {t['speedup_vs_one_thread']:.2f}x | |
| validation NLL after {one['seconds']:.1f} s: TrainConfig() / corpus | {one['val_nll']:.3f} / {ours['val_nll']:.3f} nats per event | no worse |
| training events/s: batch 16 / 64 / 256 | {t['batch_16_events_per_s']:,.0f} / {t['batch_64_events_per_s']:,.0f} / {t['batch_256_events_per_s']:,.0f} | |
| held-out NLL (nats/event): unigram / bigram | {t['held_out_nll']['unigram']:.3f} / {t['held_out_nll']['bigram']:.3f} | |
| peak memory training on {m['notes']:,} notes | {m['max_rss_mb']:.0f} MB | <= 1,500 MB |
"""


if __name__ == "__main__":
    sys.exit(main())
