"""The command line: every command's options, help and exit status, and what inspect, run and
sweep do. ``python -m midilstm COMMAND`` runs inspect, run, sweep (``runs``, ``sweeps``) and
corpus, train, generate, report; ``python -m midilstm.batch`` (as ``torchrun`` starts it)
runs the last four alone, whose work is ``corpus_commands``: only they import torch, and only
when they are the command. Every command ends with one of the exit statuses of ``EXIT_STATUS``
(also in ``--help``), saying what went wrong in one line on stderr, never with a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

from . import errors
from . import params as parameters
from .errors import MidiInputError, MidilstmError, ParameterError
from .failures import OutputError, os_error_text, shorten_numbers

EXIT_STATUS = """\
exit status:
  0    done
  1    the command ran, but some of its work failed: files it could not read besides those
       it did (inspect, corpus), a notebook that failed (run), points that failed (sweep),
       a write that failed midway (the disk full)
  2    refused before doing anything: bad usage, a bad parameter or option value, or an input
       that is missing or cannot be used (MIDI files, a checkpoint, a corpus folder, a run
       directory that holds a run or that another run is using, an output folder that cannot
       be written: permission denied, a read-only file system, a link in a run directory)
  130  interrupted (Ctrl-C)
  141  the output was closed early (... | head)
"""
__doc__ += "\n" + EXIT_STATUS
REFUSED = (ParameterError, MidiInputError, errors.CheckpointError, errors.CodecError,
           errors.RunDirError, OutputError)  # exit status 2; any other MidilstmError is work that failed: 1

DESCRIPTION = "Read MIDI files, train an LSTM on them and let it improvise (midilstm)."
EPILOG = """\
examples:
  python -m midilstm inspect song.mid
  python -m midilstm run --out runs/mine -p piece song.mid -p epochs 50
  python -m midilstm sweep --out runs/sweep1 -p temperature 0.8 1.0

'python -m midilstm COMMAND --help' gives each command's options and the parameter list.
"""
RUN_EXAMPLES = """\
examples:
  python -m midilstm run --out runs/cooler -p temperature 0.8 -p top_k 20
  python -m midilstm run --out runs/josquin -p piece josquin -p epochs 100
  python -m midilstm run --out runs/mine -p piece songs/ -p channels "[0]"
  python -m midilstm run --out runs/mine --resume --from 03_train -p hidden_size 256
"""
SWEEP_EXAMPLES = """\
examples:
  python -m midilstm sweep --out runs/sweep1 -p temperature 0.8 1.0 -p n_time_bins 16 32
  python -m midilstm sweep --out runs/sweep2 --grid examples/grid.yaml --jobs 2

