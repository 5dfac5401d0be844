"""Sweeps' and corpus reading's work on a Dask cluster (``midilstm.cluster``): a real
``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, started here from the
command line, as a user starts them on their machines (docs/cluster.md).

* a corpus read through the cluster is byte-identical to a local read (and the cache it
  fills is then used);
* a worker killed (SIGKILL) in the middle of a task: the task is run again on a worker, or
  its future says ``WorkerLost``; every other result is intact, and the lost attempt's
  process dies with its worker, so it never writes beside the retry;
* every refusal before anything runs is one line.
"""
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import off, on, tempo, write_midi_file
from midilstm import cluster, cluster_checks
from midilstm.corpus import read_corpus
from midilstm.errors import ParameterError

if importlib.util.find_spec("distributed") is None:
    pytest.skip("dask is not installed (pip install midilstm[cluster])", allow_module_level=True)

TESTS = Path(__file__).resolve().parent


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """The address of a scheduler with two single-threaded workers, each under its nanny (as
    ``dask worker`` runs by default), all separate processes."""
    import distributed  # here: the tasks' processes import this module, and need not it

    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])}  # the tasks below
    processes = []

    def start(args, name):
        log = open(folder / f"{name}.log", "wb")  # noqa: SIM115  closed with the process
        processes.append((subprocess.Popen([sys.executable, "-m", *args], stdout=log,
                                           stderr=subprocess.STDOUT, env=env, cwd=folder,
                                           start_new_session=True), log))

    try:
        start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
               "--no-dashboard", "--scheduler-file", str(scheduler_file)], "scheduler")
        _wait_for(scheduler_file.exists, 30, "the scheduler file")
        for i in range(2):
            start(["distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
                   "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1",
                   "--no-dashboard", "--name", f"worker{i}",
                   "--local-directory", str(folder / f"worker{i}")], f"worker{i}")
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=30)
            address = client.scheduler.address
        yield address
    finally:
        for process, log in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # its own session: it and its children
        for process, log in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()


# --- (a) a corpus read through the cluster is the local read, byte for byte ---------------------

@pytest.fixture
def songs(tmp_path):
    """40 pieces (three chunks of files), a byte-identical copy and a file that is not MIDI."""
    root = tmp_path / "songs"
    (root / "sub").mkdir(parents=True)
    for i in range(40):
        messages = [tempo((60, 75, 80, 96, 100, 120, 125, 150)[i % 8])]
        for k in range(5 + i % 7):
            pitch = 40 + (i * 5 + k * 3) % 45
            messages += [on(pitch, 50 + k), off(pitch, t=120 + 30 * (k % 3))]
        write_midi_file(root / ("sub" if i % 3 else "") / f"piece{i:02d}.mid", [messages])
    (root / "copy.mid").write_bytes((root / "piece00.mid").read_bytes())
    (root / "notes.mid").write_text("these are not MIDI bytes")
    return root


def _saved(corpus, folder) -> dict:
    corpus.save(folder)
    return {name: (folder / name).read_bytes()
            for name in ("events.npy", "offsets.npy", "corpus.json")}


