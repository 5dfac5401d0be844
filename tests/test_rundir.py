"""Run directories: files that belong together, stale results marked, a lock against a second
run, prepare modes and unique names. The notebooks are stood in for by small fake artefacts:
what is tested is the bookkeeping, and it only looks at bytes and hashes."""
import ast
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import papermill
import pytest

from midilstm import params
from midilstm.errors import MidiInputError, ParameterError, RunDirError
from midilstm.rundir import LOCK_ENV, STEPS, RunDir, unique_run_name
from midilstm.runs import NOTEBOOK_DIR

ENCODED = ("codec.json", "events_train.npz", "events_val.npz", "codes_train.npz", "codes_val.npz")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def defaults():
    """Each notebook's own default parameters (without run_dir), as papermill reads them."""
    out = {}
    for name in params.SERIES:
        cell = papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
        out[name] = {k: ast.literal_eval(v["default"]) for k, v in cell.items() if k != "run_dir"}
    return out


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # messages name the run as the user did: runs/x
    monkeypatch.delenv(LOCK_ENV, raising=False)
    return RunDir("runs/x")


def fake_step(run, step, defaults, tag="1", **changes):
    """A notebook that succeeds: begin, write every output (content marked with ``tag``), complete."""
    run.begin(step, {**defaults[step], **changes})
    for name in STEPS[step].outputs:
        if name == "generated/":
            (run / "generated").mkdir(exist_ok=True)
            for i in range(2):
                (run / f"generated/sample_{i}.mid").write_text(f"midi {i} {tag}")
                (run / f"generated/sample_{i}.wav").write_text(f"wav {i} {tag}")
        elif name == "parse_report.json":
            run.save_parse_report([{"path": f"/music/{tag}.mid", "sha256": tag * 64}],
                                  [MidiInputError("/music/bad.mid", "not a MIDI file")])
        else:
            (run / name).write_text(f"{name} {tag} {sorted(changes.items())}")
    return run.complete(step, {"tag": tag, **changes})


def whole_series(run, defaults):
    for step in params.SERIES:
        fake_step(run, step, defaults)


def refusal(call) -> str:
    with pytest.raises(RunDirError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stale(run) -> dict:
    """``{step: reason}`` of the steps the manifest marks stale, as a reader of it sees them."""
    return {name: record["stale"] for name, record in run.manifest()["steps"].items()
            if "stale" in record}


# --- files that belong together --------------------------------------------------------------

def test_train_alone_in_a_fresh_directory_says_which_notebook_to_run(run, defaults):
    assert refusal(lambda: run.begin("03_train", defaults["03_train"])) == \
        "runs/x: codec.json is missing: run 02_encode first"
    assert refusal(lambda: run.begin("02_encode", defaults["02_encode"])) == \
        "runs/x: events.npz is missing: run 01_parse first"
    assert refusal(lambda: run.begin("05_evaluate", defaults["05_evaluate"])) == \
        "runs/x: model.pt is missing: run 03_train first"
    assert run.begin("01_parse", defaults["01_parse"])["piece"] == "default"


def test_complete_records_params_and_hashes_that_match_the_files(run, defaults):
    whole_series(run, defaults)
    manifest = json.loads((run / "manifest.json").read_text())
    for step in params.SERIES:
        record = manifest["steps"][step]
        assert record["params"] == defaults[step]
        assert "stale" not in record
        for name, digest in {**record["inputs"], **record["outputs"]}.items():
            assert digest == sha(run / name), (step, name)
    assert set(manifest["steps"]["03_train"]["inputs"]) == {
        "codec.json", "codes_train.npz", "codes_val.npz", "parse_report.json"}
    assert set(manifest["steps"]["04_generate"]["outputs"]) == {
        f"generated/sample_{i}.{ext}" for i in range(2) for ext in ("mid", "wav")}
    assert set(manifest["steps"]["05_evaluate"]["inputs"]) >= {"generated/sample_1.wav", "model.pt"}
    assert manifest["seeds"] == {"02_encode": 0, "03_train": 0, "04_generate": 0, "05_evaluate": 0}
    assert manifest["data"] == {"/music/1.mid": "1" * 64}
    assert manifest["skipped"] == [{"path": "/music/bad.mid", "reason": "not a MIDI file"}]
    assert {"created", "versions", "git"} <= set(manifest)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"parse", "encode", "train", "generate", "evaluate"}
    assert not any("stale" in section for section in metrics.values())
    assert [p.name for p in run.generated_files()] == [
        "sample_0.mid", "sample_0.wav", "sample_1.mid", "sample_1.wav"]


