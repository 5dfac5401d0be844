"""Texture: do generated notes end? Polyphony and note lengths of improvisations, read back
from the MIDI files they are written to, against the real music's.

    OMP_NUM_THREADS=1 .venv/bin/python bench/texture.py                  # all parts, ~25 min
    OMP_NUM_THREADS=1 .venv/bin/python bench/texture.py --quick          # iteration
    OMP_NUM_THREADS=1 .venv/bin/python bench/texture.py --parts default,josquin

The failure this measures: over a long improvisation the model stopped ending notes and the
texture became a wash of held notes. Nine approaches, each a (model, sampling) pair; models
that differ only in sampling are trained once per seed and sampled under each config:

* ``lesson inputs, fixed 5 s limit``: what shipped first (``LESSON_INPUTS``: no sounding, key
  or age input; ``max_note_s=5``, no polyphony limit, top-p 0.95);
* ``lesson inputs + learned limits``: the same model, limits learned from the codec;
* ``sounding input + learned limits``: the model also reads the pitches sounding;
* ``sounding + key input + learned limits``: ... and the key profile (the default before the
  age input);
* ``sounding + key + age input, no limits``: ... and each sounding note's age, no limits;
* ``sounding + key + age input + learned limits``: the new default
  (``ModelConfig(sizes=codec.sizes)``, ``SamplingConfig(top_p=0.9)``); ``the new default at
  top-p 0.95``: the same at 0.95;
* ``longer context (seq 256), fixed 5 s``: lesson inputs trained on 256-event sequences;
* ``transformer, ...``: the Transformer with the new default's inputs (``--families``).

All but the old default sample with top-p 0.9, 4 variations of 600 events from a 30-event
primer (the piece's first events; for a set, the first held-out piece's), generation seed =
training seed.

Every sample is written with ``midilstm.write_midi`` and read back with ``pretty_midi`` (an
independent reader), which gives its texture: time-weighted mean polyphony (pretty_midi's
piano roll at 100 frames/s, per instrument, summed; mean over frames where a note sounds),
median and 95th-percentile note length (pretty_midi's notes) and scale consistency
(``metrics.scale_consistency`` on pretty_midi's notes). The real music is measured the same
way from its MIDI files (no sustain pedal, no drums: as midilstm reads it), per file; a set's
figure is the mean over its files. A generated figure is the mean over the variations of
each sample's figure, per seed; ratios are generated / real.

Targets per seed: polyphony 0.75-1.33x, median and p95 note length 0.5-2x, scale >= 0.8, and
validation NLL no worse than the old default's for the same seed (only a model change can
change it: approaches sharing a model share it).

Yang & Lerch overlapped area (``features.compare_with_ceiling``): generated excerpts pooled
over seeds and variations, **early** (the first 64 generated events) and **late** (the last 200
of the 600), against 50 held-out and 50 training real excerpts of the same length; the ceiling
is training real against held-out real.

Data sets: ``default`` (the default piece, last 10% held out; ``train.train``), ``josquin`` (8
pieces, whole pieces held out by ``split_pieces``; ``train.train``), ``bach`` (``corpus/bach``
from ``music/make_corpus.py``, its own split; the corpus trainer ``batch.train_corpus`` with a
time budget per model, one-hot input as ``ModelConfig``'s default, one seed for the
approaches other than the two defaults). Results: ``--out`` (JSON, everything) and
``bench/results/texture_<set>.png`` (notes sounding over time); the MIDI files in ``--midi-dir``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from midilstm import metrics, music, write_midi  # noqa: E402
from midilstm.batch import CorpusTrainConfig, held_out_split, train_corpus  # noqa: E402
from midilstm.codec import EventCodec  # noqa: E402
from midilstm.corpus import load_corpus, read_corpus  # noqa: E402
from midilstm.data import split_pieces  # noqa: E402
from midilstm.events import NOTE_DTYPE  # noqa: E402
from midilstm.features import compare_with_ceiling, excerpts  # noqa: E402
from midilstm.files import write_json_atomic  # noqa: E402
from midilstm.generate import generate  # noqa: E402
from midilstm.sampling import SamplingConfig  # noqa: E402
from midilstm.model import LESSON_INPUTS, ModelConfig  # noqa: E402
from midilstm.parse import read_midi  # noqa: E402
from midilstm.train import TrainConfig, train  # noqa: E402

PRIMER_EVENTS, N_EVENTS, N_VARIATIONS, TOP_P = 30, 600, 4, 0.9  # notebook 04's top-p
EARLY, LATE, N_REAL = 64, 200, 50
FS = 100  # piano-roll frames per second for the polyphony
OLD, NEW = "lesson inputs, fixed 5 s limit", "sounding + key + age input + learned limits"
LAST = "sounding + key input + learned limits"  # the default before the age input
TRANSFORMER = "transformer, sounding + key + age input + learned limits"
FIXED_5S = {"max_note_s": 5.0, "max_polyphony": 0}
# approach -> (model family, sampling limits); None-valued limits are learned from the codec
APPROACHES = {
    OLD: ("lesson", {**FIXED_5S, "top_p": 0.95}),
    "lesson inputs + learned limits": ("lesson", {}),
    "sounding input + learned limits": ("sounding", {}),
    LAST: ("told", {}),
    "sounding + key + age input, no limits": ("aged", {"max_note_s": 0, "max_polyphony": 0}),
    NEW: ("aged", {}),
    "the new default at top-p 0.95": ("aged", {"top_p": 0.95}),
    "longer context (seq 256), fixed 5 s": ("long", FIXED_5S),
    TRANSFORMER: ("transformer", {}),
}
# family -> (ModelConfig options, training sequence length)
TRANSFORMER_OPTIONS = {"arch": "transformer", "num_layers": 2}  # heads 4, context 128
TRAIN_OPTIONS = {"transformer": {"lr": 3e-3}}  # the LSTM's 1e-2 leaves it at 5.9 nats, 3e-3 4.1
FAMILIES = {"lesson": (LESSON_INPUTS, 64),
            "sounding": ({"key_input": False, "age_input": False}, 64),
            "told": ({"age_input": False}, 64), "aged": ({}, 64), "long": (LESSON_INPUTS, 256),
            "transformer": (TRANSFORMER_OPTIONS, 64)}
TARGETS = {"polyphony": (0.75, 1.33), "median_note_s": (0.5, 2.0), "p95_note_s": (0.5, 2.0)}
MIN_SCALE = 0.8
BACH = ROOT / "corpus" / "bach"
BACH_EVENTS = ROOT / "corpus" / "bach_events"  # the corpus as arrays (Corpus.save), once


# --- measuring a MIDI file with pretty_midi ----------------------------------------------------
def midi_texture(path) -> dict:
    """Texture of a MIDI file as pretty_midi reads it (drums left out, no sustain pedal)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(path))
    instruments = [i for i in pm.instruments if not i.is_drum and i.notes]
    rolls = [(i.get_piano_roll(fs=FS, pedal_threshold=None) > 0).sum(axis=0) for i in instruments]
    counts = np.zeros(max(map(len, rolls)), np.int64)
    for roll in rolls:
        counts[:len(roll)] += roll
    notes = np.array([(n.start, n.end, n.pitch, n.velocity) for i in instruments for n in i.notes],
                     NOTE_DTYPE)
    lengths = notes["end_s"] - notes["start_s"]
    return {"polyphony": float(counts.sum() / max((counts > 0).sum(), 1)),
            "median_note_s": float(np.median(lengths)),
            "p95_note_s": float(np.percentile(lengths, 95)),
            "scale": metrics.scale_consistency(notes), "n_notes": len(notes),
            "max_sounding": int(counts.max())}


