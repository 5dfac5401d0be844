"""Corpus reading and corpus training, measured as ratios in one run.

    .venv/bin/python music/make_corpus.py          # once: the Bach chorales in corpus/bach/
    OMP_NUM_THREADS=1 .venv/bin/python bench/corpus_bench.py [--corpus corpus/bach] [--quick]

Measures (medians of ``--repeats`` where timing is short):

* reading: cold (empty cache) with 2 worker processes against 1; warm cache against cold;
* training speed: events/s of ``midilstm.batch`` at batch 16, 64 and 256 against today's
  ``train.train`` with ``TrainConfig()`` on the same pieces, model and thread count;
* validation NLL on the held-out pieces after the same wall time;
* peak memory (max RSS of a fresh process) training on a corpus of 1,000,000 notes (the Bach
  pieces repeated under new names, saved and memory-mapped).

Writes ``bench/results/corpus_bench.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from midilstm.baselines import baseline_table  # noqa: E402
from midilstm.batch import CorpusTrainConfig, sample_windows, train_corpus  # noqa: E402
from midilstm.codec import EventCodec  # noqa: E402
from midilstm.corpus import Corpus, load_corpus, read_corpus, split_names  # noqa: E402
from midilstm.features import compare_sets  # noqa: E402
from midilstm.files import write_json_atomic  # noqa: E402
from midilstm.generate import generate  # noqa: E402
from midilstm.model import ModelConfig  # noqa: E402
from midilstm.train import TrainConfig, train  # noqa: E402

MODEL = {"hidden_size": 128, "num_layers": 1}  # TrainConfig()'s model: the lesson's network


def timed(func):
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def bench_reading(source, repeats) -> dict:
    cold1, cold2, warm = [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            seconds, one = timed(lambda: read_corpus(source, cache_dir=a, workers=1,
                                                     progress=False))
            cold1.append(seconds)
            seconds, two = timed(lambda: read_corpus(source, cache_dir=b, workers=2,
                                                     progress=False))
            cold2.append(seconds)
            assert one.stats["parsed"] == two.stats["parsed"] == one.stats["pieces"]
            np.testing.assert_array_equal(one.events, two.events)
            for _ in range(3):
                seconds, hot = timed(lambda: read_corpus(source, cache_dir=b, workers=2,
                                                         progress=False))
                assert hot.stats["parsed"] == 0
                warm.append(seconds)
    med = {k: statistics.median(v) for k, v in
           (("cold_1_worker_s", cold1), ("cold_2_workers_s", cold2), ("warm_s", warm))}
    med["files"], med["events"] = one.stats["files"], len(one.events)
    med["speedup_2_workers"] = med["cold_1_worker_s"] / med["cold_2_workers_s"]
    med["speedup_warm"] = med["cold_2_workers_s"] / med["warm_s"]
    return med


def baseline_codes(corpus: Corpus):
    """The pieces as ``train.train`` takes them: the same split and codec as ``batch``."""
    train_idx, val_idx = split_names(corpus.names)
    codec = EventCodec().fit([corpus.piece(i) for i in train_idx])
    return (codec, [codec.encode(corpus.piece(i)) for i in train_idx],
            [codec.encode(corpus.piece(i)) for i in val_idx])


def bench_training(corpus: Corpus, rounds: int, sweep_events: int) -> dict:
    """Events/s at three batch sizes; then, ``rounds`` times in turn (the machine is shared:
    turns spread the noise over both), one epoch of ``train.train(TrainConfig())`` and the
    corpus trainer's defaults for the same wall time, both validated on the held-out pieces."""
    codec, train_codes, val_codes = baseline_codes(corpus)
    n_train = sum(len(c) - 1 for c in train_codes)
    out = {"train_events": n_train}
    for batch in (16, 64, 256):
        steps = max(4, sweep_events // (batch * 64))
        best = train_corpus(corpus, CorpusTrainConfig(steps=steps, batch_size=batch,
                                                      eval_every=steps), MODEL, progress=False)
        out[f"batch_{batch}_events_per_s"] = best.history[-1]["events_per_s"]
    base_rate, base_nll, rate, nll, walls = [], [], [], [], []
    for _ in range(rounds):
        base = train(codec, train_codes, val_codes, TrainConfig(epochs=1),
                     ModelConfig(sizes=codec.sizes, **MODEL), progress=False)
        wall = base.history[0]["seconds"]
        walls.append(wall)
        base_rate.append(n_train / wall)
        base_nll.append(base.history[0]["val"]["nll"])
        ours = train_corpus(corpus, CorpusTrainConfig(steps=10**9, eval_every=25,
                                                      time_budget_s=wall), MODEL, progress=False)
        rate.append(statistics.median(h["events_per_s"] for h in ours.history))
        out["model"] = ours
        nll.append(ours.history[-1]["val"]["nll"])
    med = statistics.median
    table = baseline_table(train_codes, val_codes, codec.sizes)
    out["held_out_nll"] = {name: table[name]["nll"] for name in ("unigram", "bigram")}
    out["baseline"] = {"config": "TrainConfig(): batch 16, lr 1e-2, 1 thread, one epoch",
                       "events_per_s": med(base_rate), "val_nll": med(base_nll),
                       "seconds": med(walls), "val_nll_rounds": base_nll}
    out["corpus"] = {"config": "CorpusTrainConfig(): batch 16, lr 1e-2, 1 thread, same time",
                     "events_per_s": med(rate), "val_nll": med(nll), "val_nll_rounds": nll}
    out["speedup_events_per_s"] = out["corpus"]["events_per_s"] / out["baseline"]["events_per_s"]
    out["best_batch_speedup"] = max(out[f"batch_{b}_events_per_s"] for b in (16, 64, 256)) / \
        out["baseline"]["events_per_s"]
    return out


def excerpts(corpus: Corpus, pieces, n: int, length: int, seed: int) -> list:
    """``n`` random windows of ``length`` events from ``pieces`` (never across two)."""
    starts = sample_windows(corpus.offsets, pieces, length, n, np.random.default_rng(seed))
    return [np.asarray(corpus.events[s:s + length]) for s in starts]


def bench_features(corpus: Corpus, checkpoint, n: int = 100, length: int = 200) -> dict:
    """Yang & Lerch overlapped area and KL: generated against training excerpts, and the
    ceiling, held-out real against training excerpts."""
    train_idx, val_idx = split_names(corpus.names)
    reference = excerpts(corpus, train_idx, n, length, seed=1)
    held_out = excerpts(corpus, val_idx, n, length, seed=2)
    primers = excerpts(corpus, val_idx, 1, 30, seed=3)[0]
    generated = generate(checkpoint.model, checkpoint.codec, primers, n_events=length,
                         n_variations=n, seed=0)
    return {"generated": compare_sets(generated, reference),
            "ceiling": compare_sets(held_out, reference), "n": n, "length": length}


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
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if not args.corpus.exists():
        print(f"error: {args.corpus}: no corpus; build it with music/make_corpus.py",
              file=sys.stderr)
        return 2
    repeats = 1 if args.quick else args.repeats
    warm_up = read_corpus(args.corpus, cache_dir=None, workers=1, progress=False)
    train_corpus(warm_up.subset(range(4)), CorpusTrainConfig(steps=2, batch_size=2, eval_every=2),
                 {"hidden_size": 8}, progress=False)  # one-time imports (torch's first step)
    results = {"reading": bench_reading(args.corpus, repeats)}
    corpus = read_corpus(args.corpus, cache_dir=None, workers=2, progress=False)
    results["training"] = bench_training(corpus, repeats, 100_000 if args.quick else 200_000)
    model = results["training"].pop("model")
    results["features"] = bench_features(corpus, model)
    results["memory"] = bench_memory(corpus)
    write_json_atomic(ROOT / "bench" / "results" / "corpus_bench.json", results)
    r, t, m = results["reading"], results["training"], results["memory"]
    f = results["features"]
    rows = "\n".join(f"| {name} | {f['generated'][name]['overlap']:.2f} | "
                     f"{f['ceiling'][name]['overlap']:.2f} | {f['generated'][name]['kl']:.3f} | "
                     f"{f['ceiling'][name]['kl']:.3f} |" for name in f["generated"])
    print(f"""
| measure | value | target |
|---|---|---|
| corpus | {r['files']} files, {r['events']:,} events | >= 300 pieces, >= 200,000 events |
| cold read, 1 worker / 2 workers | {r['cold_1_worker_s']:.2f} s / {r['cold_2_workers_s']:.2f} s = {r['speedup_2_workers']:.2f}x | >= 1.7x |
| warm cache / cold (2 workers) | {r['warm_s'] * 1000:.0f} ms = {r['speedup_warm']:.0f}x faster | >= 50x |
| training events/s: TrainConfig() / corpus defaults | {t['baseline']['events_per_s']:,.0f} / {t['corpus']['events_per_s']:,.0f} = {t['speedup_events_per_s']:.2f}x | >= 5x |
| training events/s: batch 16 / 64 / 256 | {t['batch_16_events_per_s']:,.0f} / {t['batch_64_events_per_s']:,.0f} / {t['batch_256_events_per_s']:,.0f} (best {t['best_batch_speedup']:.2f}x TrainConfig()) | |
| validation NLL after {t['baseline']['seconds']:.0f} s: TrainConfig() / corpus defaults | {t['baseline']['val_nll']:.3f} / {t['corpus']['val_nll']:.3f} nats per event | no worse |
| held-out NLL (nats/event): unigram / bigram | {t['held_out_nll']['unigram']:.3f} / {t['held_out_nll']['bigram']:.3f} | |
| peak memory training on {m['notes']:,} notes | {m['max_rss_mb']:.0f} MB | <= 1,500 MB |

{f['n']} excerpts of {f['length']} events, against {f['n']} training excerpts (Yang & Lerch):

| feature | overlap: generated | overlap: held-out real (ceiling) | KL: generated | KL: ceiling |
|---|---|---|---|---|
{rows}
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
