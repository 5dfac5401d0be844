"""The fast reader (``midilstm.fast_reader``): agreement with ``read_midi`` and its speed.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fast_reader.py --synthetic 0   # music/, corpus/bach
    .venv/bin/python bench/fast_reader.py --synthetic 300 --repeats 5      # + a generated folder
    .venv/bin/python bench/fast_reader.py --load 1 --no-agreement          # under a busy process
    .venv/bin/python bench/fast_reader.py FOLDER ...                       # any folders of MIDI

For each collection (``music/``: the bundled files, a mixed folder of real music;
``corpus/bach`` when ``music/make_corpus.py`` has built it; ``--synthetic N``: N files written
by ``midilstm.write_midi``, random polyphony, one channel and program a file; any folders
given):

* **Agreement**, per selection: files read fast and ``np.array_equal`` to ``read_midi`` (events
  and notes), files that fell back (``None``) with their reasons, and files where the two
  differ (a bug of the fast reader: must be 0).
* **Speed**, one worker, one process, the files' bytes in the OS page cache (as for every
  reader measured). Each repeat takes, in turn: symusic's bare parse (``symusic.Score(path)``,
  ticks) of every file; ``read_midi_fast`` of every file (the default ``Selection``; the
  reader alone, no cache of results: "cold"); ``read_corpus(..., fast=True, workers=1)`` into
  a fresh cache folder (the whole cold read of a collection: hashing, reading, writing the
  cache) and then again from that cache (warm); ``read_corpus(..., cache_dir=None)`` (hashing
  and reading, no cache writes). A small collection is read several times a pass (at least
  0.1 s a pass; the mean is taken), so that one slice of another process's CPU time does not
  decide a ratio. The ratios are taken within each repeat and
  their median (with the smallest and largest) is reported: fast / bare (the issue's target:
  at most 5x), cold corpus read / bare, cold / warm (the target: at least 50x); the per-file
  overhead is (fast - bare) / files. ``read_midi`` (the mido path) is timed on a third of the
  repeats. A file that falls back would also pay ``read_midi``: the reader passes time
  ``read_midi_fast`` alone and count its fallbacks. numba's one-time start (loading the
  compiled kernels from numba's cache, or compiling them) is measured apart, in a fresh
  process: the import and the first file read.
* ``--load N`` runs N busy Python processes (``while True: pass``) during the speed passes,
  to see how the ratios hold when the CPUs are shared (the VM is 2 cores).

The results go to ``bench/results/fast_reader.json`` (``fast_reader_load{N}.json`` with
``--load``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from midilstm import fast_reader
from midilstm.corpus import read_corpus
from midilstm.errors import MidiInputError
from midilstm.events import NOTE_DTYPE, notes_to_events, strike_again
from midilstm.export import write_midi
from midilstm.fast_reader import read_midi_fast
from midilstm.parse import Selection, expand_sources, read_midi

SELECTIONS = {
    "default": Selection(),
    "everything": Selection(include_drums=True, pitch_low=0, pitch_high=127),
    "channel 0": Selection(channels=(0,)),
    "tracks 1, 2": Selection(tracks=(1, 2)),
    "program 0": Selection(programs=(0,)),
    "pedal": Selection(sustain_pedal=True),
    "drop 48..72": Selection(out_of_range="drop", pitch_low=48, pitch_high=72),
}


def synthetic(folder: Path, n_files: int, seed: int = 0) -> list[Path]:
    """``n_files`` pieces of 3 voices, 150-450 notes each, written by ``write_midi``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        voices = []
        for voice in range(3):
            n = int(rng.integers(50, 150))
            lengths = rng.choice([0.125, 0.25, 0.5, 1.0], n)
            starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
            notes = np.empty(n, NOTE_DTYPE)
            notes["start_s"], notes["end_s"] = starts, starts + lengths * 0.9
            notes["pitch"] = 48 + 12 * voice + rng.integers(0, 12, n)
            notes["velocity"] = rng.integers(40, 110, n)
            voices.append(notes)
        notes, _ = strike_again(np.concatenate(voices))
        path = folder / f"synthetic_{i:05d}.mid"
        write_midi(notes_to_events(notes), path, bpm=float(rng.choice([72, 96, 120])),
                   channel=int(i % 9), program=int(rng.integers(0, 128)))
        paths.append(path)
    return paths