def mean_texture(rows: list) -> dict:
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


# --- data sets ---------------------------------------------------------------------------------
_DATA = {}


def dataset(name: str) -> dict:
    """``{"train", "val", "codec", "primer", "files", "val_files"}``, built once per process."""
    if name in _DATA:
        return _DATA[name]
    if name == "bach":
        corpus = load_corpus(BACH_EVENTS)
        from midilstm.data import split_names
        train_idx, val_idx = split_names(corpus.names)
        train_events = [corpus.piece(i) for i in train_idx]
        val_events = [np.asarray(corpus.piece(i)) for i in val_idx]
        files, val_files = list(corpus.names), [corpus.names[i] for i in val_idx]
        pieces, extra = [corpus.piece(i) for i in range(len(corpus))], {"corpus": corpus}
    else:
        files = music.resolve(name)
        pieces = [read_midi(p).events for p in files]
        train_events, val_events = split_pieces(pieces, 0.1)
        held = [i for i, p in enumerate(pieces) if len(pieces) > 1
                and any(p is v for v in val_events)]
        val_files = [files[i] for i in held] or files
        extra = {}
    primer_piece = val_events[0] if name != "default" else pieces[0]
    data = {"train": train_events, "val": val_events, "files": [str(f) for f in files],
            "pieces": pieces,
            "val_files": [str(f) for f in val_files], "codec": EventCodec().fit(train_events),
            "primer": primer_piece[:PRIMER_EVENTS],
            "real_continuation": primer_piece[PRIMER_EVENTS:PRIMER_EVENTS + N_EVENTS], **extra}
    _DATA[name] = data
    return data


