"""Why improvisations slid into a wash of held notes: the note-off hazard, model against music.

For the default piece, three models are trained: one with the lesson's inputs, one that reads
its sounding notes (``ModelConfig.sounding_input``) and one that also reads how long each has
sounded (``age_input``), all three without the key input; each with
``TrainConfig(seed=...)``; each improvises ``--variations`` streams of ``--events`` events
from the piece's first 30 (top-p 0.95, no texture limits, so that only the network decides
when notes end). At every step, for every
sounding note, we record the probability that sampling ends it (P(note-off) times P(its pitch |
off), the distributions actually sampled from), its age in seconds and how many notes sound.
The same is counted in the training music: at each event, for each sounding note, whether that
event ends it. Compared:

* the hazard by how long a note has sounded (per event);
* P(note-off) by how many notes sound, in the music, on the held-out music read by the model
  (teacher forcing) and in the model's own improvisation;
* notes sounding over the course of the improvisation.

    python bench/hazard.py                 # about a minute on 2 cores
    python bench/hazard.py --seed 1 --out bench/results/hazard.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import midilstm
from midilstm.codec import EventCodec
from midilstm.data import split_pieces
from midilstm.generate import Improviser
from midilstm.sampling import SamplingConfig
from midilstm.model import LESSON_INPUTS, ModelConfig
from midilstm.music import default_piece
from midilstm.sounding import held_before
from midilstm.train import TrainConfig, train

AGE_EDGES_S = [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, np.inf]
COUNT_EDGES = [0, 1, 2, 3, 4, 5, 6, 8, 12, 20, 1000]
NO_LIMITS = SamplingConfig(top_p=0.95, max_note_s=0, max_polyphony=0)
MODELS = {"lesson inputs": LESSON_INPUTS,  # name -> ModelConfig options
          "sounding input": {**LESSON_INPUTS, "sounding_input": True},
          "sounding + age": {**LESSON_INPUTS, "sounding_input": True, "age_input": True}}


def music_hazard(events: np.ndarray) -> tuple[list, list, list]:
    """Per sounding note at each event: (age s, ended by this event?); per event: (notes
    sounding, is it a note-off?)."""
    ages, ended, counts, offs = [], [], [], []
    since, now = {}, 0.0
    for pitch, velocity, delta in zip(events["pitch"].tolist(), events["velocity"].tolist(),
                                      events["delta_s"].tolist()):
        now += delta
        counts.append(len(since))
        offs.append(velocity == 0)
        for held, start in since.items():
            ages.append(now - start)
            ended.append(velocity == 0 and held == pitch)
        if velocity == 0:
            since.pop(pitch, None)
        else:
            since.setdefault(pitch, now)
    return list(zip(ages, ended)), list(zip(counts, offs))


def model_hazard(model, codec, primer, n_events: int, n_variations: int, seed: int):
    """The same seen from the improvising model: per sounding note at each step (age, P(it is
    ended now)); per step (notes sounding, P(note-off)); and notes sounding per step."""
    improviser = Improviser(model, codec, NO_LIMITS, seed=seed, n_variations=n_variations)
    improviser.prime(primer)
    per_note, per_step, sounding = [], [], []
    for _ in range(n_events):
        since, now = improviser.sounding_since.copy(), improviser.now_s.copy()
        _, probs = improviser.step()
        p_off = probs["velocity"][:, 0]
        for b in range(n_variations):
            held = np.flatnonzero(~np.isnan(since[b]))
            # P(pitch | off) is the pitch distribution masked to sounding pitches; step() drew
            # it only when it drew an off, so it is recomputed from what the model considered.
            considered = improviser.considered["pitch"][b][held]
            p_pitch = considered / considered.sum() if considered.sum() > 0 else considered
            per_note += [(now[b] - since[b, p], p_off[b] * q) for p, q in zip(held, p_pitch)]
            per_step.append((len(held), p_off[b]))
        sounding.append((~np.isnan(since)).sum(axis=1).mean())
    return per_note, per_step, sounding


def teacher_forced_off(model, codec, codes: np.ndarray) -> list:
    """(notes sounding before each event, the model's P(note-off) for it) on real music."""
    with torch.no_grad():
        log_probs, _ = model(torch.as_tensor(codes)[None])
    p_off = np.exp(log_probs[1][0, :-1, 0].numpy())
    counts = held_before(codes, codec.n_pitches).sounding.sum(axis=1)[1:]
    return list(zip(counts.tolist(), p_off.tolist()))


def binned(pairs, edges) -> list:
    """Mean of the second value per bin of the first: [(low, high, mean, n), ...]."""
    x = np.array([p[0] for p in pairs], float)
    y = np.array([p[1] for p in pairs], float)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (x >= low) & (x < high)
        rows.append((low, high, float(y[inside].mean()) if inside.any() else None,
                     int(inside.sum())))
    return rows


def fmt(value) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--events", type=int, default=600, help="events per stream (600)")
    parser.add_argument("--variations", type=int, default=8, help="streams per model (8)")
    parser.add_argument("--out", default="bench/results/hazard.json",
                        help="JSON with every table (default bench/results/hazard.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    events = midilstm.read_midi(default_piece()).events
    train_events, val_events = split_pieces([events], 0.1)
    codec = EventCodec().fit(train_events)
    train_codes = [codec.encode(e) for e in train_events]
    val_codes = [codec.encode(e) for e in val_events]
    music_note, music_step = music_hazard(train_events[0])
    report = {"music": {"hazard_by_age": binned(music_note, AGE_EDGES_S),
                        "off_by_count": binned(music_step, COUNT_EDGES)}}
    for name, told in MODELS.items():
        config = ModelConfig(sizes=codec.sizes, **told)
        model = train(codec, train_codes, val_codes, TrainConfig(seed=args.seed), config,
                      progress=False).model
        per_note, per_step, sounding = model_hazard(model, codec, events[:30], args.events,
                                                    args.variations, seed=0)
        report[name] = {"hazard_by_age": binned(per_note, AGE_EDGES_S),
                        "off_by_count": binned(per_step, COUNT_EDGES),
                        "teacher_forced_off_by_count": binned(
                            teacher_forced_off(model, codec, val_codes[0]), COUNT_EDGES),
                        "sounding_by_100_events": [float(np.mean(sounding[i:i + 100]))
                                                   for i in range(0, len(sounding), 100)]}
    names = tuple(MODELS)
    print("hazard: P(a sounding note ends at this event), by its age")
    print(f"{'age s':>12}{'music':>8}" + "".join(f"{n:>16}" for n in names))
    for i, (low, high, value, _) in enumerate(report["music"]["hazard_by_age"]):
        print(f"{low:5.1f}-{high:<6.1f}{fmt(value):>8}"
              + "".join(f"{fmt(report[n]['hazard_by_age'][i][2]):>16}" for n in names))
    print("\nP(note-off) by notes sounding: music | teacher-forced on held-out music | improvising")
    print(f"{'sounding':>9}{'music':>8}" + "".join(f"{n + ' (t/i)':>24}" for n in names))
    for i, (low, high, value, _) in enumerate(report["music"]["off_by_count"]):
        cells = "".join(f"{fmt(report[n]['teacher_forced_off_by_count'][i][2])} / "
                        f"{fmt(report[n]['off_by_count'][i][2])}".rjust(24) for n in names)
        print(f"{low:>3}-{high - 1:<5}{fmt(value):>8}{cells}")
    print("\nnotes sounding, mean per 100 generated events")
    for n in names:
        print(f"{n:>16}: " + " ".join(f"{v:5.1f}" for v in report[n]["sounding_by_100_events"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
