"""A run directory: how the notebooks hand their results to each other, through files.

Each notebook reads what the previous one wrote and writes its own artifacts, so any of them
can run alone given the earlier outputs::

    run_dir/
      manifest.json        status, versions, git commit, seeds, data hashes, and per step:
                           its parameters, the hashes of what it read and wrote, when it ran
      metrics.json         every step's figures, one section per notebook
      events.npz           01: the parsed pieces (EVENT_DTYPE arrays) and their names
      parse_report.json    01: {"read": [report per file], "skipped": [{path, reason}]}
      events_train.npz     02: the training pieces (events), and events_val.npz
      codec.json           02: the fitted codec (time-bin edges)
      codes_train.npz      02: encoded training pieces, and codes_val.npz
      model.pt             03: the best checkpoint
      history.json         03: per-epoch training and validation metrics
      generated/           04: sample_<i>.mid and .wav
      notebooks/           the executed notebooks (when run by `python -m midilstm run`)
      .midilstm.lock       held (flock) by the run that is using the directory

Files that belong together: each notebook starts with ``run.begin(step, params)`` and ends
with ``run.complete(step, metrics)``. ``complete`` records, only when the step succeeded, its
parameters and the sha256 of every file it read and wrote. ``begin`` refuses to start when an
input is missing, or is not the file its maker recorded, or its maker's own inputs have changed
since (an upstream notebook re-ran), naming the notebook to re-run. A step whose inputs changed
is marked ``"stale"`` in the manifest and in its metrics section, so nothing stale passes for
current. The rules (which step reads and writes which files, what makes one stale) are
``staleness``; the lock that keeps a second run out is ``lock``.

Every write is atomic, so an interrupted step never leaves a half-written artifact. Nothing
is written, appended to, locked or deleted through a symbolic link: every write below the run
directory goes through the folders' descriptors with ``O_NOFOLLOW`` (``files``), and a link in
the place of one of our files or folders is refused in one line naming it, by ``prepare`` (before
a run starts), ``begin``/``ready`` (before a notebook writes) and at each write. A manifest that
says "running" while no live process holds the lock (the run was killed) reads "interrupted".
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import time
from pathlib import Path

import numpy as np

from . import params as _params
from .errors import RunDirError
from .files import (
    refuse_link,
    register_root,
    write_bytes_atomic,
    write_json_atomic,
)
from . import owned
from .lock import LOCK_ENV, LOCK_FILE, DirLock, now
from .owned import OUR_FILES, OUR_FOLDERS  # noqa: F401  (importable from here)
from .provenance import git_commit, sha256_file, stamp
from .staleness import (
    GENERATED,
    MAKER,
    ORDER,
    STEPS,
    Step,
    input_problem,
    mark_stale,
    step_spec,
    view,
)

__all__ = ["GENERATED", "LOCK_ENV", "LOCK_FILE", "MAKER", "ORDER", "STEPS", "RunDir", "Step",
           "git_commit", "unique_run_name"]

STATES = ("running", "failed", "complete", "interrupted")
PREPARE_MODES = ("new", "force", "resume")

class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunDirError(self.path, f"cannot create the run directory ({err.strerror})") from None
        register_root(self.path, self._label())  # every write below it: no link followed
        self._begun: dict = {}  # step -> {params, inputs, started, clock}
        self._lock = DirLock(self.path, self._label)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name) -> Path:
        return self.path / name

    # --- artifacts -----------------------------------------------------------------------------
    def save_pieces(self, name: str, pieces: list, labels: list[str]) -> Path:
        """Several arrays (one per piece) in one .npz, in order, with their labels."""
        arrays = {f"piece_{i:04d}": p for i, p in enumerate(pieces)}
        buffer = io.BytesIO()
        np.savez(buffer, labels=np.array(labels, dtype=str), **arrays)
        return write_bytes_atomic(self / name, buffer.getvalue(), root=self.path)

    def load_pieces(self, name: str) -> tuple[list, list[str]]:
        path = self / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the notebook that writes it first")
        with np.load(path) as data:
            keys = sorted(k for k in data.files if k.startswith("piece_"))
            return [data[k] for k in keys], data["labels"].tolist()

    def save_json(self, name: str, obj) -> Path:
        return write_json_atomic(self / name, obj, root=self.path)

    def load_json(self, name: str):
        path = self / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the notebook that writes it first")
        return json.loads(path.read_text())

    def inside(self, name) -> Path:
        """``run / name``, refused when ``name`` (read from a file) points outside the run."""
        path = (self.path / name).resolve()
        if not path.is_relative_to(self.path.resolve()):
            raise RunDirError(self._label(), f"{name!r} points outside the run directory")
        return path

    def save_parse_report(self, reports: list, skipped: list) -> Path:
        """parse_report.json: ``{"read": [report dicts], "skipped": [{"path", "reason"}]}``;
        ``skipped`` holds MidiInputErrors (or such dicts) for the files that could not be read."""
        skipped = [s if isinstance(s, dict) else {"path": str(s.path), "reason": s.reason}
                   for s in skipped]
        return self.save_json("parse_report.json", {"read": list(reports), "skipped": skipped})

    def parse_report(self) -> dict:
        """parse_report.json as ``{"read": [...], "skipped": [...]}`` (older runs wrote a list)."""
        report = self.load_json("parse_report.json")
        return {"read": report, "skipped": []} if isinstance(report, list) else report

    def data_hashes(self) -> list[str]:
        """The sha256 of every MIDI file 01_parse read, in order."""
        return [r["sha256"] for r in self.parse_report()["read"]]

    def generated_files(self) -> list[Path]:
        """The files 04_generate wrote and recorded (sorted), each checked to lie in the run."""
        record = self.manifest().get("steps", {}).get("04_generate", {})
        names = sorted(n for n in record.get("outputs", {}) if n.startswith(GENERATED))
        if not names:
            raise RunDirError(self._label(), "no generated files recorded: run 04_generate first")
        return [self.inside(n) for n in names]

    # --- steps: begin and complete -------------------------------------------------------------
    def begin(self, step: str, params: dict) -> dict:
        """At the top of a notebook: validate ``params`` (``run_dir`` may be left out), check
        that the directory is not in use by another run, and that the step's inputs exist and
        belong together. Returns the validated, normalised parameters (the names given);
        raises ParameterError or RunDirError in one line."""
        spec = step_spec(step)
        given = set(params)
        params = _params.validate({"run_dir": str(self.path), **params}, step)
        self._lock.refuse_if_held_by_other()
        self.refuse_links(spec.outputs)
        snapshot = self.snapshot()
        problem = input_problem(spec, self.manifest().get("steps", {}), snapshot)
        if problem:
            raise RunDirError(self._label(), problem)
        self._begun[step] = {"params": {k: v for k, v in params.items() if k != "run_dir"},
                             "inputs": view(snapshot, spec.inputs), "started": now(),
                             "clock": time.monotonic()}
        return {k: v for k, v in params.items() if k in given}

    def ready(self, step: str, values: dict) -> dict:
        """Before a notebook cell writes: the step's setup cell ran (``begin``), the step's
        parameters in ``values`` (the notebook's ``globals()``) are still those it began with,
        and its inputs are still there and belong together. So whatever order the cells ran
        in, what a cell writes is what the run records. Returns the parameters; raises
        ``RunDirError`` in one line, naming what to re-run, before anything is written."""
        begun = self._begun.get(step)
        if begun is None:
            raise RunDirError(self._label(), f"run {step}'s setup cell (the one after the "
                                             f"parameters) first")
        for name, value in begun["params"].items():
            if name in values and _params.check(name, values[name]) != value:
                raise RunDirError(self._label(), f"{name} is {values[name]!r} now but {step} "
                                  f"began with {value!r}: re-run its setup cell, then this one")
        spec = step_spec(step)
        self.refuse_links(spec.outputs)
        snapshot = self.snapshot()
        problem = input_problem(spec, self.manifest().get("steps", {}), snapshot)
        if problem is None and view(snapshot, spec.inputs) != begun["inputs"]:
            problem = f"the inputs of {step} changed since its setup cell ran: re-run it"
        if problem:
            raise RunDirError(self._label(), problem)
        return dict(begun["params"])

    def complete(self, step: str, metrics: dict | None = None) -> dict:
        """At the end of a notebook that succeeded: record the step (parameters, input and
        output hashes, time) in the manifest, write ``metrics`` as its metrics.json section, and
        mark every step downstream whose inputs changed as stale. Returns the manifest. Run
        again (the cell re-run), it records the step again."""
        spec = step_spec(step)
        begun = self._begun.get(step)
        if begun is None:
            raise RunDirError(self._label(), f"complete({step!r}) without begin({step!r}) first")
        snapshot = self.snapshot()
        inputs, outputs = view(snapshot, spec.inputs), view(snapshot, spec.outputs)
        changed = sorted(k for k in set(inputs) | set(begun["inputs"])
                         if inputs.get(k) != begun["inputs"].get(k))
        if changed:
            raise RunDirError(self._label(), f"{changed[0]} changed while {step} ran: re-run {step}")
        missing = [n for n in spec.outputs if not view(snapshot, [n])]
        if missing:
            raise RunDirError(self._label(), f"{step} did not write {missing[0]}")
        manifest = self.manifest()
        stamp(manifest)
        manifest.setdefault("steps", {})[step] = {
            "params": begun["params"], "inputs": inputs, "outputs": outputs,
            "started": begun["started"], "completed": now(),
            "seconds": round(time.monotonic() - begun["clock"], 3)}
        if "seed" in begun["params"]:
            manifest.setdefault("seeds", {})[step] = begun["params"]["seed"]
        if step == "01_parse":
            report = self.parse_report()
            manifest["data"] = {r["path"]: r["sha256"] for r in report["read"]}
            manifest["skipped"] = report["skipped"]
        all_metrics = self._read("metrics.json")
        if metrics is not None:
            all_metrics[spec.section] = dict(metrics)
        mark_stale(manifest, all_metrics, snapshot)
        self.save_json("metrics.json", all_metrics)
        if "outputs" in manifest:  # a whole run's hashes (finish()): kept true after a re-run
            manifest["outputs"] = self._file_hashes()
        self.save_json("manifest.json", manifest)
        return manifest

    def snapshot(self) -> dict:
        """``{file: sha256}`` of every step artefact present now (generated/ files one by one)."""
        names = [n for n in MAKER if n != GENERATED and (self / n).is_file()]
        folder = self / GENERATED
        if folder.is_dir():
            names += [f"{GENERATED}{p.name}" for p in sorted(folder.iterdir())
                      if p.is_file() and not p.name.startswith(".")]
        return {name: sha256_file(self / name) for name in names}

    # --- bookkeeping ---------------------------------------------------------------------------
    def manifest(self) -> dict:
        """manifest.json ({} when absent); a status "running" that no live process holds the
        lock for (the run was killed) reads "interrupted", with the reason as its error."""
        manifest = self._read("manifest.json")
        status = manifest.get("status")
        if isinstance(status, dict) and status.get("state") == "running" and self._lock.holder_gone(status.get("pid")):
            manifest["status"] = {**status, "state": "interrupted", "error": (
                f"the run (pid {status.get('pid', '?')}) ended without finishing: it was killed "
                f"or its machine stopped")}
        return manifest

    def set_status(self, state: str, error: str | None = None) -> dict:
        """The run's state in the manifest: running, failed (with the one-line error),
        complete or interrupted, with the time it was set."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, not {state!r}")
        manifest = self.manifest()
        manifest.setdefault("created", now())  # versions and commit come with complete()
        manifest["status"] = {"state": state, "time": now(), "pid": os.getpid(),
                              "error": " ".join(str(error).split()) if error else None}
        self.save_json("manifest.json", manifest)
        return manifest

    def finish(self, extra: dict | None = None) -> dict:
        """Add input hashes and output hashes to the manifest (called at the end of a run)."""
        manifest = self.manifest()
        if (self / "parse_report.json").exists():
            manifest["inputs"] = {r["path"]: r["sha256"] for r in self.parse_report()["read"]}
        manifest["outputs"] = self._file_hashes()
        manifest.update(extra or {})
        self.save_json("manifest.json", manifest)
        return manifest

    def _file_hashes(self) -> dict:
        """Every file of the run but the manifest, hidden files and the executed notebooks."""
        return {str(p.relative_to(self.path)): sha256_file(p)
                for p in sorted(self.path.rglob("*"))
                if p.is_file() and p.name != "manifest.json" and not p.name.startswith(".")
                and p.relative_to(self.path).parts[0] != "notebooks"}

    # --- sharing: lock and prepare -------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Hold the run directory for one run (``lock.DirLock``): a second run is refused with
        one line naming the holder; the notebook kernels this run starts may ``begin()``."""
        with self._lock.hold():
            yield self

    def prepare(self, mode: str = "new") -> list[str]:
        """Make the directory ready for a run (inside ``lock()``: refused while another run holds
        it); returns our artefacts that were there.

        ``"new"`` refuses a directory that holds any artefact of ours; ``"force"`` removes
        ours (only ours: the known file names, our files in generated/ and notebooks/) and
        starts clean; ``"resume"`` keeps them, and begin()/complete() tell stale from current.
        Our own leftover temporary files are removed in every mode."""
        if mode not in PREPARE_MODES:
            raise ValueError(f"mode must be one of {PREPARE_MODES}, not {mode!r}")
        self._lock.refuse_if_held_by_other()
        self.refuse_links()
        self._remove_temporaries()
        manifest = self.manifest()
        if manifest.get("status", {}).get("state") == "interrupted" and \
                self._read("manifest.json").get("status", {}).get("state") == "running":
            self.save_json("manifest.json", manifest)  # a killed run's "running", set right
        found = self.artefacts()
        if mode == "new" and found:
            raise RunDirError(self._label(), f"already holds a run ({', '.join(found[:4])}"
                              f"{', ...' if len(found) > 4 else ''}): use --force to start clean "
                              f"or --resume to keep it and re-run")
        if mode == "force" and found:
            if not (self / "manifest.json").exists():
                raise RunDirError(self._label(), f"holds {', '.join(found[:4])} but no manifest.json, "
                                  f"so it is not a run of ours: --force will not delete them; "
                                  f"choose another --out")
            self._remove_artefacts()
        return found

    def artefacts(self) -> list[str]:
        """Our artefacts present in the directory (folders end with "/"): ``owned.artefacts``."""
        return owned.artefacts(self.path)

    def refuse_links(self, names=None) -> None:
        owned.refuse_links(self.path, names)  # one line naming the link, if there is one

    def fresh_folder(self, folder: str = GENERATED) -> Path:
        """``owned.fresh_folder``: our folder, emptied of our files, ready to write into."""
        return owned.fresh_folder(self.path, folder)

    def _remove_artefacts(self) -> None:
        owned.remove_artefacts(self.path)

    def _remove_temporaries(self) -> None:
        owned.remove_temporaries(self.path)

    # --- helpers -------------------------------------------------------------------------------
    def _read(self, name: str) -> dict:
        """manifest.json or metrics.json ({} when absent); one line when it is not ours (or a
        link: the run would write it back through the link)."""
        path = self / name
        refuse_link(self.path, name)
        if not path.exists():
            return {}
        try:
            content = json.loads(path.read_text())
        except (UnicodeDecodeError, ValueError) as err:
            raise RunDirError(self._label(), f"{name} is not valid JSON ({err}): remove it, or "
                                             f"start clean with --force") from None
        if not isinstance(content, dict):
            raise RunDirError(self._label(), f"{name} is not a JSON object: remove it, or start "
                                             f"clean with --force")
        return content

    def _label(self) -> str:
        """The run directory as the user named it (relative when under the current folder)."""
        try:
            return str(self.path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(self.path)


def unique_run_name(parent="runs") -> Path:
    """A new, empty run directory ``<parent>/<YYYYmmdd-HHMMSS>-<4 hex>``, created here so that
    two runs started in the same second (or process) never get the same one."""
    parent = Path(parent)
    while True:
        path = parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as err:
            raise RunDirError(parent, f"cannot create a run directory in it ({err.strerror}): "
                                      f"choose another place with --out") from None