Points that differ only in 04_generate/05_evaluate parameters share one trained model.
"""
BATCH_COMMANDS = ("corpus", "train", "generate", "report")  # import torch: built when used
STUDENT_COMMANDS = "{inspect,run,sweep,student-edition,corpus,train,generate,report}"  # refresh-notebooks: the maintainer's


class Help(argparse.RawDescriptionHelpFormatter):
    """Text as written; each option's default after its help, unless None, off or empty."""

    def _get_help_string(self, action):
        text, default = action.help or "", action.default
        worth = not (default is None or default is False or default is argparse.SUPPRESS
                     or default == [])
        if action.option_strings and worth and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def main(argv=None) -> int:
    """``python -m midilstm``: every command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return _dispatch(parser(full=bool(argv) and argv[0] in BATCH_COMMANDS), argv)


def batch_main(argv=None) -> int:
    """``python -m midilstm.batch`` (``torchrun -m midilstm.batch``): the corpus commands."""
    top = argparse.ArgumentParser(
        prog="python -m midilstm.batch", formatter_class=Help, epilog=EXIT_STATUS,
        description="Corpus-scale reading, training, generation and reports, without notebooks.")
    _add_batch_commands(top.add_subparsers(dest="command", required=True), full=True)
    return _dispatch(top, argv)


def parser(full: bool = True) -> argparse.ArgumentParser:
    """Every command's parser. ``full=False`` leaves out the options of the corpus commands,
    which need torch for their defaults: enough for the list of commands."""
    top = argparse.ArgumentParser(prog="python -m midilstm", description=DESCRIPTION,
                                  epilog=EPILOG + "\n" + EXIT_STATUS, formatter_class=Help)
    commands = top.add_subparsers(dest="command", required=True, metavar=STUDENT_COMMANDS)
    _add_inspect(commands)
    _add_run_commands(commands)
    _add_batch_commands(commands, full)
    return top


def _dispatch(top: argparse.ArgumentParser, argv) -> int:
    """Parse ``argv`` (argparse ends bad usage with status 2) and run the command, turning
    what it raises into one line and the exit status of ``EXIT_STATUS``."""
    args = top.parse_args(argv)
    try:
        return args.handler(args)
    except REFUSED as err:
        _error(err)
        return 2
    except MidilstmError as err:
        _error(err)
        return 1
    except BrokenPipeError:  # `... | head` closed the pipe: stop quietly, as a shell tool does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit-time flush does not fail again
        return 141
    except OSError as err:  # midway: a full disk, a folder we may no longer write
        _error(os_error_text(err))
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _error(text) -> None:
    print(f"error: {shorten_numbers(text)}", file=sys.stderr, flush=True)


def _command(commands, name: str, help: str, **kw) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=help, formatter_class=Help,
                               epilog=kw.pop("epilog", "") + EXIT_STATUS, **kw)


# --- inspect -------------------------------------------------------------------------------------

def _add_inspect(commands) -> None:
    inspect = _command(commands, "inspect", "report what MIDI files contain and what is read",
                       description="One report per MIDI file: what it holds and what is read.")
    inspect.add_argument("files", nargs="+", help="MIDI files, folders or glob patterns")
    inspect.add_argument("--json", action="store_true", help="one JSON object per file per line")
    inspect.add_argument("--channels", type=int, nargs="+",
                         help="keep only these 0-based channels (default: all but drums)")
    inspect.add_argument("--drums", action="store_true", help="keep drums (channel index 9)")
    inspect.add_argument("--pedal", action="store_true",
                         help="hold notes while the sustain pedal is down")
    inspect.add_argument("--out-of-range", choices=("fold", "drop"), default="fold",
                         help="notes outside the piano's range: moved by octaves into it, or "
                              "dropped")
    inspect.set_defaults(handler=_inspect)


def _inspect(args) -> int:
    from .parse import Selection, expand_sources, read_midi, reader_failed

    selection = Selection(channels=args.channels, include_drums=args.drums,
                          sustain_pedal=args.pedal, out_of_range=args.out_of_range)
    paths = expand_sources(args.files)
    if not paths:
        raise MidiInputError(" ".join(args.files), "no MIDI files found")
    failed = 0
    for path in paths:
        try:
            report = read_midi(path, selection).report
        except Exception as err:  # noqa: BLE001  one file's failure: the others still reported
            _error(err if isinstance(err, MidiInputError) else reader_failed(path, err))
            failed += 1
            continue
        print(json.dumps(report.to_dict()) if args.json else report.summary(), flush=True)
    return 1 if failed else 0


# --- run, sweep, the student edition and the maintainer's refresh-notebooks ----------------

def _add_run_commands(commands) -> None:
    series = parameters.SERIES
    run = _command(commands, "run", "run the notebook series into a run directory",
                   description="Execute the notebooks 01_parse..05_evaluate into a run directory.",
                   epilog=RUN_EXAMPLES + "\n" + parameters.help_text() + "\n\n")
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a notebook parameter (see the list below); may be repeated")
    run.add_argument("--out", help="run directory (default: a new runs/<date>-<time>-<4 hex>)")
    _add_mode(run)
    run.add_argument("--from", dest="start", choices=series, metavar="NOTEBOOK",
                     help="start at this notebook (with --resume: keep the earlier ones' files; "
                          "default: the first)")
    run.add_argument("--to", dest="stop", choices=series, metavar="NOTEBOOK",
                     help="stop after this notebook (default: the last)")
    run.set_defaults(handler=_run)

    sweep = _command(commands, "sweep", "one run per point of a parameter grid",
                     description="One series per point of a grid, into OUT/run_000, run_001, ...; "
                                 "summary.csv and summary.png compare them.",
                     epilog=SWEEP_EXAMPLES + "\n" + parameters.help_text() + "\n\n")
    sweep.add_argument("-p", "--param", nargs="+", action="append", default=[],
                       metavar="NAME VALUES", help="a parameter and the values to try; may be "
                                                   "repeated (the grid: every combination)")
    sweep.add_argument("--grid", help="YAML file: {name: [values], ...} (see examples/grid.yaml)")
    sweep.add_argument("--jobs", type=int, default=1, help="points run in parallel processes")
    sweep.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the points on this Dask cluster: tcp://HOST:PORT or a scheduler "
                            "file (--out shared with its workers; docs/cluster.md)")
    sweep.add_argument("--out", required=True, help="sweep directory")
    _add_mode(sweep)
    sweep.set_defaults(handler=_sweep)

    refresh = commands.add_parser(  # the maintainer's (make notebooks): hidden from --help
        "refresh-notebooks", formatter_class=Help, description="Re-execute notebooks/ in place "
        "after an intended change, without times, durations or absolute paths in their metadata.")
    refresh.add_argument("--force", action="store_true",
                         help="rewrite every notebook, even one whose checked outputs did not "
                              "change (after editing a cell's source in the file itself)")
    refresh.add_argument("notebooks", nargs="*", choices=[[], *series], metavar="NOTEBOOK",
                         help="which notebooks (default: the whole series)")
    refresh.set_defaults(handler=_refresh)

    edition = _command(commands, "student-edition", "write the notebooks without their solutions",
                       description="Copy the notebooks for students: without the cells tagged "
                                   "'solution', and with the exercise checks' outputs cleared.")
    edition.add_argument("--out", required=True, type=Path, help="folder for the notebooks")
    edition.set_defaults(handler=_student_edition)


def _add_mode(command) -> None:
    mode = command.add_mutually_exclusive_group()
    mode.add_argument("--force", action="store_true",
                      help="the directory holds a run: delete its results and start clean")
    mode.add_argument("--resume", action="store_true",
                      help="the directory holds a run: keep its files and re-run the notebooks")


def _mode(args) -> str:
    return "force" if args.force else "resume" if args.resume else "new"


def _interrupted(kept: str) -> int:
    """Ctrl-C: one line saying what was kept, exit status 130. The process is ending, so the
    notebook client's unfinished tasks (their kernel died with the signal) are not reported."""
    logging.getLogger("asyncio").disabled = True  # "Task exception was never retrieved" at exit
    print(f"interrupted: {kept}", file=sys.stderr, flush=True)
    return 130


