"""Note-level agreement of midilstm's reader with pretty_midi and symusic.

    python bench/reader_agreement.py                       # the bundled music
    python bench/reader_agreement.py FILES_OR_FOLDERS --before HEAD~1 --music21

What is compared is what the event stream means: ``events_to_notes(read_midi(f).events)``,
read with every note kept (drums included, no pitch folding). The independent readers' notes
(all instruments, zero-length notes dropped) go through the same piano's rule
(``events.strike_again``), since one stream of (pitch, velocity, delta) events cannot carry two
notes on one pitch at once; so the figures measure pairing and timing. ``--before REV`` also
measures the reader of git revision REV (its parse.py and the modules the reader imports,
loaded from a temporary folder). ``--music21`` adds the MIDI files of music21's corpus when
music21 is installed. ``--speed N`` instead times reading a generated file of N notes (4 tracks,
random pitches, overlaps) with each reader, each in its own process: the median of 3 reads and
the process's peak memory.

For each reader: files, notes on each side, notes that match exactly (same pitch, velocity,
onset and offset within 10 us), and max/mean onset error (each of our notes to the reference note
of its pitch with the nearest onset) and offset error (over notes whose onsets match).
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from midilstm.events import NOTE_DTYPE, strike_again  # noqa: E402

TOLERANCE_S = 1e-5  # absolute, plus RELATIVE of the time itself:
RELATIVE = 1e-6  # symusic keeps seconds as float32 (7 significant digits: ~0.1 ms off at 100 s)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE_S + RELATIVE * abs(b)


def reference_notes(name: str, path: Path) -> np.ndarray:
    """One independent reader's notes, through the piano's rule."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "pretty_midi":
            import pretty_midi
            rows = [(n.start, n.end, n.pitch, n.velocity)
                    for i in pretty_midi.PrettyMIDI(str(path)).instruments for n in i.notes]
        else:
            import symusic
            rows = [(n.start, n.end, n.pitch, n.velocity)
                    for t in symusic.Score(str(path), ttype="second").tracks for n in t.notes]
    notes = np.array(rows, dtype=NOTE_DTYPE)
    notes = notes[notes["end_s"] > notes["start_s"]]
    return strike_again(notes)[0] if len(notes) else notes


def load_reader(revision: str | None):
    """(read_midi, Selection, events_to_notes) of the working tree or of a git revision."""
    if revision is None:
        from midilstm.events import events_to_notes
        from midilstm.parse import Selection, read_midi
        return read_midi, Selection, events_to_notes
    folder = Path(tempfile.mkdtemp()) / "midilstm_before"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name in ("parse", "smf", "tempo", "pairing", "events", "constants", "errors", "checks"):
        shown = subprocess.run(["git", "show", f"{revision}:midilstm/{name}.py"], cwd=ROOT,
                               capture_output=True, text=True)
        if shown.returncode == 0:  # a revision before parse.py was split lacks the new modules
            (folder / f"{name}.py").write_text(shown.stdout)
        elif name == "parse":
            raise SystemExit(f"--before {revision}: {shown.stderr.strip()}")
    sys.path.insert(0, str(folder.parent))
    parse = importlib.import_module("midilstm_before.parse")
    events = importlib.import_module("midilstm_before.events")
    return parse.read_midi, parse.Selection, events.events_to_notes


def compare(ours: np.ndarray, reference: np.ndarray) -> dict:
    """Counts and errors of ``ours`` against ``reference`` (both NOTE_DTYPE)."""
    exact, onset_errors, offset_errors = 0, [], []
    for pitch in np.union1d(ours["pitch"], reference["pitch"]):
        mine, theirs = ours[ours["pitch"] == pitch], reference[reference["pitch"] == pitch]
        if len(theirs) == 0:
            continue
        starts = theirs["start_s"]
        for note in mine:
            i = np.searchsorted(starts, note["start_s"])
            candidates = [j for j in (i - 1, i) if 0 <= j < len(starts)]
            j = min(candidates, key=lambda j: abs(starts[j] - note["start_s"]))
            onset = abs(starts[j] - note["start_s"])
            onset_errors.append(onset)
            if close(note["start_s"], starts[j]):
                offset = abs(theirs["end_s"][j] - note["end_s"])
                offset_errors.append(offset)
                exact += (close(note["end_s"], theirs["end_s"][j])
                          and theirs["velocity"][j] == note["velocity"])
    return {"ours": len(ours), "reference": len(reference), "exact": int(exact),
            "onset": onset_errors, "offset": offset_errors}