# --- one trained model, sampled under every config of its family -------------------------------
def run_job(part: str, family: str, seed: int, bach_budget_s: float, midi_dir: str,
            bach_steps: int | None = None) -> dict:
    import torch

    torch.set_num_threads(1)
    data = dataset(part)
    model_options, seq_len = FAMILIES[family]
    start = time.perf_counter()
    if part == "bach":
        ckpt = train_corpus(data["corpus"], CorpusTrainConfig(
            steps=bach_steps or 10**9, seq_len=seq_len, seed=seed,
            time_budget_s=None if bach_steps else bach_budget_s, **TRAIN_OPTIONS.get(family, {})),
            {"input_mode": "one_hot", **model_options}, progress=False)
        codec = ckpt.codec
        assert [data["corpus"].names[i] for i in held_out_split(ckpt, data["corpus"])[1]] \
            == data["val_files"]
        val_nll = min(h["val"]["nll"] for h in ckpt.history)
        trained = {"steps": ckpt.history[-1]["step"], "precision": ckpt.params["precision"]}
    else:
        codec = data["codec"]
        ckpt = train(codec, [codec.encode(e) for e in data["train"]],
                     [codec.encode(e) for e in data["val"]], TrainConfig(seed=seed, seq_len=seq_len,
                                                             **TRAIN_OPTIONS.get(family, {})),
                     ModelConfig(sizes=codec.sizes, **model_options), progress=False)
        val_nll = ckpt.history[ckpt.best_epoch - 1]["val"]["nll"]
        trained = {"epochs": len(ckpt.history), "best_epoch": ckpt.best_epoch}
    out = {"part": part, "family": family, "seed": seed, "val_nll": val_nll,
           "train_s": time.perf_counter() - start, **trained,
           "learned_limits": {"max_note_s": codec.longest_note_s,
                              "max_polyphony": codec.max_polyphony}, "approaches": {}}
    for approach, (fam, limits) in APPROACHES.items():
        if fam != family:
            continue
        sampling = SamplingConfig(**{"top_p": TOP_P, **limits})
        samples = generate(ckpt.model, codec, data["primer"], n_events=N_EVENTS,
                           n_variations=N_VARIATIONS, seed=seed, sampling=sampling)
        rows = []
        for k, events in enumerate(samples):
            path = Path(midi_dir) / part / approach.replace(" ", "_").replace(",", "") / \
                f"seed{seed}_var{k}.mid"
            write_midi(events, path)
            rows.append({**midi_texture(path),
                         "midilstm_polyphony": metrics.polyphony(events)})  # cross-check
        out["approaches"][approach] = {"sampling": sampling.with_limits(codec).to_dict(),
                                       "samples": rows, "mean": mean_texture(rows),
                                       "events": samples}
    return out


