"""What every command promises: one exit status convention (``cli.EXIT_STATUS``), help text and
a default for every option, torch imported only by the commands that need it, and generate's
``--top-k`` and ``--wav``. The MIDI files are built here; the checkpoint is a tiny model
trained by the ``train`` command itself."""
import argparse
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from conftest import off, on, tempo, write_midi_file

from midilstm import cli, corpus, runs, sweeps
from midilstm.batch_cli import (
    main as batch_cli_main,  # what python -m midilstm.batch runs
)
from midilstm.cli import batch_main, main
from midilstm.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent


def song(path, n_notes=40, start=60):
    """A real MIDI file: a walk up and down a scale."""
    messages = [tempo(120)]
    for k in range(n_notes):
        pitch = start + (k % 8 if (k // 8) % 2 == 0 else 7 - k % 8)
        messages += [on(pitch, 80), off(pitch, t=240)]
    return write_midi_file(path, [messages])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``good/``: two readable songs; ``mixed/``: one readable, one broken; ``bad/``: broken."""
    root = tmp_path_factory.mktemp("files")
    for folder in ("good", "mixed", "bad"):
        (root / folder).mkdir()
    song(root / "good" / "a.mid")
    song(root / "good" / "b.mid", 48, 64)
    song(root / "mixed" / "a.mid")
    for folder in ("mixed", "bad"):
        (root / folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00")  # cut short
    return root


@pytest.fixture(scope="module")
def checkpoint(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m.pt"
    assert main(["train", "--data", str(files / "good"), "--out", str(out), "--steps", "2",
                 "--eval-every", "2", "--batch-size", "2", "--seq-len", "8",
                 "--hidden-size", "8"]) == 0
    return out


def interrupt(*_, **__):
    raise KeyboardInterrupt


def fail(*_, **__):
    raise RuntimeError("boom")


# --- one exit status convention ----------------------------------------------------------------

CASES = [  # (command line with {files}, {tmp}, {ckpt} filled in, patch or None, status)
    ("inspect {files}/good", None, 0),
    ("inspect {files}/mixed", None, 1),  # one good, one broken: some work failed
    ("inspect {files}/good --channels 16", None, 2),  # a refused option value
    ("inspect {tmp}/nothing-here/*.mid", None, 2),
    ("inspect", None, 2),  # bad usage (argparse)
    ("run --out {tmp}/r -p epochs 0", None, 2),  # a real refused parameter
    ("run --out {tmp}/holds", None, 2),  # the directory holds a run
    ("run --out {tmp}/r --to 01_parse", (runs, "run_series", fail), 1),  # a notebook failed
    ("run --out {tmp}/r --to 01_parse", (runs, "run_series", interrupt), 130),
    ("sweep --out {tmp}/s -p temperature 0", None, 2),
    ("sweep --out {tmp}/s -p temperature 0.5 1.0", (sweeps, "run_series", fail), 1),
    ("sweep --out {tmp}/s -p temperature 0.5", (sweeps, "run_series", interrupt), 130),
    ("corpus {files}/good --out {tmp}/c --no-cache --workers 1", None, 0),
    ("corpus {files}/mixed --out {tmp}/c --no-cache --workers 1", None, 1),  # saved; one skipped
    ("corpus {files}/bad --out {tmp}/c --no-cache --workers 1", None, 2),  # nothing readable
    ("corpus {files}/good --out {tmp}/c", (corpus, "read_corpus", interrupt), 130),
    ("train --data {files}/good --out {tmp}/m.pt --steps 0", None, 2),  # a refused parameter
    ("train --data {tmp}/nowhere --out {tmp}/m.pt --hidden-size 0", None, 2),  # before reading
    ("train --data {tmp}/nowhere --out {tmp}/m.pt", None, 2),  # a missing input
    ("train --data {files}/good --out {tmp}/m.pt --seq-len x", None, 2),  # bad usage
    ("generate --checkpoint {ckpt} --out {tmp}/g --n 1 --events 20", None, 0),
    ("generate --checkpoint {tmp}/none.pt --out {tmp}/g", None, 2),  # a missing checkpoint
    ("generate --checkpoint {ckpt} --out {tmp}/g --top-k -1", None, 2),
    ("generate --checkpoint {ckpt} --out {tmp}/g --primer {files}/bad/broken.mid", None, 2),
    ("report --checkpoint {files}/good/a.mid --data {tmp}/c", None, 2),  # not a checkpoint
    ("report --checkpoint {ckpt} --data {tmp}/nowhere", None, 2),  # not a corpus
]


@pytest.mark.parametrize("line, patch, status", CASES, ids=[c[0].split()[0] + f"-{c[2]}-{i}"
                                                             for i, c in enumerate(CASES)])
def test_every_command_ends_with_the_documented_exit_status(
        line, patch, status, files, checkpoint, tmp_path, monkeypatch, capsys):
    if patch is not None:
        monkeypatch.setattr(*patch)
    RunDir(tmp_path / "holds").save_json("manifest.json", {})
    argv = line.format(files=files, tmp=tmp_path, ckpt=checkpoint).split()
    try:
        got = main(argv)
    except SystemExit as done:  # argparse refuses bad usage itself
        got = done.code
    err = capsys.readouterr().err
    assert got == status, err
    assert "Traceback" not in err
    if status == 2 and not err.startswith("usage:"):  # refused: why, in one line
        assert err.strip().splitlines()[-1].startswith("error: "), err


def test_the_documented_statuses_are_in_every_help(capsys):
    for argv in (["--help"], ["inspect", "--help"], ["run", "--help"], ["train", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "exit status:" in text and all(f"\n  {code} " in text for code in (0, 1, 2, 130, 141))
    assert cli.EXIT_STATUS in cli.__doc__  # and in the module's own documentation


def test_batch_entry_point_shares_the_convention(files, tmp_path, capsys):
    assert batch_main(["corpus", str(files / "mixed"), "--out", str(tmp_path / "c"), "--no-cache",
                       "--workers", "1"]) == 1
    assert batch_main(["train", "--data", str(tmp_path / "nowhere"), "--out",
                       str(tmp_path / "m.pt")]) == 2
    with pytest.raises(SystemExit) as done:
        batch_main(["inspect", str(files)])  # not one of the corpus commands
    assert done.value.code == 2
    assert batch_cli_main is batch_main
    capsys.readouterr()


def test_a_closed_pipe_ends_with_141(files):
    many = " ".join([str(files / "good" / "a.mid")] * 400)
    command = f"{sys.executable} -m midilstm inspect {many} | head -1; echo ${{PIPESTATUS[0]}} >&2"
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.stderr.strip() == "141", result.stderr


# --- help: every option says what it does and its default ------------------------------------------

def subcommands(parser):
    (choices,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return choices.choices


@pytest.mark.parametrize("name", list(subcommands(cli.parser(full=True))))
def test_every_option_has_help_and_shows_its_default(name, capsys):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    command = subcommands(cli.parser(full=True))[name]
    for action in command._actions:
        if "-h" in action.option_strings:
            continue
        assert action.help and len(action.help) > 5, (name, action.dest)
        assert " ".join(action.help.split()[:4]) in text, (name, action.dest)
        default = action.default
        if action.option_strings and default not in (None, [], argparse.SUPPRESS) \
                and default is not False:
            assert f"(default: {default})" in text, (name, action.dest)


# --- torch only where it is needed -----------------------------------------------------------------

@pytest.mark.parametrize("argv", [["inspect", "{a}"], ["inspect", "--help"], ["run", "--help"],
                                  ["sweep", "--help"], ["--help"]])
def test_inspect_and_the_notebook_commands_do_not_import_torch(argv, files):
    argv = [a.format(a=files / "good" / "a.mid") for a in argv]
    code = ("import sys\nfrom midilstm.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.stdout.splitlines()[-1] == "False", result.stdout + result.stderr


# --- generate --top-k and --wav ---------------------------------------------------------------------

def test_generate_top_k_1_is_the_most_likely_path_and_wav_is_written_beside(checkpoint, tmp_path,
                                                                             capsys):
    out = tmp_path / "g"
    assert main(["generate", "--checkpoint", str(checkpoint), "--out", str(out), "--n", "2",
                 "--events", "40", "--top-k", "1", "--top-p", "1", "--wav"]) == 0
    printed = capsys.readouterr().out
    assert "sample_0.mid and sample_0.wav" in printed
    mids = sorted(out.glob("*.mid"))
    assert [p.name for p in mids] == ["sample_0.mid", "sample_1.mid"]
    assert mids[0].read_bytes() == mids[1].read_bytes()  # top-k 1: no choice left to chance
    for mid in mids:
        with wave.open(str(mid.with_suffix(".wav"))) as w:
            assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getnframes() > 0
    again = tmp_path / "h"
    assert main(["generate", "--checkpoint", str(checkpoint), "--out", str(again), "--n", "2",
                 "--events", "40", "--top-k", "1", "--top-p", "1", "--seed", "7"]) == 0
    assert (again / "sample_0.mid").read_bytes() == mids[0].read_bytes()  # whatever the seed
    assert not list(again.glob("*.wav"))  # only with --wav


def test_generate_without_top_k_samples_and_records_the_knobs(checkpoint, tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["generate", "--checkpoint", str(checkpoint), "--out", str(out), "--n", "2",
                 "--events", "60", "--top-k", "0", "--temperature", "2"]) == 0
    assert (out / "sample_0.mid").read_bytes() != (out / "sample_1.mid").read_bytes()
    capsys.readouterr()
