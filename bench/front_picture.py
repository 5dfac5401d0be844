"""The README's front picture: the bundled piece beside three improvisations, each over its
whole length, from a run of the notebook series (by default the one the committed notebooks
were executed in).

    .venv/bin/python -m midilstm refresh-notebooks --force     # or: make run (runs/default)
    .venv/bin/python bench/front_picture.py                    # -> docs/piano_rolls.png
    .venv/bin/python bench/front_picture.py --run runs/default --out /tmp/rolls.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from midilstm import plots, read_midi  # noqa: E402
from midilstm.music import default_piece  # noqa: E402
from midilstm.plots import save_png  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "notebooks",
                        help="a run directory with generated/sample_<i>.mid (default: the "
                             "committed notebooks' run, runs/notebooks)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "piano_rolls.png")
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args(argv)
    samples = [read_midi(args.run / "generated" / f"sample_{i}.mid").events
               for i in range(args.samples)]
    piece = read_midi(default_piece()).events
    length = 30 + max(len(s) for s in samples)  # the primer and as many events as a sample
    rolls = {f"the piece (its first {length} events)": piece[:length]}
    rolls.update({f"improvised from its first 30 events: variation {i} ({len(s)} events, "
                  "whole length)": s for i, s in enumerate(samples)})
    save_png(plots.piano_rolls(rolls), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
