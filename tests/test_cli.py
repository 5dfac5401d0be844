"""``python -m midilstm inspect``: one JSON object per file per line, and bad files reported on
one stderr line each, never with a traceback."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import off, on, tempo

from midilstm.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "midilstm", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def two_files(tmp_path, build_midi):
    a = build_midi(tmp_path, name="a.mid", tracks=[[tempo(120)], [on(60, 80), off(60, t=480)]])
    b = build_midi(tmp_path, name="b.mid", type=0, tracks=[[
        on(62, 80, channel=1), off(62, t=960, channel=1), on(36, 90, channel=9),
        off(36, t=240, channel=9)]])
    return a, b


def test_inspect_json_prints_one_object_per_file_per_line(two_files):
    a, b = two_files
    result = run_cli("inspect", a, b, "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    reports = [json.loads(line) for line in lines]
    assert [r["path"] for r in reports] == [str(a), str(b)]
    assert [r["kept_notes"] for r in reports] == [1, 1]
    assert reports[0]["duration_s"] == pytest.approx(0.5)
    assert reports[1]["duration_s"] == pytest.approx(1.25)
    assert reports[1]["dropped"]["drums"] == 1
    assert result.stderr == ""


def test_inspect_broken_file_fails_with_one_line_and_no_traceback(tmp_path, two_files):
    a, _ = two_files
    broken = tmp_path / "broken.mid"
    broken.write_bytes(a.read_bytes()[:40])  # cut inside the first track
    result = run_cli("inspect", a, broken, "--json")
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [str(a)]
    err_lines = result.stderr.strip().splitlines()
    assert len(err_lines) == 1 and str(broken) in err_lines[0]


HEADER_0 = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0"  # type 0, 1 track, 480 ppq
ZERO_TRACKS = b"MThd\x00\x00\x00\x06\x00\x01\x00\x00\x01\xe0"  # type 1, 0 tracks
NINE_SHARPS = HEADER_0 + b"MTrk\x00\x00\x00\x0a\x00\xff\x59\x02\x09\x00\x00\xff\x2f\x00"


@pytest.mark.parametrize("data", [b"", b"not midi at all", ZERO_TRACKS, NINE_SHARPS],
                         ids=["empty", "text", "zero_tracks", "bad_key_signature"])
def test_inspect_in_process_reports_bad_files_on_one_line(tmp_path, capsys, data):
    path = tmp_path / "bad.mid"
    path.write_bytes(data)
    assert main(["inspect", str(path), "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ")


def test_inspect_folder_and_options(tmp_path, two_files, capsys):
    assert main(["inspect", str(tmp_path), "--json", "--channels", "1"]) == 1  # a.mid: nothing
    out, err = capsys.readouterr()
    assert [json.loads(line)["path"] for line in out.splitlines()] == [str(two_files[1])]
    assert "a.mid" in err and "channel 0" in err
    assert main(["inspect", str(two_files[1]), "--json", "--drums"]) == 0
    assert json.loads(capsys.readouterr().out)["kept_notes"] == 2


def test_inspect_refuses_a_bad_channel_in_one_line(two_files, capsys):
    assert main(["inspect", str(two_files[0]), "--channels", "16"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: parameter channels: ") and err.count("\n") == 1
    assert "0..15" in err and "16" in err


def test_inspect_summary_text(two_files, capsys):
    assert main(["inspect", str(two_files[0])]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{two_files[0]}: type 1, 2 tracks, 480 ticks per beat")
    assert "kept 1 notes = 2 events, 0.5 s" in out


def test_inspect_nothing_found(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "*.mid")]) == 2
    assert "no MIDI files found" in capsys.readouterr().err


def test_help_has_examples_no_markup_and_no_maintainer_commands(capsys):
    for args in (["--help"], ["run", "--help"], ["sweep", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(args)
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and "python -m midilstm " in text
        assert "``" not in text and ":func:" not in text and "refresh-notebooks" not in text
    main_help = run_cli("--help").stdout
    assert "{inspect,run,sweep,student-edition,corpus,train,generate,report}" in main_help
    run_help = run_cli("run", "--help").stdout
    assert "--force" in run_help and "--resume" in run_help
    assert "epochs" in run_help and "an integer >= 1" in run_help and "top_p" in run_help


def test_inspect_into_a_closed_pipe_ends_quietly(tmp_path, two_files):
    a, _ = two_files
    command = f"{sys.executable} -m midilstm inspect {' '.join([str(a)] * 400)} | head -1"
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.stdout.startswith(str(a)) and result.stdout.count("\n") == 1
    assert result.stderr == ""


def test_inspect_goes_on_past_a_reader_bug_in_one_line(tmp_path, two_files, capsys, monkeypatch):
    import midilstm.parse as parse
    a, b = two_files
    real = parse.read_midi

    def buggy(path, *args, **kw):  # an unforeseen failure on the first file only
        if str(path) == str(a):
            raise RuntimeError("boom")
        return real(path, *args, **kw)

    monkeypatch.setattr(parse, "read_midi", buggy)
    assert main(["inspect", str(a), str(b)]) == 1
    out, err = capsys.readouterr()
    assert f"{a}: reader failed (RuntimeError: boom)" in err and len(err.strip().splitlines()) == 1
    assert str(b) in out  # the other file is still reported