def measure(paths, reader, reference_name):
    read_midi, Selection, events_to_notes = reader
    selection = Selection(include_drums=True, pitch_low=0, pitch_high=127)
    totals = {"files": 0, "ours": 0, "reference": 0, "exact": 0, "onset": [], "offset": [],
              "skipped": 0}
    for path in paths:
        try:
            ours = events_to_notes(read_midi(path, selection).events)[0]
            reference = reference_notes(reference_name, path)
        except Exception:  # a file one side cannot read is counted, not compared
            totals["skipped"] += 1
            continue
        result = compare(ours, reference)
        totals["files"] += 1
        for key in ("ours", "reference", "exact"):
            totals[key] += result[key]
        totals["onset"] += result["onset"]
        totals["offset"] += result["offset"]
    return totals


def row(label, totals) -> str:
    onset, offset = np.array(totals["onset"] or [0.0]), np.array(totals["offset"] or [0.0])
    share = totals["exact"] / max(totals["ours"], 1)
    return (f"{label:<28} {totals['files']:>5} {totals['skipped']:>4} {totals['ours']:>8} "
            f"{totals['reference']:>8} {totals['exact']:>8} {share:>7.2%} "
            f"{onset.max():>9.4f} {onset.mean():>9.5f} {offset.max():>9.4f} {offset.mean():>9.5f}")


def make_file(path: Path, n_notes: int, seed: int = 0) -> Path:
    import mido
    rng = np.random.default_rng(seed)
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000)]))
    for track in range(4):
        pitches = rng.integers(36, 96, n_notes // 4).tolist()
        gaps = rng.choice([0, 60, 120], n_notes // 4).tolist()
        lengths = rng.choice([60, 120, 240], n_notes // 4).tolist()
        midi.tracks.append(mido.MidiTrack(
            m for p, g, n in zip(pitches, gaps, lengths)
            for m in (mido.Message("note_on", note=p, velocity=64, time=g, channel=track),
                      mido.Message("note_off", note=p, time=n, channel=track))))
    midi.save(str(path))
    return path


SPEED_CHILD = """
import resource, statistics, sys, time
import mido
sys.path[:0] = [{root!r}, {bench!r}]
import reader_agreement
read_midi, Selection, _ = reader_agreement.load_reader({revision!r})
times, mido_times = [], []
for _ in range(3):
    start = time.perf_counter()
    notes = len(read_midi({path!r}).notes)
    middle = time.perf_counter()
    mido.MidiFile({path!r})
    times.append(middle - start)
    mido_times.append(time.perf_counter() - middle)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
read, alone = statistics.median(times), statistics.median(mido_times)
print(f"{{read:.2f}} {{alone:.2f}} {{read - alone:.2f}} {{peak:.0f}} {{notes}}")
"""


def speed(n_notes: int, revisions) -> None:
    path = make_file(Path(tempfile.mkdtemp()) / "speed.mid", n_notes)
    print(f"{n_notes} notes, {path.stat().st_size / 2**20:.1f} MB (median of 3 reads; "
          f"'ours' = read_midi minus mido.MidiFile alone, timed in the same process)")
    results = {}
    for label, revision in revisions:
        code = SPEED_CHILD.format(root=str(ROOT), bench=str(ROOT / "bench"),
                                  revision=revision, path=str(path))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.split()
        results[label] = float(out[0]), float(out[2])
        print(f"{label:<16} read_midi {out[0]} s = mido {out[1]} s + ours {out[2]} s; "
              f"peak memory {out[3]} MB; {out[4]} notes kept")
    if len(results) == 2:
        (before, before_ours), (after, after_ours) = results.values()
        print(f"after / before: read_midi {after / before:.2f}, "
              f"ours {after_ours / before_ours:.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", help="MIDI files or folders (default: music/)")
    parser.add_argument("--before", metavar="REV", help="also measure the reader of this revision")
    parser.add_argument("--music21", action="store_true", help="add music21's corpus MIDI files")
    parser.add_argument("--speed", type=int, metavar="N", help="time reading N generated notes")
    args = parser.parse_args(argv)
    if args.speed:
        speed(args.speed, ([(f"before ({args.before})", args.before)] if args.before else [])
              + [("after", None)])
        return 0
    from midilstm.parse import expand_sources
    paths = expand_sources(args.sources or [ROOT / "music"])
    if args.music21:
        try:
            import music21
            corpus = Path(music21.__file__).parent / "corpus"
            paths += expand_sources(corpus)
        except ImportError:
            print("music21 is not installed: its corpus is left out")
    readers = [("after", load_reader(None))]
    if args.before:
        readers.insert(0, (f"before ({args.before})", load_reader(args.before)))
    print(f"{len(paths)} files; errors in seconds; exact = same pitch, velocity, onset and "
          f"offset within {TOLERANCE_S:g} s + {RELATIVE:g} x the time")
    print(f"{'reader vs reference':<28} {'files':>5} {'skip':>4} {'notes':>8} {'ref':>8} "
          f"{'exact':>8} {'share':>7} {'onset max':>9} {'mean':>9} {'offs max':>9} {'mean':>9}")
    for reference_name in ("pretty_midi", "symusic"):
        for label, reader in readers:
            print(row(f"{label} vs {reference_name}", measure(paths, reader, reference_name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