# --- scoring -----------------------------------------------------------------------------------
def verdicts(gen: dict, real: dict, val_nll: float, old_nll: float) -> dict:
    ratios = {key: gen[key] / real[key] for key in TARGETS}
    passes = {key: bool(low <= ratios[key] <= high) for key, (low, high) in TARGETS.items()}
    passes["scale"] = bool(gen["scale"] >= MIN_SCALE)
    passes["val_nll"] = bool(val_nll <= old_nll)
    return {"ratios": ratios, "scale": gen["scale"], "val_nll": val_nll,
            "val_nll_minus_old": val_nll - old_nll, "pass": passes,
            "all_pass": all(passes.values())}


def late_window(events: np.ndarray) -> np.ndarray:
    """The last ``LATE`` generated events, without the note-offs ``generate`` appends at the
    very end (they share the last timestamp; a model's own offs there go too, a rare event)."""
    times = np.cumsum(events["delta_s"])
    tail = len(events)
    while tail > 1 and events["velocity"][tail - 1] == 0 and times[tail - 1] == times[-1]:
        tail -= 1
    return events[max(tail - LATE, 0):tail]


def yang_lerch(generated: list, real: tuple) -> dict:
    """OA of generated against ``real = (held-out, training)`` excerpts, with the ceiling."""
    result = compare_with_ceiling(generated, *real)
    held = result["held_out"]
    summary = {side: {"mean": float(np.mean([f["overlap"] for f in held[side].values()])),
                      "polyphony": held[side]["polyphony"]["overlap"],
                      "note_length": held[side]["note_length"]["overlap"]}
               for side in ("generated", "ceiling")}
    return {"summary": summary, "full": result, "n_generated": len(generated),
            "length": len(real[0][0])}


def score_part(part: str, jobs: list, real: dict) -> dict:
    data = dataset(part)
    by_seed = {}
    for job in jobs:
        by_seed.setdefault(job["seed"], {})[job["family"]] = job
    rows, pooled = {}, {a: [] for a in APPROACHES}
    for seed, families in sorted(by_seed.items()):
        if "lesson" not in families:
            continue
        old_nll = families["lesson"]["val_nll"]
        for approach, (family, _) in APPROACHES.items():
            if family not in families:
                continue
            job = families[family]
            entry = job["approaches"][approach]
            rows.setdefault(approach, {})[seed] = {
                **verdicts(entry["mean"], real, job["val_nll"], old_nll),
                "texture": entry["mean"], "samples": entry["samples"],
                "train_s": job["train_s"], "sampling": entry["sampling"]}
            pooled[approach] += entry["events"]
    summary = {}
    for approach, seeds in rows.items():
        v = list(seeds.values())
        summary[approach] = {
            "seeds": len(v), "val_nll": float(np.mean([r["val_nll"] for r in v])),
            **{key: float(np.mean([r["ratios"][key] for r in v])) for key in TARGETS},
            "scale": float(np.mean([r["scale"] for r in v])),
            "pass_counts": {key: sum(r["pass"][key] for r in v) for key in v[0]["pass"]},
            "all_pass": sum(r["all_pass"] for r in v)}
    rng = np.random.default_rng(0)  # the same real excerpts for every approach
    real_excerpts = {n: (excerpts(data["val"], N_REAL, n, rng),
                         excerpts(data["train"], N_REAL, n, rng)) for n in (EARLY, LATE)}
    yl = {}
    for approach, samples in pooled.items():
        if samples:
            yl[approach] = {"early": yang_lerch([s[:EARLY] for s in samples], real_excerpts[EARLY]),
                            "late": yang_lerch([late_window(s) for s in samples],
                                               real_excerpts[LATE])}
    return {"per_seed": rows, "summary": summary, "yang_lerch": yl}


# --- tables and figure -------------------------------------------------------------------------
def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def figures(val_nll: float, ratios: dict, scale: float) -> str:
    """The table cells: val NLL, the three texture ratios, scale consistency."""
    return " | ".join([f"{val_nll:.3f}", *(f"{ratios[key]:.2f}" for key in TARGETS),
                       f"{scale:.2f}"])