def _run(args) -> int:
    from .rundir import unique_run_name
    from .runs import one_line, run_series, steps
    from .values import check_parameters, parse_value

    params = check_parameters({name: parse_value(value, name) for name, value in args.param})
    series = steps(args.start, args.stop)
    out = args.out or unique_run_name("runs")
    try:
        path = run_series(params, out, series=series, mode=_mode(args))
    except KeyboardInterrupt:
        return _interrupted(f"{out} keeps the notebooks that finished and the partial one "
                            f"(status 'interrupted' in its manifest.json)")
    except MidilstmError:
        raise  # refused (its directory) or failed (a notebook missing): _dispatch says which
    except Exception as err:  # noqa: BLE001 - papermill names the failed cell; one line here
        _error(f"the run failed: {one_line(err)} (see the executed notebooks in "
               f"{os.path.join(out, 'notebooks')})")
        return 1
    print(f"run directory: {out}")  # as the user typed it
    for name in ("manifest.json", "metrics.json", "generated", "notebooks"):
        if (path / name).exists():
            print(f"  {os.path.join(out, name)}")
    return 0


def _sweep(args) -> int:
    from .sweeps import load_grid, sweep  # sweep checks every point before the first runs
    from .values import parse_value

    grid = load_grid(args.grid) if args.grid else {}
    for name, *values in args.param:
        if not values:
            raise ParameterError(name, "-p needs the parameter's name and at least one value")
        grid[name] = [parse_value(v, name) for v in values]
    if not grid:
        raise ParameterError("grid", "give one with -p NAME VALUE... or --grid FILE")
    print(f"sweep: {math.prod(map(len, grid.values()))} points into {args.out}", flush=True)
    try:
        result = sweep(grid, args.out, jobs=args.jobs, mode=_mode(args),
                       scheduler=args.scheduler)
    except KeyboardInterrupt:
        return _interrupted(f"{args.out} keeps the points that finished; summary.csv lists "
                            f"them and the interrupted ones")
    print(f"summary: {os.path.join(args.out, result.summary.name)} (and summary.png)")
    if result.failed:
        _error(f"{result.failed} of {len(result.rows)} points failed (see the error column of "
               f"summary.csv and error.txt in their directories)")
        return 1
    return 0


def _refresh(args) -> int:
    from .refresh import refresh_notebooks

    refresh_notebooks(tuple(args.notebooks) or parameters.SERIES, force=args.force)
    return 0


def _student_edition(args) -> int:
    from .exercises import write_student_edition
    from .failures import check_writable

    check_writable(args.out, "the folder for the notebooks")  # refused before any is written
    for path in write_student_edition(args.out):
        print(path)
    return 0