def test_re_encoding_refuses_the_old_model_until_03_train_re_runs(run, defaults):
    whole_series(run, defaults)
    fake_step(run, "02_encode", defaults, tag="2", n_time_bins=16)
    expected = "runs/x: codec.json changed after 03_train made model.pt (02_encode re-ran): re-run 03_train"
    assert refusal(lambda: run.begin("05_evaluate", defaults["05_evaluate"])) == expected
    assert refusal(lambda: run.begin("04_generate", defaults["04_generate"])) == expected
    fake_step(run, "03_train", defaults, tag="2")
    assert refusal(lambda: run.begin("05_evaluate", defaults["05_evaluate"])) == (
        "runs/x: model.pt changed after 04_generate made generated/ (03_train re-ran): re-run 04_generate")
    fake_step(run, "04_generate", defaults, tag="2")
    fake_step(run, "05_evaluate", defaults, tag="2")
    assert stale(run) == {}


def test_a_notebook_re_run_alone_keeps_the_runs_output_hashes_true(run, defaults):
    whole_series(run, defaults)
    run.finish({"parameters": {}})
    fake_step(run, "03_train", defaults, tag="2")
    outputs = run.manifest()["outputs"]
    assert outputs["model.pt"] == sha(run / "model.pt")
    assert outputs["metrics.json"] == sha(run / "metrics.json")


