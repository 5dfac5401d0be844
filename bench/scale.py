"""How the cost of reading a collection grows with its size (issue 19, item 3).

    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py [--quick] [--sizes 1000,3000,10000]
        [--modes local1,local2,dask] [--repeats 3] [--out bench/results/scale.json]

Generates a synthetic collection of ``max(sizes)`` MIDI files (random-walk melodies of 50 to
400 notes, as in ``tests/helpers_model.py``, written by ``midilstm.write_midi``) in a temporary
folder; for each size N the first N files are read with ``read_corpus``:

* ``local1`` / ``local2``: 1 and 2 local worker processes;
* ``dask``: a ``distributed.LocalCluster`` of 2 worker processes (1 thread each) on 127.0.0.1,
  started before the clock starts (``read_corpus(..., scheduler=ADDRESS)``);

each cold (a fresh cache folder) and then warm (the same folder again), ``--repeats`` times
(medians reported, each repeat with its own fresh cache). Every read runs in a
fresh child process (``--child``), which times only the ``read_corpus`` call and reports its
peak RSS: ``getrusage(RUSAGE_SELF).ru_maxrss`` (the reading process, which holds the corpus and
writes the cache) and ``RUSAGE_CHILDREN`` (the largest of the processes it started and waited for: the
pool's workers, or the Dask nannies and their workers; not a sum). A child that reads nothing
gives the memory baseline.

Linearity: for each mode, time = a + b*N is fitted by least squares, and the ratio of per-file
time (time/N) between the largest and the smallest N is reported (near 1: linear; below 1: a
fixed cost spread over more files; above 1: worse than linear), and the marginal ratio: the
slope over the upper interval of sizes against the slope over the lower one (1: linear; free of
the fixed cost). The same for peak memory above the baseline (for Dask the baseline includes the
LocalCluster started, whose scheduler runs in the reading process).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("local1", "local2", "dask")


def random_walk_events(n_notes: int, seed: int) -> np.ndarray:
    """A melody whose pitch takes random steps in 48..84; each note is an on and an off."""
    from midilstm.events import make_events

    rng = np.random.default_rng(seed)
    pitch = 48 + np.cumsum(rng.integers(-3, 4, n_notes)) % 37
    triples = []
    for p in pitch.tolist():
        triples.append((p, int(rng.integers(40, 110)), float(rng.choice([0.0, 0.1, 0.2, 0.4]))))
        triples.append((p, 0, float(rng.choice([0.1, 0.2, 0.3, 0.6]))))
    return make_events(triples)


def make_collection(folder: Path, n: int) -> list[str]:
    from midilstm import write_midi

    rng = np.random.default_rng(19)
    paths = []
    for i in range(n):
        path = folder / f"{i // 1000:02d}" / f"walk_{i:05d}.mid"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_midi(random_walk_events(int(rng.integers(50, 401)), seed=i), path)
        paths.append(str(path))
    return paths


def child(args) -> None:
    """One read in this fresh process; prints one JSON line."""
    from midilstm.corpus import read_corpus

    paths = json.loads(Path(args.list).read_text())[: args.n]
    out = {"n": args.n}
    if args.mode == "dask":
        from distributed import LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as lc:
            if not args.n:  # the baseline: the cluster started, nothing read
                return print_result(out)
            t0 = time.perf_counter()
            corpus = read_corpus(paths, cache_dir=args.cache, progress=False,
                                 scheduler=lc.scheduler_address)
            out["seconds"] = time.perf_counter() - t0
    elif not args.n:  # the baseline: imports only
        return print_result(out)
    else:
        workers = int(args.mode[-1])
        t0 = time.perf_counter()
        corpus = read_corpus(paths, cache_dir=args.cache, progress=False, workers=workers)
        out["seconds"] = time.perf_counter() - t0
    if args.n:
        out["pieces"] = len(corpus.names)
        out["events"] = int(len(corpus.events))
        out["stats"] = {k: v for k, v in corpus.stats.items() if isinstance(v, (int, float))}
        out["bad"] = len(corpus.bad)
    print_result(out)


def print_result(out: dict) -> None:
    out["maxrss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["maxrss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


def run_child(mode, n, listfile, cache) -> dict:
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--n", str(n),
           "--list", str(listfile), "--cache", str(cache)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child {mode} n={n} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def fit_line(ns, ys):
    b, a = np.polyfit(np.asarray(ns, float), np.asarray(ys, float), 1)
    return float(a), float(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,3000,10000")
    ap.add_argument("--quick", action="store_true", help="sizes 200, 600, 2000")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--repeats", type=int, default=3, help="reads per cell; medians reported")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--list", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    sizes = [200, 600, 2000] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    modes = [m for m in args.modes.split(",") if m]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="midilstm_scale_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = make_collection(tmp / "midi", max(sizes))
        gen_s = time.perf_counter() - t0
        sizes_bytes = np.cumsum([os.path.getsize(p) for p in paths])
        listfile = tmp / "paths.json"
        listfile.write_text(json.dumps(paths))
        print(f"generated {len(paths)} files, {sizes_bytes[-1] / 1e6:.1f} MB, in {gen_s:.1f} s",
              flush=True)
        baselines = {}
        for mode in modes:  # imports (and for Dask the cluster started), nothing read
            baselines[mode] = run_child(mode, 0, listfile, tmp / "unused")["maxrss_self_mb"]
            print(f"baseline {mode}: {baselines[mode]:.0f} MB", flush=True)
        rows = []
        for n in sizes:
            mb = sizes_bytes[n - 1] / 1e6
            for mode in modes:
                runs = {"cold": [], "warm": []}
                for rep in range(args.repeats):  # each repeat: a fresh cache, cold then warm
                    cache = tmp / f"cache_{mode}_{n}_{rep}"
                    for temp in ("cold", "warm"):
                        runs[temp].append(run_child(mode, n, listfile, cache))
                for temp in ("cold", "warm"):
                    r = dict(runs[temp][0])
                    for key in ("seconds", "maxrss_self_mb", "maxrss_children_mb"):
                        r[key] = float(np.median([x[key] for x in runs[temp]]))
                    r["repeat_seconds"] = [x["seconds"] for x in runs[temp]]
                    r["repeat_maxrss_self_mb"] = [x["maxrss_self_mb"] for x in runs[temp]]
                    r.update(mode=mode, temp=temp, mb=mb, files_per_s=n / r["seconds"],
                             mb_per_s=mb / r["seconds"])
                    rows.append(r)
                    print(f"{mode:6s} {temp} N={n:6d}  {r['seconds']:8.2f} s  "
                          f"{r['files_per_s']:8.0f} files/s  {r['mb_per_s']:6.2f} MB/s  "
                          f"rss {r['maxrss_self_mb']:6.0f} MB  children {r['maxrss_children_mb']:5.0f} MB"
                          f"  (bad {r['bad']})", flush=True)
    growth = []
    lo, hi = sizes[0], sizes[-1]
    for mode in modes:
        for temp in ("cold", "warm"):
            sel = [r for r in rows if r["mode"] == mode and r["temp"] == temp]
            by_n = {r["n"]: r for r in sel}
            a, b = fit_line([r["n"] for r in sel], [r["seconds"] for r in sel])
            t_ratio = (by_n[hi]["seconds"] / hi) / (by_n[lo]["seconds"] / lo)
            baseline = baselines[mode]
            m_lo = max(by_n[lo]["maxrss_self_mb"] - baseline, 1e-9)
            m_hi = by_n[hi]["maxrss_self_mb"] - baseline
            ma, mb_ = fit_line([r["n"] for r in sel], [r["maxrss_self_mb"] - baseline for r in sel])
            # marginal cost per file over the upper and the lower interval (robust to a small
            # first figure): 1 = linear
            ns = sorted(by_n)
            def slope(key, i, j, base=0.0):
                return ((by_n[ns[j]][key] - base) - (by_n[ns[i]][key] - base)) / (ns[j] - ns[i])
            k = len(ns) - 1
            marg_t = slope("seconds", k - 1, k) / slope("seconds", 0, 1) if k >= 2 else None
            marg_m = (slope("maxrss_self_mb", k - 1, k) / slope("maxrss_self_mb", 0, 1)
                      if k >= 2 and slope("maxrss_self_mb", 0, 1) > 0 else None)
            growth.append(dict(mode=mode, temp=temp, fit_a_s=a, fit_b_ms_per_file=b * 1e3,
                               per_file_time_ratio=t_ratio, mem_above_base_lo_mb=m_lo,
                               mem_above_base_hi_mb=m_hi, mem_fit_kb_per_file=mb_ * 1024,
                               per_file_mem_ratio=(m_hi / hi) / (m_lo / lo),
                               marginal_time_ratio=marg_t, marginal_mem_ratio=marg_m,
                               baseline_mb=baseline))
    print(f"\n{'mode':6s} {'read':4s} " + " ".join(f"{'N=' + str(n):>22s}" for n in sizes))
    for mode in modes:
        for temp in ("cold", "warm"):
            cells = []
            for n in sizes:
                r = next(r for r in rows if r["mode"] == mode and r["temp"] == temp and r["n"] == n)
                cells.append(f"{r['files_per_s']:6.0f}f/s {r['mb_per_s']:5.2f}MB/s {r['maxrss_self_mb']:4.0f}MB")
            print(f"{mode:6s} {temp:4s} " + " ".join(f"{c:>22s}" for c in cells))
    print(f"\nlinearity, N={lo} -> {hi} (time = a + b*N; ratios of per-file cost, 1 = linear)")
    for g in growth:
        print(f"{g['mode']:6s} {g['temp']:4s} a={g['fit_a_s']:6.2f} s  b={g['fit_b_ms_per_file']:6.2f} ms/file"
              f"  time/file ratio {g['per_file_time_ratio']:.2f}  mem above base "
              f"{g['mem_above_base_lo_mb']:.0f} -> {g['mem_above_base_hi_mb']:.0f} MB"
              f" ({g['mem_fit_kb_per_file']:.1f} KB/file), mem/file ratio {g['per_file_mem_ratio']:.2f}"
              f"  marginal (upper/lower interval): time {fmt(g['marginal_time_ratio'])}"
              f" mem {fmt(g['marginal_mem_ratio'])}")
    result = dict(sizes=sizes, modes=modes, generate_s=gen_s, total_mb=float(sizes_bytes[-1] / 1e6),
                  baseline_mb=baselines, rows=rows, growth=growth,
                  wall_s=time.time() - started,
                  machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                               python=platform.python_version(), load=os.getloadavg()),
                  command=" ".join(sys.argv))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