# --- corpus, train, generate, report (torch: their work is corpus_commands) -----------------------

def _add_batch_commands(commands, full: bool = True) -> None:
    """``corpus``, ``train``, ``generate`` and ``report``; without ``full`` only their names
    and summaries (their defaults come from modules that import torch)."""
    corpus = _command(commands, "corpus", "read MIDI files into a cached corpus folder")
    train = _command(commands, "train", "train on a corpus folder (torchrun-ready)")
    generate = _command(commands, "generate", "improvise MIDI files from a checkpoint")
    report = _command(commands, "report", "held-out NLL against baselines; learning curve")
    if not full:
        return
    from . import corpus_commands
    from .batch import CORPUS_MODEL, PRECISIONS, CorpusTrainConfig
    from .constants import INPUT_MODES
    from .model import ModelConfig

    corpus.add_argument("sources", nargs="+", help="MIDI files, folders or glob patterns")
    corpus.add_argument("--out", required=True, type=Path, help="corpus folder to write")
    corpus.add_argument("--workers", type=int,
                        help="parser processes (default: one per CPU core, for many files)")
    corpus.add_argument("--cache", default="default",
                        help="cache folder ('default': $MIDILSTM_CACHE or ~/.cache/midilstm)")
    corpus.add_argument("--no-cache", action="store_true", help="read every file; cache nothing")
    corpus.add_argument("--scheduler", metavar="ADDRESS",
                        help="parse the files on this Dask cluster: tcp://HOST:PORT or a "
                             "scheduler file (the files shared with its workers; docs/cluster.md)")
    corpus.add_argument("--fast", action="store_true",
                        help="try symusic's parser first (midilstm.fast_reader: the same events; "
                             "needs symusic and numba; its kernels compile on first use, ~1 min)")
    corpus.set_defaults(handler=corpus_commands.corpus)

    train.add_argument("--data", required=True, type=Path,
                       help="a corpus folder (from 'corpus') or MIDI files/folder")
    train.add_argument("--out", required=True, type=Path, help="checkpoint file to write")
    config, model = CorpusTrainConfig(), ModelConfig(sizes=(1, 1, 1), **CORPUS_MODEL)
    for name, (kind, text) in corpus_commands.TRAIN_OPTIONS.items():
        train.add_argument(_flag(name), type=kind, help=text,
                           default=getattr(config if hasattr(config, name) else model, name))
    train.add_argument("--device", default="auto", help="'auto' (a GPU if there is one), 'cpu', "
                                                        "'cuda', 'cuda:1', ...")
    train.add_argument("--precision", choices=PRECISIONS, default=config.precision,
                       help="'auto': bfloat16 mixed precision on a CPU that has it natively")
    train.add_argument("--input-mode", choices=INPUT_MODES, default=model.input_mode,
                       help="how the network reads an event: one-hot classes or embeddings")
    train.add_argument("--sounding-input", action=argparse.BooleanOptionalAction,
                       default=model.sounding_input, help="the LSTM also reads which pitches sound")
    train.add_argument("--key-input", action=argparse.BooleanOptionalAction,
                       default=model.key_input,
                       help="the LSTM also reads the key profile of the recent notes")
    train.add_argument("--age-input", action=argparse.BooleanOptionalAction,
                       default=model.age_input,
                       help="the LSTM also reads how long each sounding note has sounded")
    train.set_defaults(handler=corpus_commands.train)

    generate.add_argument("--checkpoint", required=True, type=Path,
                          help="a checkpoint written by train (or notebook 03's model.pt)")
    generate.add_argument("--out", required=True, type=Path, help="folder for sample_<i>.mid")
    generate.add_argument("--primer", type=Path,
                          help="MIDI file whose first events prime (default: one middle C)")
    for name, (kind, default, text) in corpus_commands.GENERATE_OPTIONS.items():
        generate.add_argument(_flag(name), type=kind, default=default, help=text)
    generate.add_argument("--wav", action="store_true", help="also write sample_<i>.wav beside "
                          f"each MIDI file ({corpus_commands.WAV_RATE} Hz, as notebook 04)")
    generate.add_argument("--piano-roll", type=Path, help="also draw the first 3 as a PNG")
    generate.set_defaults(handler=corpus_commands.generate)

    report.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint from train")
    report.add_argument("--data", required=True, type=Path, help="the corpus folder trained on")
    report.add_argument("--curve", type=Path, help="also draw the learning curve as a PNG")
    report.set_defaults(handler=corpus_commands.report)


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"
