"""The fast reader (``midilstm.fast_reader``): agreement with ``read_midi`` and its speed.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fast_reader.py            # music/, corpus/bach
    .venv/bin/python bench/fast_reader.py --synthetic 300 --repeats 5  # + a generated folder
    .venv/bin/python bench/fast_reader.py FOLDER ...                   # any folders of MIDI

For each collection (``music/``: the bundled files; ``corpus/bach`` when
``music/make_corpus.py`` has built it; ``--synthetic N``: N files written by
``midilstm.write_midi``, random polyphony, one channel and program a file; any folders given):

* **Agreement**, per selection: files read fast and ``np.array_equal`` to ``read_midi`` (events
  and notes), files that fell back (``None``) with their reasons, and files where the two
  differ (a bug of the fast reader: must be 0).
* **Speed**, one worker, one process, cold (no cache of results; the files' bytes in the OS
  page cache, as for every reader measured): the median of ``--repeats`` passes over the
  collection of ``symusic.Score(path)`` (symusic's bare parse, in ticks) and ``read_midi_fast``
  (the default ``Selection``), taken in turn, and of ``read_midi`` (the mido path). The ratio
  fast / bare (the median of the passes' ratios) is the issue's target (at most 5x); the
  per-file overhead is (fast - bare) / files. A pass that
  falls back would also pay ``read_midi``: the passes time ``read_midi_fast`` alone and count
  its fallbacks. numba's one-time start (compiling, or loading from its cache) is measured
  apart, in a fresh process.
"""
from __future__ import annotations

import argparse
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


def one_pass(function, paths) -> float:
    start = time.perf_counter()
    for path in paths:
        function(path)
    return time.perf_counter() - start


def speed(paths, repeats: int) -> dict:
    """Passes of symusic's bare parse and of ``read_midi_fast`` taken in turn, so that both
    see the same load on the machine: their medians and the median of the ratios."""
    import symusic

    def mido_path(path):
        try:
            read_midi(path)
        except MidiInputError:
            pass

    read_midi_fast(paths[0])  # numba's start, measured apart
    bare, fast = [], []
    for _ in range(repeats):
        bare.append(one_pass(lambda p: symusic.Score(str(p)), paths))
        fast.append(one_pass(read_midi_fast, paths))
    slow = statistics.median(one_pass(mido_path, paths) for _ in range(max(1, repeats // 3)))
    fallbacks = sum(read_midi_fast(p) is None for p in paths)
    return {"bare": statistics.median(bare), "fast": statistics.median(fast), "mido": slow,
            "ratio": statistics.median(f / b for f, b in zip(fast, bare)),
            "fallbacks": fallbacks}


def numba_start() -> str:
    code = ("import time; t = time.perf_counter(); from midilstm import fast_reader; "
            "ok = fast_reader.symusic_available(); print(f'{time.perf_counter() - t:.2f}', ok)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    return out.stdout.strip() or out.stderr.strip()[-200:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", help="more folders of MIDI files")
    parser.add_argument("--synthetic", type=int, default=300, metavar="N",
                        help="files in the generated collection (0: none; default 300)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-agreement", action="store_true", help="speed only")
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
    print(f"numba's start in a fresh process (import, compile or load from cache): "
          f"{numba_start()} s")
    for name, paths in collections.items():
        size = sum(p.stat().st_size for p in paths)
        print(f"\n== {name}: {len(paths)} files, {size / 2**20:.2f} MB")
        if not args.no_agreement:
            for label, selection in SELECTIONS.items():
                counts = agreement(paths, selection)
                reasons = ", ".join(f"{k.strip()}: {v}" for k, v in sorted(counts.items())
                                    if k.startswith("  "))
                print(f"  {label:<12} agree {counts['agree']:>4}, fell back "
                      f"{counts['fell back']:>4}, disagree {counts['DISAGREE']}"
                      + (f"  ({reasons})" if reasons else ""))
        s = speed(paths, args.repeats)
        n = len(paths)
        print(f"  speed, 1 worker, cold, median of {args.repeats}: symusic bare "
              f"{s['bare'] * 1e3:.1f} ms, read_midi_fast {s['fast'] * 1e3:.1f} ms "
              f"= {s['fast'] / s['bare']:.2f}x bare ({s['fallbacks']} fell back), "
              f"read_midi {s['mido'] * 1e3:.1f} ms = {s['mido'] / s['bare']:.1f}x bare, "
              f"{s['mido'] / s['fast']:.1f}x fast")
        print(f"  per file: bare {s['bare'] / n * 1e6:.0f} us, fast {s['fast'] / n * 1e6:.0f} us,"
              f" overhead {(s['fast'] - s['bare']) / n * 1e6:.0f} us; "
              f"{size / 2**20 / s['fast']:.1f} MB/s fast, {size / 2**20 / s['bare']:.1f} MB/s "
              f"bare, {size / 2**20 / s['mido']:.2f} MB/s read_midi")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