def seed_table(scored: dict) -> str:
    lines = ["| approach | seed | val NLL | poly x | median x | p95 x | scale | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for approach, seeds in scored["per_seed"].items():
        for seed, r in seeds.items():
            failed = [k for k, ok in r["pass"].items() if not ok]
            lines.append(f"| {approach} | {seed} | {figures(r['val_nll'], r['ratios'], r['scale'])}"
                         f" | {'PASS' if not failed else 'FAIL: ' + ', '.join(failed)} |")
    return "\n".join(lines)


def summary_table(scored: dict) -> str:
    lines = ["| approach | seeds | val NLL | poly x | median x | p95 x | scale | "
             "passes (poly/med/p95/scale/NLL) | all pass |", "|---|---|---|---|---|---|---|---|---|"]
    for approach, s in scored["summary"].items():
        c, n = s["pass_counts"], s["seeds"]
        lines.append(f"| {approach} | {n} | {figures(s['val_nll'], s, s['scale'])} | "
                     f"{c['polyphony']}/{c['median_note_s']}/{c['p95_note_s']}/{c['scale']}/"
                     f"{c['val_nll']} of {n} | {s['all_pass']}/{n} {mark(s['all_pass'] == n)} |")
    return "\n".join(lines)


def yl_table(scored: dict) -> str:
    lines = ["| approach | n | early OA mean (ceiling) | early poly OA | early length OA | "
             "late OA mean (ceiling) | late poly OA | late length OA |",
             "|---|---|---|---|---|---|---|---|"]
    for approach, y in scored["yang_lerch"].items():
        cells = []
        for when in ("early", "late"):
            g, c = y[when]["summary"]["generated"], y[when]["summary"]["ceiling"]
            cells += [f"{g['mean']:.2f} ({c['mean']:.2f})", f"{g['polyphony']:.2f} "
                      f"({c['polyphony']:.2f})", f"{g['note_length']:.2f} ({c['note_length']:.2f})"]
        lines.append(f"| {approach} | {y['early']['n_generated']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(part: str, jobs: list, path: Path):
    from midilstm.plots import save_png, texture_over_time

    data = dataset(part)
    first = min(j["seed"] for j in jobs)
    series = {f"real: events {PRIMER_EVENTS}-{PRIMER_EVENTS + N_EVENTS} of the primer's piece":
              data["real_continuation"]}
    limit = None
    for job in jobs:
        if job["seed"] != first:
            continue
        for approach in (OLD, NEW):
            if approach in job["approaches"]:
                series[f"{approach} (seed {first}, variation 0)"] = \
                    job["approaches"][approach]["events"][0]
                limit = limit or job["learned_limits"]["max_polyphony"]
    fig = texture_over_time(series, limit=limit)
    fig.axes[0].set_title(f"{part}: notes sounding over time, generated from the same primer")
    save_png(fig, path)


# --- the run -----------------------------------------------------------------------------------
def machine() -> dict:
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True,  # noqa: E731
                                    text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            **{name: version(name) for name in ("torch", "numpy", "numba", "pretty_midi", "mido",
                                                "music21")},
            "git_head": git("rev-parse", "HEAD"), "git_dirty_files": git("status", "--short"),
            "load_average_start": os.getloadavg()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2/1/1 seeds, bach 40 s a model")
    parser.add_argument("--parts", default="default,josquin,bach")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "texture.json")
    parser.add_argument("--midi-dir", type=Path, default=Path("/tmp/midilstm_texture_midi"))
    parser.add_argument("--seeds-default", type=int, default=8)
    parser.add_argument("--seeds-josquin", type=int, default=3)
    parser.add_argument("--seeds-bach", type=int, default=2,
                        help="seeds of the two defaults' models; the others get one")
    parser.add_argument("--bach-budget-s", type=float, default=150.0)
    parser.add_argument("--bach-steps", type=int, default=None,
                        help="train every bach model this many steps instead (no time budget)")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"model families to train (default all: {', '.join(FAMILIES)})")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds_default, args.seeds_josquin, args.seeds_bach = 2, 1, 1
        args.bach_budget_s = 40.0
    parts = [p for p in args.parts.split(",") if p]
    seeds = {"default": args.seeds_default, "josquin": args.seeds_josquin,
             "bach": args.seeds_bach}
    if "bach" in parts and not (BACH_EVENTS / "corpus.json").exists():
        if not BACH.is_dir():
            sys.exit("no corpus/bach: run .venv/bin/python music/make_corpus.py first")
        read_corpus(BACH, cache_dir=None, workers=2, progress=False).save(BACH_EVENTS)
    results = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
               "settings": {"primer_events": PRIMER_EVENTS, "n_events": N_EVENTS,
                            "n_variations": N_VARIATIONS, "top_p": TOP_P, "early": EARLY,
                            "late": LATE, "n_real_excerpts": N_REAL, "piano_roll_fs": FS,
                            "targets": TARGETS, "min_scale": MIN_SCALE}, "parts": {}}
    if args.out.exists():  # parts not run are kept from the last file
        results["parts"] = json.loads(args.out.read_text()).get("parts", {})
    start = time.perf_counter()
    for part in parts:
        part_start = time.perf_counter()
        data = dataset(part)
        real_rows = [midi_texture(f) for f in data["files"]]
        real = mean_texture(real_rows)
        as_read = mean_texture([metrics.texture(p) for p in data["pieces"]])
        print(f"\n## {part}: {len(data['files'])} file(s), real texture (pretty_midi, mean over "
              f"files): polyphony {real['polyphony']:.2f}, median note {real['median_note_s']:.3f}"
              f" s, p95 {real['p95_note_s']:.3f} s, scale {real['scale']:.2f}; learned limits: "
              f"longest note {data['codec'].longest_note_s:.2f} s, polyphony "
              f"{data['codec'].max_polyphony}\n  the same files as midilstm reads them "
              f"(metrics.texture of the events, mean over pieces): polyphony "
              f"{as_read['polyphony']:.2f}, median note {as_read['median_note_s']:.3f} s, p95 "
              f"{as_read['p95_note_s']:.3f} s", flush=True)
        families = [f for f in args.families.split(",") if f]
        todo = [(family, seed) for seed in range(seeds[part]) for family in families
                if part != "bach" or family in ("lesson", "aged", "transformer") or seed == 0]
        jobs = []
        with ProcessPoolExecutor(args.workers) as pool:
            futures = [pool.submit(run_job, part, family, seed, args.bach_budget_s,
                                   str(args.midi_dir), args.bach_steps)
                       for family, seed in todo]
            for future in as_completed(futures):
                job = future.result()
                jobs.append(job)
                texture = "; ".join(f"{a}: poly {e['mean']['polyphony']:.2f}, p95 "
                                    f"{e['mean']['p95_note_s']:.2f} s"
                                    for a, e in job["approaches"].items())
                print(f"  seed {job['seed']} {job['family']}: val NLL {job['val_nll']:.3f} "
                      f"({job['train_s']:.0f} s); {texture}", flush=True)
        scored = score_part(part, jobs, real)
        figure(part, jobs, args.out.parent / f"texture_{part}.png")
        for job in jobs:
            for entry in job["approaches"].values():
                entry.pop("events")
        results["parts"][part] = {
            "files": data["files"], "held_out_files": data["val_files"], "real": real,
            "real_as_read_by_midilstm": as_read,
            "real_per_file": dict(zip(data["files"], real_rows)),
            "learned_limits": {"max_note_s": data["codec"].longest_note_s,
                               "max_polyphony": data["codec"].max_polyphony},
            "seconds": time.perf_counter() - part_start, "jobs": jobs, **scored}
        results["load_average_end"] = os.getloadavg()
        results["seconds"] = time.perf_counter() - start
        write_json_atomic(args.out, results)
        print(f"\n### {part}: per seed (ratios generated / real)\n\n{seed_table(scored)}")
        print(f"\n### {part}: per approach (means over seeds)\n\n{summary_table(scored)}")
        print(f"\n### {part}: Yang & Lerch OA against held-out real (ceiling: training real)"
              f"\n\n{yl_table(scored)}", flush=True)
    print(f"\nwrote {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