def test_a_corpus_read_on_the_cluster_is_byte_identical_to_a_local_read(scheduler, songs,
                                                                         tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "songs", relative here: the workers started elsewhere
    local = read_corpus("songs", cache_dir=tmp_path / "local_cache", workers=2, progress=False)
    remote = read_corpus("songs", cache_dir=tmp_path / "cache", scheduler=scheduler,
                         progress=False)
    assert remote.stats == local.stats and local.stats["parsed"] == 41 and len(local) == 40
    assert remote.bad == local.bad and [b[0] for b in local.bad] == ["songs/notes.mid"]
    assert remote.duplicates == local.duplicates and len(local.duplicates) == 1
    assert _saved(remote, tmp_path / "remote") == _saved(local, tmp_path / "local")
    # the cluster's results were stored here: a second read parses nothing, same bytes
    warm = read_corpus("songs", cache_dir=tmp_path / "cache", scheduler=scheduler,
                       progress=False)
    assert warm.stats["parsed"] == 0 and warm.stats["cached"] == 41
    assert warm.events.tobytes() == local.events.tobytes()
    np.testing.assert_array_equal(warm.offsets, local.offsets)


def test_a_fast_corpus_read_on_the_cluster_is_byte_identical_to_a_local_read(scheduler, songs,
                                                                              tmp_path):
    pytest.importorskip("symusic")
    pytest.importorskip("numba")
    local = read_corpus(songs, cache_dir=None, workers=1, progress=False)
    remote = read_corpus(songs, cache_dir=tmp_path / "cache", scheduler=scheduler,
                         progress=False, fast=True)
    assert remote.stats == {**local.stats, "read_fast": 40}  # notes.mid: read_midi refuses it
    assert (remote.bad, remote.duplicates) == (local.bad, local.duplicates)
    fast, mido = _saved(remote, tmp_path / "remote"), _saved(local, tmp_path / "local")
    for name in ("events.npy", "offsets.npy"):  # corpus.json: its stats say read_fast
        assert fast[name] == mido[name]


# --- (c) refusals, one line each, before anything runs ------------------------------------------

def test_refusals_are_one_line(scheduler, songs, tmp_path, monkeypatch):
    with pytest.raises(ParameterError) as err:  # a file a worker reads otherwise
        with cluster.executor(scheduler, 1, same_files=[(songs / "piece00.mid", "0" * 64)]):
            pass
    assert "does not read" in str(err.value) and "same path" in str(err.value)
    with pytest.raises(ParameterError) as err:  # a folder a worker does not see
        with cluster.executor(scheduler, 1, same_files=[(tmp_path / "nowhere.mid", "0" * 64)]):
            pass
    assert "cannot read it" in str(err.value)
    why = cluster_checks._probe_answer("tcp://1.2.3.4:5", "it cannot read the probe file /x "
                                       "(No such file or directory)", "token")
    assert why.startswith("it cannot read the probe file")
    here = os.getpid()  # a worker whose midilstm differs from this process's
    monkeypatch.setattr(cluster_checks, "_worker_facts", lambda: {
        "code": "this one" if os.getpid() == here else "another", "where": str(os.getpid())})
    with pytest.raises(ParameterError) as err:
        with cluster.executor(scheduler, 1):
            pass
    assert "runs another midilstm than this process" in str(err.value)
    monkeypatch.undo()
    monkeypatch.setattr(cluster_checks, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(ParameterError) as err:
        with cluster.executor("tcp://127.0.0.1:9", 1):
            pass
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in str(err.value)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if dask were not installed
    with pytest.raises(ParameterError) as err:
        with cluster.executor(scheduler, 1):
            pass
    assert "pip install midilstm[cluster]" in str(err.value) and "\n" not in str(err.value)


def test_a_shared_folder_is_checked_and_left_clean(scheduler, tmp_path):
    out = tmp_path / "sweep"
    with cluster.executor(scheduler, 1, shared=[out]) as pool:
        assert pool.submit(pow, 3, 4).result() == 81
    assert out.is_dir() and list(out.iterdir()) == []  # the probe files are gone


# --- (b) a worker killed in the middle of a task ------------------------------------------------

def _task(i, folder, seconds):
    """A sweep point's stand-in: runs in its own process on a worker (``isolate``); its first
    attempt sleeps ``seconds``; writes its result once (a second writer fails)."""
    folder = Path(folder)
    first = not list(folder.glob(f"started-{i}-*"))
    (folder / f"started-{i}-{os.getpid()}").write_text(str(os.getppid()))
    time.sleep(seconds if first else 0.1)
    fd = os.open(folder / f"result-{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.write(fd, f"{i * i} {os.getpid()}".encode())
    os.close(fd)
    return i * i, os.getppid()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


def test_a_worker_killed_mid_task_is_retried_or_reported_and_nothing_is_mixed(scheduler,
                                                                            tmp_path):
    folder = tmp_path / "points"
    outcomes = []
    with cluster.executor(scheduler, 2, shared=[folder], isolate=True) as pool:
        futures = [pool.submit(_task, i, str(folder), 30 if i == 0 else 0.5) for i in range(4)]
        marker = _wait_for(lambda: list(folder.glob("started-0-*")), 30, "task 0 to start")[0]
        lost_process, lost_worker = int(marker.name.split("-")[2]), int(marker.read_text())
        os.kill(lost_worker, signal.SIGKILL)  # the worker running task 0, in its sleep
        for future in futures:
            try:
                outcomes.append(future.result(timeout=60))
            except cluster.WorkerLost as err:
                outcomes.append(err)
    assert [value for value, _ in outcomes[1:]] == [1, 4, 9]  # the others: intact
    _wait_for(lambda: not _alive(lost_process), 10, "the lost attempt's process to end")
    attempts = sorted(folder.glob("started-0-*"))
    if isinstance(outcomes[0], cluster.WorkerLost):  # reported failed, in one line
        assert "\n" not in str(outcomes[0]) and not (folder / "result-0").exists()
    else:  # retried on a live worker: its result, written once, by the retry
        value, worker = outcomes[0]
        assert value == 0 and worker != lost_worker and len(attempts) == 2
        retry = next(int(p.name.split("-")[2]) for p in attempts
                     if int(p.name.split("-")[2]) != lost_process)
        assert (folder / "result-0").read_text() == f"0 {retry}"
    for i in range(1, 4):
        assert (folder / f"result-{i}").read_text().startswith(f"{i * i} ")


def _ends_its_process(i):
    if i == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer does
    return i


def test_a_task_whose_process_dies_is_reported_failed_in_one_line(scheduler):
    with cluster.executor(scheduler, 2, isolate=True) as pool:
        futures = [pool.submit(_ends_its_process, i) for i in range(3)]
        assert futures[0].result(timeout=60) == 0 and futures[2].result(timeout=60) == 2
        with pytest.raises(cluster.WorkerLost) as err:
            futures[1].result(timeout=60)
    assert str(err.value) == ("the task: its process on the worker ended (signal SIGKILL) "
                              "before it finished")


# --- Ctrl-C: tasks not started are cancelled, running ones stopped as a local pool's are --------

_RUNNING = False


def _on_sigterm():
    """As ``sweeps._worker_signals``: SIGTERM interrupts a running task."""
    def stop(signum, frame):
        if _RUNNING:
            raise KeyboardInterrupt
        raise SystemExit(0)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)


def _marks_its_end(i, folder):
    global _RUNNING
    _RUNNING = True
    (Path(folder) / f"started-{i}").write_text("")
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        (Path(folder) / f"interrupted-{i}").write_text("")  # a point marks its run
        raise
    finally:
        _RUNNING = False


@pytest.mark.parametrize("where", ["local", "cluster"])
def test_ctrl_c_stops_running_tasks_and_cancels_the_rest(where, scheduler, tmp_path):
    folder = tmp_path / "points"
    folder.mkdir()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with cluster.executor(scheduler if where == "cluster" else None, 2, shared=[folder],
                              isolate=True, initializer=_on_sigterm) as pool:
            futures = [pool.submit(_marks_its_end, i, str(folder)) for i in range(5)]
            _wait_for(lambda: len(list(folder.glob("started-*"))) == 2, 30, "two tasks to start")
            raise KeyboardInterrupt  # as Ctrl-C does, in the middle of the wait
    # when the with block has ended, the running tasks have marked their end
    assert sorted(p.name for p in folder.glob("interrupted-*")) == \
        sorted(p.name.replace("started", "interrupted") for p in folder.glob("started-*"))
    assert len(list(folder.glob("started-*"))) == 2  # the other three never started
    assert all(f.done() for f in futures) and time.monotonic() - started < 30
    time.sleep(0.5)
    assert len(list(folder.glob("started-*"))) == 2


# --- a real sweep through the cluster: the music is the local sweep's ---------------------------

SMALL = {"epochs": [2], "n_events": [40], "n_variations": [1], "grid_events": [30],
         "grid_variations": [1], "temperatures": [[1.0]], "top_ks": [[0]]}


@pytest.mark.slow
def test_a_sweep_on_the_cluster_writes_the_music_of_a_local_sweep(request, tmp_path):
    import inspect

    from midilstm import sweeps
    if "scheduler" not in inspect.signature(sweeps.sweep).parameters:
        pytest.skip("sweeps.sweep takes no scheduler yet")
    scheduler = request.getfixturevalue("scheduler")
    grid = {**SMALL, "temperature": [0.8, 1.2]}
    local = sweeps.sweep(grid, tmp_path / "local", jobs=2, log=lambda *_: None)
    remote = sweeps.sweep(grid, tmp_path / "remote", scheduler=scheduler, log=lambda *_: None)
    assert [r["status"] for r in remote.rows] == [r["status"] for r in local.rows] == ["ok"] * 2
    music = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*")
                   if p.suffix in (".mid", ".wav", ".npz"))
    assert len([p for p in music if p.suffix == ".mid"]) >= 2
    for name in music:
        assert (tmp_path / "remote" / name).read_bytes() == \
            (tmp_path / "local" / name).read_bytes(), name
