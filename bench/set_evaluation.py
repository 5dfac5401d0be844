"""Yang & Lerch (2018) set evaluation of the single default piece and of the corpus.

    OMP_NUM_THREADS=1 .venv/bin/python bench/set_evaluation.py \\
        --checkpoint runs/series/bach.pt --data runs/bach_corpus     # about 3 min on 2 cores

For each data set: ``--n`` generated excerpts, ``--n`` held-out real excerpts and ``--n``
training real excerpts of the same number of events, compared feature by feature
(``midilstm.features.compare_with_ceiling``): generated against held-out real, with training
real against held-out real as the ceiling; and the same against training real as reference.

* **Single piece** (the default piece, as notebooks 01-04 ship): ``train.train`` with
  ``TrainConfig()``, ``ModelConfig`` hidden 128 one layer, the log codec with 32 bins, the last
  10% of the piece held out. The held-out end has only a few hundred events, so excerpts are
  short (``--piece-length``, 64 events, about 2 s) and the ``--n`` held-out windows are
  distinct but overlap; the training-reference table (windows from the other 90%) does not
  have that weakness. Generated: ``--n`` variations from the piece's first 30 events (as
  notebook 04: temperature 1, top-p 0.95).
* **Corpus**: the checkpoint of ``python -m midilstm train`` on the corpus folder; excerpts of
  ``--corpus-length`` events from whole held-out pieces (the checkpoint's ``held_out``) and
  from training pieces; generated: 10 variations from each of the first 30 events of 10
  held-out pieces (one primer would put every sample in one key).

Each generated sample continues its primer for ``--continuation`` events (600, as notebook 04):
**early** excerpts are the first events of each continuation, **late** ones its last events (a
wash of held notes builds up slowly, so only late excerpts show it). Both are compared.

Prints the tables and writes ``bench/results/set_evaluation.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from midilstm import music  # noqa: E402
from midilstm.batch import held_out_split  # noqa: E402
from midilstm.checkpoint import load_checkpoint  # noqa: E402
from midilstm.codec import EventCodec  # noqa: E402
from midilstm.corpus import load_corpus  # noqa: E402
from midilstm.data import split_pieces  # noqa: E402
from midilstm.features import compare_with_ceiling, excerpts  # noqa: E402
from midilstm.files import write_json_atomic  # noqa: E402
from midilstm.generate import generate  # noqa: E402
from midilstm.sampling import SamplingConfig  # noqa: E402
from midilstm.model import ModelConfig  # noqa: E402
from midilstm.parse import read_midi  # noqa: E402
from midilstm.train import TrainConfig, train  # noqa: E402

SAMPLING = SamplingConfig(temperature=1.0, top_p=0.9)  # notebook 04's defaults
PRIMER_EVENTS = 30


def early_and_late(samples: list, length: int, held_out: list, training: list) -> dict:
    """``compare_with_ceiling`` of the first and of the last ``length`` events of each sample."""
    return {when: compare_with_ceiling([part(s) for s in samples], held_out, training)
            for when, part in (("early", lambda s: s[:length]), ("late", lambda s: s[-length:]))}


def single_piece(n: int, length: int, continuation: int) -> dict:
    events = read_midi(music.default_piece()).events
    train_events, val_events = split_pieces([events], 0.1, 0)
    codec = EventCodec().fit(train_events)
    model_config = ModelConfig(sizes=codec.sizes, hidden_size=128)
    start = time.perf_counter()
    ckpt = train(codec, [codec.encode(e) for e in train_events],
                 [codec.encode(e) for e in val_events], TrainConfig(), model_config,
                 progress=False)
    seconds = time.perf_counter() - start
    generated = generate(ckpt.model, ckpt.codec, events[:PRIMER_EVENTS],
                         n_events=max(length, continuation), n_variations=n, seed=0,
                         sampling=SAMPLING)
    rng = np.random.default_rng(0)
    held_out = excerpts(val_events, n, length, rng)
    training = excerpts(train_events, n, length, rng)
    return {"data": music.DEFAULT_PIECE, "events": len(events),
            "held_out_events": sum(map(len, val_events)), "train_seconds": seconds,
            "epochs": len(ckpt.history), "best_epoch": ckpt.best_epoch,
            "val_nll": ckpt.history[ckpt.best_epoch - 1]["val"]["nll"],
            "n": n, "length": length, "continuation": continuation,
            **early_and_late(generated, length, held_out, training)}


def corpus_set(checkpoint: Path, data: Path, n: int, length: int, continuation: int) -> dict:
    ckpt = load_checkpoint(checkpoint)
    corpus = load_corpus(data)
    train_idx, val_idx = held_out_split(ckpt, corpus)
    val = [np.asarray(corpus.piece(i)) for i in val_idx]
    train_pieces = [corpus.piece(i) for i in train_idx]
    generated = []
    per_primer = n // 10
    for k, piece in enumerate(val[:10]):
        generated += generate(ckpt.model, ckpt.codec, piece[:PRIMER_EVENTS],
                              n_events=max(length, continuation),
                              n_variations=per_primer + (k < n % 10), seed=k,
                              sampling=SAMPLING)
    rng = np.random.default_rng(0)
    return {"data": str(data), "held_out_pieces": len(val), "train_pieces": len(train_pieces),
            "n": n, "length": length, "continuation": continuation,
            **early_and_late(generated, length, excerpts(val, n, length, rng),
                             excerpts(train_pieces, n, length, rng))}


def table(result: dict, reference: str) -> str:
    """One markdown table: generated (early or late: ``result`` is one of them) and ceiling."""
    other = "training" if reference == "held_out" else "held-out"
    rows = [f"| feature | OA generated | OA ceiling ({other} real) | KL generated | KL ceiling |",
            "|---|---|---|---|---|"]
    gen, ceiling = result[reference]["generated"], result[reference]["ceiling"]
    for name in gen:
        rows.append(f"| {name} | {gen[name]['overlap']:.2f} | {ceiling[name]['overlap']:.2f} | "
                    f"{gen[name]['kl']:.3f} | {ceiling[name]['kl']:.3f} |")
    rows.append(f"| **mean** | {np.mean([g['overlap'] for g in gen.values()]):.2f} | "
                f"{np.mean([c['overlap'] for c in ceiling.values()]):.2f} | "
                f"{np.mean([g['kl'] for g in gen.values()]):.3f} | "
                f"{np.mean([c['kl'] for c in ceiling.values()]):.3f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "runs" / "series" / "bach.pt")
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "bach_corpus")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--piece-length", type=int, default=64)
    parser.add_argument("--corpus-length", type=int, default=200)
    parser.add_argument("--continuation", type=int, default=600,
                        help="events each generated sample runs for (default 600)")
    args = parser.parse_args(argv)
    results = {"single_piece": single_piece(args.n, args.piece_length, args.continuation)}
    if args.checkpoint.exists():
        results["corpus"] = corpus_set(args.checkpoint, args.data, args.n, args.corpus_length,
                                       args.continuation)
    write_json_atomic(ROOT / "bench" / "results" / "set_evaluation.json", results)
    for name, result in results.items():
        print(f"\n## {name}: {result['n']} excerpts of {result['length']} events "
              f"({result['data']})")
        for when in ("early", "late"):
            for reference in ("held_out", "training"):
                print(f"\n{when} excerpts; reference: {reference.replace('_', '-')} real\n")
                print(table(result[when], reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())