def agreement(paths, selection) -> dict:
    counts = Counter()
    for path in paths:
        fast, reason = read_midi_fast(path, selection, why=True)
        try:
            slow = read_midi(path, selection)
        except MidiInputError:
            slow = None
        if fast is None:
            counts["fell back"] += 1
            counts[f"  {reason}" + (" (read_midi refuses it)" if slow is None else "")] += 1
        elif slow is not None and np.array_equal(fast.events, slow.events) \
                and np.array_equal(fast.notes, slow.notes):
            counts["agree"] += 1
        else:
            counts["DISAGREE"] += 1
            print(f"    DISAGREE: {path}")
    return counts


PASS_S = 0.1  # a pass reads the collection this long at least: a small one several times


def one_pass(function, paths, times: int = 1) -> float:
    """Seconds to call ``function`` on every path, the mean of ``times`` rounds."""
    start = time.perf_counter()
    for _ in range(times):
        for path in paths:
            function(path)
    return (time.perf_counter() - start) / times


def corpus_reads(paths, times: int = 1) -> tuple[float, float]:
    """``read_corpus(paths, fast=True, workers=1)`` into a fresh cache folder (cold), then
    again from it (warm): the two times, the means of ``times`` rounds (a fresh folder each)."""
    cold_s = warm_s = 0.0
    for _ in range(times):
        folder = tempfile.mkdtemp(prefix="fast_reader_cache_")
        try:
            start = time.perf_counter()
            cold = read_corpus(paths, cache_dir=folder, workers=1, progress=False, fast=True)
            middle = time.perf_counter()
            warm = read_corpus(paths, cache_dir=folder, workers=1, progress=False, fast=True)
            cold_s, warm_s = cold_s + middle - start, warm_s + time.perf_counter() - middle
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        assert warm.stats["cached"] == cold.stats["parsed"], (cold.stats, warm.stats)
    return cold_s / times, warm_s / times


def spread(values) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def speed(paths, repeats: int) -> dict:
    """The passes of each repeat taken in turn, so that they see the same load on the
    machine; the ratios within each repeat, then their median, smallest and largest."""
    import symusic

    def mido_path(path):
        try:
            read_midi(path)
        except MidiInputError:
            pass

    read_midi_fast(paths[0])  # numba's start, measured apart
    rounds = max(1, int(PASS_S / one_pass(read_midi_fast, paths)))  # small collections: more
    corpus_rounds = max(1, int(PASS_S / sum(corpus_reads(paths))))
    passes = {"bare": [], "fast": [], "corpus_cold": [], "corpus_warm": [],
              "corpus_no_cache": [], "mido": []}
    for i in range(repeats):
        passes["bare"].append(one_pass(lambda p: symusic.Score(str(p)), paths, rounds))
        passes["fast"].append(one_pass(read_midi_fast, paths, rounds))
        cold, warm = corpus_reads(paths, corpus_rounds)
        passes["corpus_cold"].append(cold)
        passes["corpus_warm"].append(warm)
        passes["corpus_no_cache"].append(one_pass(
            lambda _: read_corpus(paths, cache_dir=None, workers=1, progress=False, fast=True),
            [None], corpus_rounds))
        if i % 3 == 0:
            passes["mido"].append(one_pass(mido_path, paths))
    n = len(paths)
    bare, fast = passes["bare"], passes["fast"]
    cold, warm = passes["corpus_cold"], passes["corpus_warm"]
    return {
        "rounds_per_pass": {"reader": rounds, "corpus": corpus_rounds},
        "passes_s": passes,
        "median_s": {name: statistics.median(times) for name, times in passes.items()},
        "fast_over_bare": spread([f / b for f, b in zip(fast, bare)]),
        "corpus_cold_over_bare": spread([c / b for c, b in zip(cold, bare)]),
        "corpus_no_cache_over_bare": spread([c / b for c, b in zip(passes["corpus_no_cache"],
                                                                    bare)]),
        "cold_over_warm": spread([c / w for c, w in zip(cold, warm)]),
        "fast_cold_over_warm": spread([f / w for f, w in zip(fast, warm)]),
        "overhead_ms_per_file": spread([(f - b) / n * 1e3 for f, b in zip(fast, bare)]),
        "corpus_overhead_ms_per_file": spread([(c - b) / n * 1e3 for c, b in zip(cold, bare)]),
        "mido_over_fast": statistics.median(passes["mido"]) / statistics.median(fast),
        "fallbacks": sum(read_midi_fast(p) is None for p in paths),
    }