def test_downstream_results_are_marked_stale_and_cleared_when_re_run(run, defaults):
    whole_series(run, defaults)
    fake_step(run, "02_encode", defaults, tag="2", n_time_bins=16)
    manifest = json.loads((run / "manifest.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    for step in ("03_train", "04_generate", "05_evaluate"):
        assert manifest["steps"][step]["stale"] == "02_encode re-ran after this"
        assert metrics[STEPS[step].section]["stale"] == "02_encode re-ran after this"
    assert "stale" not in manifest["steps"]["02_encode"] and "stale" not in metrics["encode"]
    assert manifest["steps"]["02_encode"]["params"]["n_time_bins"] == 16
    assert metrics["encode"] == {"tag": "2", "n_time_bins": 16}

    fake_step(run, "03_train", defaults, tag="2")
    manifest = json.loads((run / "manifest.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert "stale" not in manifest["steps"]["03_train"] and "stale" not in metrics["train"]
    assert metrics["generate"]["stale"] == "03_train re-ran after this"
    assert stale(run) == {"04_generate": "03_train re-ran after this",  # the first cause:
                          "05_evaluate": "02_encode re-ran after this"}  # 05 reads codec.json


def test_re_parsing_makes_everything_after_it_stale_and_names_the_first_to_re_run(run, defaults):
    whole_series(run, defaults)
    fake_step(run, "01_parse", defaults, tag="2")
    assert set(stale(run)) == {"02_encode", "03_train", "04_generate", "05_evaluate"}
    assert refusal(lambda: run.begin("03_train", defaults["03_train"])) == (
        "runs/x: events.npz changed after 02_encode made codec.json (01_parse re-ran): re-run 02_encode")
    message = refusal(lambda: run.begin("04_generate", defaults["04_generate"]))
    assert message.endswith("re-run 02_encode and the notebooks after it")


def test_a_failed_step_records_nothing_and_its_partial_files_are_refused(run, defaults):
    whole_series(run, defaults)
    before = json.loads((run / "manifest.json").read_text())
    with pytest.raises(ParameterError, match="n_time_bins"):  # fails before it starts
        run.begin("02_encode", {**defaults["02_encode"], "n_time_bins": 0})
    run.begin("02_encode", {**defaults["02_encode"], "n_time_bins": 8})
    (run / "codec.json").write_text("a new codec, then the notebook fails")  # no complete()
    after = json.loads((run / "manifest.json").read_text())
    assert after["steps"] == before["steps"]
    assert after["steps"]["02_encode"]["params"]["n_time_bins"] == 32
    assert refusal(lambda: run.begin("03_train", defaults["03_train"])) == (
        "runs/x: codec.json is not the file 02_encode recorded (a later 02_encode did not finish, "
        "or it was edited): re-run 02_encode")
    assert refusal(lambda: run.begin("04_generate", defaults["04_generate"])) == (
        "runs/x: model.pt was made from files that are now stale: codec.json changed after "
        "03_train read it (a later 02_encode did not finish, or it was edited); re-run 02_encode "
        "and the notebooks after it")


def test_complete_refuses_without_begin_or_outputs_and_then_records_nothing(run, defaults):
    fake_step(run, "01_parse", defaults)
    assert "without begin" in refusal(lambda: run.complete("02_encode"))
    run.begin("02_encode", defaults["02_encode"])
    (run / "codec.json").write_text("only the codec")
    assert refusal(lambda: run.complete("02_encode")) == "runs/x: 02_encode did not write events_train.npz"
    assert "02_encode" not in json.loads((run / "manifest.json").read_text())["steps"]


def test_an_input_that_changes_while_the_step_runs_is_not_recorded(run, defaults):
    fake_step(run, "01_parse", defaults)
    run.begin("02_encode", defaults["02_encode"])
    (run / "events.npz").write_text("01_parse ran again meanwhile")
    for name in ENCODED:
        (run / name).write_text(name)
    assert refusal(lambda: run.complete("02_encode")) == \
        "runs/x: events.npz changed while 02_encode ran: re-run 02_encode"


def test_begin_validates_parameters_before_looking_at_files(run, defaults):
    with pytest.raises(ParameterError) as info:
        run.begin("03_train", {**defaults["03_train"], "epochs": "ten"})
    assert str(info.value) == "parameter epochs: must be an integer >= 1, got 'ten'"
    with pytest.raises(ParameterError, match="epochs: must be an integer >= 1, got 0"):
        run.begin("03_train", {**defaults["03_train"], "epochs": 0})
    assert run.begin("01_parse", defaults["01_parse"]) == defaults["01_parse"]  # no run_dir added
    assert run.begin("01_parse", {**defaults["01_parse"], "run_dir": "runs/x"})["run_dir"] == "runs/x"
    assert run.begin("01_parse", {**defaults["01_parse"], "channels": 3})["channels"] == [3]


def test_a_metrics_section_without_a_successful_step_is_marked(run, defaults):
    run.save_json("metrics.json", {"train": {"val_nll": 3.0}})  # left by an older or failed run
    fake_step(run, "01_parse", defaults)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["stale"] == "not recorded by a successful 03_train"


def test_a_tampered_manifest_gives_one_line(run, defaults):
    fake_step(run, "01_parse", defaults)
    (run / "manifest.json").write_text('{"steps": ')
    message = refusal(lambda: run.begin("02_encode", defaults["02_encode"]))
    assert message.startswith("runs/x: manifest.json is not valid JSON (")
    (run / "manifest.json").write_text("[1, 2]")
    assert "manifest.json is not a JSON object" in refusal(lambda: run.set_status("running"))


def test_names_read_from_files_stay_inside_the_run(run):
    assert run.inside("generated/sample_0.mid") == (run / "generated/sample_0.mid").resolve()
    assert "points outside the run directory" in refusal(lambda: run.inside("../../etc/passwd"))
    assert "points outside" in refusal(lambda: run.inside("/etc/passwd"))


def test_parse_report_old_and_new_formats_and_finish(run):
    run.save_json("parse_report.json", [{"path": "a.mid", "sha256": "ab" * 32}])  # older runs
    assert run.parse_report() == {"read": [{"path": "a.mid", "sha256": "ab" * 32}], "skipped": []}
    run.save_parse_report([{"path": "b.mid", "sha256": "cd" * 32}],
                          [{"path": "c.mid", "reason": "truncated"}])
    assert run.data_hashes() == ["cd" * 32]
    manifest = run.finish({"parameters": {"seed": 1}})
    assert manifest["inputs"] == {"b.mid": "cd" * 32}
    assert manifest["outputs"] == {"parse_report.json": sha(run / "parse_report.json")}


def test_status_is_recorded_with_time_and_one_line_error(run):
    run.set_status("running")
    manifest = run.set_status("failed", "CodecError: codec.json:\n bad edges")
    assert manifest["status"]["state"] == "failed"
    assert manifest["status"]["error"] == "CodecError: codec.json: bad edges"
    assert manifest["status"]["time"][:4].isdigit()
    assert run.set_status("complete")["status"]["error"] is None
    with pytest.raises(ValueError, match="state must be one of"):
        run.set_status("done")


# --- sharing ---------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys
    from midilstm.rundir import RunDir
    with RunDir(sys.argv[1]).lock():
        print("locked", flush=True)
        sys.stdin.readline()
""")

KERNEL = textwrap.dedent("""
    import sys
    from midilstm.errors import RunDirError
    from midilstm.rundir import RunDir
    try:
        RunDir(sys.argv[1]).begin("01_parse", {"piece": "default", "channels": None,
            "include_drums": False, "sustain_pedal": False, "out_of_range": "fold"})
        print("began")
    except RunDirError as err:
        print(err)
""")


def python(code, *args, env=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, **kw)


def test_a_second_process_is_refused_while_a_run_holds_the_lock(run, defaults):
    holder = python(HOLDER, run.path)
    try:
        assert holder.stdout.readline() == "locked\n"
        message = refusal(lambda: run.lock().__enter__())
        assert message.startswith(f"runs/x: another run is using this directory (pid {holder.pid}, since ")
        assert refusal(lambda: run.begin("01_parse", defaults["01_parse"])) == message
        assert refusal(lambda: run.prepare("resume")) == message
        env = {k: v for k, v in os.environ.items() if k != LOCK_ENV}
        kernel = python(KERNEL, run.path, env=env)
        assert kernel.communicate(timeout=60)[0].startswith("runs/x: another run is using")
    finally:
        holder.communicate("\n", timeout=60)
    with run.lock():  # free again once the holder has gone
        run.begin("01_parse", defaults["01_parse"])


def test_the_runs_own_notebook_kernels_may_begin_under_its_lock(run):
    with run.lock():
        token = os.environ[LOCK_ENV]
        own = python(KERNEL, run.path)  # inherits the token, as papermill's kernels do
        assert own.communicate(timeout=60)[0] == "began\n"
        other = python(KERNEL, run.path, env={LOCK_ENV: "not-the-token"})
        assert "another run is using this directory" in other.communicate(timeout=60)[0]
    assert LOCK_ENV not in os.environ and token


def test_a_killed_run_leaves_no_lock_behind(run):
    holder = python(HOLDER, run.path)
    assert holder.stdout.readline() == "locked\n"
    holder.kill()  # SIGKILL: no finally clause runs; the kernel drops the flock
    holder.wait(timeout=60)
    with run.lock():
        assert run.prepare("new") == []


def test_lock_is_released_when_the_with_block_fails(run):
    with pytest.raises(KeyError), run.lock():
        raise KeyError("boom")
    with run.lock():
        pass


def test_prepare_new_refuses_a_directory_holding_a_run(run, defaults):
    (run / "notes.txt").write_text("not ours")
    assert run.prepare("new") == []  # foreign files do not count
    fake_step(run, "01_parse", defaults)
    message = refusal(lambda: run.prepare("new"))
    assert message == ("runs/x: already holds a run (manifest.json, metrics.json, events.npz, "
                       "parse_report.json): use --force to start clean or --resume to keep it and re-run")


def test_prepare_force_removes_only_ours_and_resume_keeps_everything(run, defaults):
    whole_series(run, defaults)
    (run / "notebooks").mkdir()
    (run / "notebooks/03_train.ipynb").write_text("{}")
    (run / "notes.txt").write_text("mine")
    (run / "generated/my_recording.mid").write_text("mine too")
    (run / ".codec.json.abc123.tmp").write_text("left by a killed write")
    kept = sorted(p.relative_to(run.path) for p in run.path.rglob("*") if p.is_file())
    assert run.prepare("resume") == [
        "manifest.json", "metrics.json", "codec.json", "codes_train.npz", "codes_val.npz", "events.npz", "events_train.npz",
        "events_val.npz", "history.json", "model.pt", "parse_report.json", "generated/", "notebooks/"]
    now = sorted(p.relative_to(run.path) for p in run.path.rglob("*") if p.is_file())
    assert now == [p for p in kept if p.name != ".codec.json.abc123.tmp"]
    run.prepare("force")
    left = sorted(str(p.relative_to(run.path)) for p in run.path.rglob("*") if p.is_file())
    assert left == ["generated/my_recording.mid", "notes.txt"]
    assert not (run / "notebooks").exists()
    assert run.prepare("new") == []


def test_prepare_force_will_not_empty_a_folder_that_is_not_a_run(run):
    (run / "notebooks").mkdir()
    (run / "notebooks/01_parse.ipynb").write_text("the course itself")
    assert "not a run of ours" in refusal(lambda: run.prepare("force"))
    assert (run / "notebooks/01_parse.ipynb").exists()
    with pytest.raises(ValueError, match="mode must be one of"):
        run.prepare("overwrite")


def test_unique_run_names_differ_within_a_second_and_across_processes(tmp_path):
    names = [unique_run_name(tmp_path / "runs") for _ in range(200)]
    assert len(set(names)) == 200 and all(p.is_dir() for p in names)
    with ProcessPoolExecutor(2) as pool:
        more = list(pool.map(unique_run_name, [tmp_path / "runs"] * 40))
    assert len(set(names + more)) == 240
    assert RunDir(names[0]).prepare("new") == []


# --- interruption leftovers -------------------------------------------------------------------

RUNNING = textwrap.dedent("""
    import sys
    from midilstm.rundir import RunDir
    run = RunDir(sys.argv[1])
    with run.lock():
        run.set_status("running")
        print("running", flush=True)
        sys.stdin.readline()
""")


def test_a_killed_runs_running_reads_interrupted_the_next_time_anyone_looks(run):
    holder = python(RUNNING, run.path)
    try:
        assert holder.stdout.readline() == "running\n"
        assert RunDir(run.path).manifest()["status"]["state"] == "running"  # alive, holding it
    finally:
        holder.kill()  # SIGKILL: its status stays "running" in the file
        holder.wait(timeout=60)
    assert json.loads((run / "manifest.json").read_text())["status"]["state"] == "running"
    status = RunDir(run.path).manifest()["status"]
    assert status["state"] == "interrupted" and f"pid {holder.pid}" in status["error"]
    assert "\n" not in status["error"] and "killed" in status["error"]
    with run.lock():
        run.prepare("resume")  # the next run sets it right in the file too
    assert json.loads((run / "manifest.json").read_text())["status"]["state"] == "interrupted"


def test_a_dead_pid_means_interrupted_even_when_the_lock_cannot_be_read(run):
    run.save_json("manifest.json", {"status": {"state": "running", "pid": 2 ** 22 + 12345}})
    (run / ".midilstm.lock").symlink_to("/nonexistent")
    assert run.manifest()["status"]["state"] == "interrupted"
    (run / ".midilstm.lock").unlink()
    run.set_status("running")  # this process: alive, whether it holds the lock or not
    assert run.manifest()["status"]["state"] == "running"


def test_partial_checkpoints_and_temporaries_are_cleaned_by_the_next_run(run):
    (run / ".model.pt.partial").write_bytes(b"half a checkpoint")  # training was killed
    (run / ".history.json.123.abcdef12.tmp").write_text("{")
    (run / "notebooks").mkdir()
    (run / "notebooks" / ".03_train.4242.abcdef12.tmp.ipynb").write_text("{")
    (run / "notes.partial").write_text("not ours")
    with run.lock():
        run.prepare("resume")
    left = sorted(str(p.relative_to(run.path)) for p in run.path.rglob("*") if p.is_file())
    assert left == [".midilstm.lock", "notes.partial"]
