"""Command line: ``python -m midilstm inspect|run|sweep ...`` (see ``--help`` of each)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import MidiInputError, ParameterError
from .runs import add_run_commands  # papermill itself is imported only when a run starts

DESCRIPTION = "Read MIDI files, train an LSTM on them and let it improvise (midilstm)."
EPILOG = """\
examples:
  python -m midilstm inspect song.mid
  python -m midilstm run --out runs/mine -p piece song.mid -p epochs 50
  python -m midilstm sweep --out runs/sweep1 -p temperature 0.8 1.0

'python -m midilstm COMMAND --help' gives each command's options and the parameter list.
"""
BATCH_COMMANDS = ("corpus", "train", "generate", "report")  # without notebooks: midilstm.batch
STUDENT_COMMANDS = "{inspect,run,sweep,corpus,train,generate,report}"  # refresh-notebooks is the maintainer's


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m midilstm", description=DESCRIPTION,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar=STUDENT_COMMANDS)

    inspect = commands.add_parser("inspect", help="report what MIDI files contain and what is read")
    inspect.add_argument("files", nargs="+", help="MIDI files, folders or glob patterns")
    inspect.add_argument("--json", action="store_true", help="one JSON object per file per line")
    inspect.add_argument("--channels", type=int, nargs="+", help="keep only these 0-based channels")
    inspect.add_argument("--drums", action="store_true", help="keep drums (channel index 9)")
    inspect.add_argument("--pedal", action="store_true",
                         help="hold notes while the sustain pedal is down")
    inspect.add_argument("--out-of-range", choices=("fold", "drop"), default="fold")
    inspect.set_defaults(handler=_inspect)

    add_run_commands(commands)
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in BATCH_COMMANDS + ("-h", "--help"):
        from .batch_cli import add_batch_commands  # imports torch (a second): only when needed

        add_batch_commands(commands)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:  # `... | head` closed the pipe: stop quietly, as a shell tool does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit-time flush does not fail again
        return 141
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _inspect(args) -> int:
    from .parse import Selection, expand_sources, read_midi

    try:
        selection = Selection(channels=args.channels, include_drums=args.drums,
                              sustain_pedal=args.pedal, out_of_range=args.out_of_range)
    except ParameterError as err:  # e.g. --channels 16
        print(f"error: {err}", file=sys.stderr)
        return 2
    paths = expand_sources(args.files)
    if not paths:
        print(f"error: no MIDI files found in {' '.join(args.files)}", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        try:
            report = read_midi(path, selection).report
        except MidiInputError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps(report.to_dict()) if args.json else report.summary(), flush=True)
    return 1 if failed else 0