def numba_start(first_file) -> str:
    code = ("import sys, time; t = time.perf_counter(); from midilstm import fast_reader; "
            "ok = fast_reader.read_midi_fast(sys.argv[1]) is not None; "
            "print(f'{time.perf_counter() - t:.2f}', ok)")
    out = subprocess.run([sys.executable, "-c", code, str(first_file)], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()[-200:]


def busy(n: int) -> list:
    """``n`` processes that keep a CPU busy (ended by ``main`` by their ids)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def report(name, paths, s, repeats) -> None:
    n, size = len(paths), sum(p.stat().st_size for p in paths)
    med = s["median_s"]

    def r(key, digits=2):
        v = s[key]
        return f"{v['median']:.{digits}f}x ({v['min']:.{digits}f}-{v['max']:.{digits}f})"

    print(f"  speed, 1 worker, median of {repeats} repeats (smallest-largest): symusic bare "
          f"{med['bare'] * 1e3:.1f} ms, read_midi_fast {med['fast'] * 1e3:.1f} ms "
          f"({s['fallbacks']} fell back), read_midi {med['mido'] * 1e3:.1f} ms; rounds a pass: "
          f"{s['rounds_per_pass']['reader']} (readers), {s['rounds_per_pass']['corpus']} "
          f"(read_corpus)")
    print(f"    cold reader / bare parse    {r('fast_over_bare')}   (target <= 5x)")
    o = s["overhead_ms_per_file"]
    print(f"    overhead per file           {o['median']:.3f} ms ({o['min']:.3f}-{o['max']:.3f})"
          f" beyond symusic's {med['bare'] / n * 1e3:.3f} ms")
    print(f"    read_corpus cold (cache written) {med['corpus_cold'] * 1e3:.1f} ms = "
          f"{r('corpus_cold_over_bare')} bare; warm {med['corpus_warm'] * 1e3:.1f} ms")
    print(f"    read_corpus with no cache   {med['corpus_no_cache'] * 1e3:.1f} ms = "
          f"{r('corpus_no_cache_over_bare')} bare (hashing and reading, no cache writes)")
    print(f"    cold / warm (read_corpus)   {r('cold_over_warm', 1)}   (target >= 50x); "
          f"reader alone / warm {r('fast_cold_over_warm', 1)}")
    print(f"    read_midi / read_midi_fast  {s['mido_over_fast']:.1f}x; "
          f"{size / 2**20 / med['fast']:.1f} MB/s fast, {size / 2**20 / med['bare']:.1f} MB/s "
          f"bare")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="more folders of MIDI files")
    parser.add_argument("--synthetic", type=int, default=300, metavar="N",
                        help="files in the generated collection (0: none; default 300)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-agreement", action="store_true", help="speed only")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="busy processes running during the speed passes (default 0)")
    args = parser.parse_args(argv)
    if not fast_reader.symusic_available():
        print("symusic (or numba) is not installed: the fast reader always falls back")
        return 1
    collections = {"music/ (bundled)": expand_sources(ROOT / "music")}
    bach = ROOT / "corpus" / "bach"
    if bach.is_dir():
        collections["corpus/bach"] = expand_sources(bach)
    else:
        print("corpus/bach is not built (music/make_corpus.py): left out")
    for folder in args.folders:
        collections[folder] = expand_sources(folder)
    if args.synthetic:
        folder = Path(tempfile.mkdtemp(prefix="fast_reader_"))
        collections[f"synthetic ({args.synthetic} files)"] = synthetic(folder, args.synthetic)
    start = numba_start(collections["music/ (bundled)"][0])
    print(f"numba's start in a fresh process (import, load or compile, first file): {start} s")
    results = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               "command": " ".join(sys.argv), "load": args.load, "repeats": args.repeats,
               "load_average": os.getloadavg(), "numba_start_s": start, "collections": {}}
    for name, paths in collections.items():
        size = sum(p.stat().st_size for p in paths)
        print(f"\n== {name}: {len(paths)} files, {size / 2**20:.2f} MB")
        entry = results["collections"][name] = {"files": len(paths), "bytes": size}
        if not args.no_agreement:
            entry["agreement"] = {}
            for label, selection in SELECTIONS.items():
                counts = agreement(paths, selection)
                entry["agreement"][label] = dict(counts)
                reasons = ", ".join(f"{k.strip()}: {v}" for k, v in sorted(counts.items())
                                    if k.startswith("  "))
                print(f"  {label:<12} agree {counts['agree']:>4}, fell back "
                      f"{counts['fell back']:>4}, disagree {counts['DISAGREE']}"
                      + (f"  ({reasons})" if reasons else ""))
        workers = busy(args.load)
        try:
            entry["speed"] = speed(paths, args.repeats)
        finally:
            for worker in workers:
                worker.kill()
                worker.wait()
        report(name, paths, entry["speed"], args.repeats)
    results["load_average_after"] = os.getloadavg()
    out = ROOT / "bench" / "results" / (f"fast_reader_load{args.load}.json" if args.load
                                         else "fast_reader.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"\nwritten: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
