"""The GPU path, exercised once: the series, the corpus trainer and generation on CUDA.

    python bench/gpu_check.py                 # on a machine with a GPU (within --budget-s 480)
    python bench/gpu_check.py --dry-run       # anywhere: tiny sizes, CPU, gloo (~6 min on 2 cores)

Stages, each in its own process with its own timeout (a stage that fails or runs out of time
is one line in the table; the others still run), all within ``--budget-s``:

  env          torch, CUDA, the GPU's name and count, the peak FLOP/s used for utilisation
  series       ``python -m midilstm run -p device cuda -p epochs N ...``: the five notebooks,
               03_train on CUDA; events/s from the run's history.json
  corpus       ``python -m midilstm corpus corpus/bach`` (or music/ when corpus/bach is absent)
  train_fp32   ``python -m midilstm.batch train --precision float32 --device cuda``
  train_bf16   the same with ``--precision bfloat16`` (dry run: only where
               ``midilstm.loop.native_bfloat16`` says the CPU computes it)
  torchrun     ``python -m torch.distributed.run --standalone --nproc_per_node G -m
               midilstm.batch train ...``; G = the GPUs (dry run: 2 CPU processes, gloo). With
               one GPU the trainer sees WORLD_SIZE 1 and starts no process group
               (``batch.init_distributed``), so nccl is not exercised by this stage then:
  ddp          under torchrun, this script's own child joins a process group (nccl on CUDA,
               gloo in a dry run) even with one rank, wraps the trained model in
               DistributedDataParallel and trains on the trainer's own windows
               (``batch.Windows``), checking the ranks' weights agree afterwards
  generate     ``midilstm.generate.generate`` with the checkpoint's model moved to the GPU,
               1 and many variations, compared with the CPU model's output; and held-out
               scoring (``loop.evaluate``: the model's forward pass) on the GPU. Generation
               copies the weights out to numpy (``lstm_step.lstm_weights``) and steps on the
               CPU whatever the model's device, so its events/s are CPU figures.
  generate_series  the same with the series' model (one-hot inputs, the notebooks' network)

Model FLOPs per event of the LSTM (``flops_per_event``): forward 2 x 4 x hidden x (inputs +
hidden) per layer plus 2 x hidden x classes for the heads; training counts 3x forward
(forward and backward). Utilisation (MFU) = events/s x FLOPs/event / the GPU's dense peak for
the precision (``PEAKS``; ``--peak-tflops`` overrides). Writes the figures to ``--out`` (JSON).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a file (and as torchrun's script): midilstm importable

# Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets: (bfloat16, tf32, float32).
# The first name contained in torch.cuda.get_device_name() wins: specific names first.
PEAKS = [
    ("H200 NVL", (835.0, 418.0, 60.0)),
    ("H200", (989.0, 495.0, 67.0)),  # SXM
    ("H100 NVL", (835.0, 418.0, 60.0)),
    ("H100 PCIe", (756.0, 378.0, 51.0)),
    ("H100", (989.0, 495.0, 67.0)),  # SXM (get_device_name: "NVIDIA H100 80GB HBM3")
    ("A100", (312.0, 156.0, 19.5)),
    ("L40S", (362.0, 183.0, 91.6)),
    ("A10", (125.0, 62.5, 31.2)),  # also matches A10G (a lower clock; roughly)
    ("L4", (121.0, 60.0, 30.3)),
]

# name: (GPU size, dry-run size)
SIZES = {
    "epochs": (20, 2),  # the series (03_train: batch 16 x 64 events, the notebook's model)
    "n_events": (500, 100),  # 04/05: kept small, the point is the GPU's training
    "grid_events": (200, 50),
    "long_events": (1000, 100),
    "grid_variations": (4, 2),
    "steps": (600, 30),  # the corpus trainer
    "eval_every": (100, 10),
    "batch_size": (256, 8),
    "seq_len": (64, 32),
    "ddp_steps": (100, 10),
    "gen_events": (2000, 200),  # generation: 1 variation
    "gen_many_events": (500, 50),  # ... and gen_variations together
    "gen_variations": (64, 8),
}
TIMEOUTS = {"env": 60, "series": 240, "corpus": 120, "train_fp32": 90, "train_bf16": 90,
            "torchrun": 120, "ddp": 90, "generate": 90, "generate_series": 60}
STAGES = tuple(TIMEOUTS)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return CHILDREN[args.child](args)
    return run_all(args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true",
                   help="tiny sizes on the CPU, gloo for nccl: checks the script's logic anywhere")
    p.add_argument("--device", help="default: cuda (cpu with --dry-run)")
    p.add_argument("--gpus", type=int, help="torchrun processes (default: the GPUs seen; "
                                            "2 CPU processes with --dry-run)")
    p.add_argument("--source", type=Path,
                   help="MIDI folder for the corpus (default: corpus/bach if present, else music/)")
    p.add_argument("--peak-tflops", action="append", default=[], metavar="[PRECISION=]N",
                   help="the peak to divide by: N for every precision, or bfloat16=N, "
                        "tf32=N, float32=N; may be repeated (default: the table for the GPU)")
    p.add_argument("--hidden-size", type=int, help="corpus trainer's LSTM units (default: "
                                                   "batch.CORPUS_MODEL's)")
    for name, (gpu, dry) in SIZES.items():
        p.add_argument("--" + name.replace("_", "-"), type=int,
                       help=f"(default: {gpu}; {dry} with --dry-run)")
    p.add_argument("--only", nargs="+", choices=STAGES, metavar="STAGE",
                   help=f"run only these stages ({', '.join(STAGES)}; later ones need the "
                        f"corpus and train_fp32's checkpoint)")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="all stages together; a stage's timeout is cut to what is left")
    p.add_argument("--work", type=Path, help="folder for runs, corpus and checkpoints "
                                             "(default: a temporary folder, removed after)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json",
                   help="the JSON of the figures")
    # children (this script starting itself, one process per stage)
    p.add_argument("--child", choices=("env", "ddp", "generate"), help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    return p


# --- the figures -----------------------------------------------------------------------------

def flops_per_event(config: dict, input_size: int) -> float:
    """Model FLOPs of one event's forward pass: each LSTM layer's four gates, 2 x 4 x hidden x
    (inputs + hidden) multiply-adds counted as 2 FLOPs, plus the heads' linear layer (2 x
    hidden x classes). Embedding lookups and elementwise gate arithmetic are left out."""
    hidden, layers = config["hidden_size"], config["num_layers"]
    lstm = sum(2 * 4 * hidden * ((input_size if layer == 0 else hidden) + hidden)
               for layer in range(layers))
    return float(lstm + 2 * hidden * sum(config["sizes"]))


def peak_table(device_name: str, overrides: list) -> dict:
    """{"bfloat16": TFLOP/s, "tf32": ..., "float32": ...} for this GPU (None where unknown),
    with ``--peak-tflops`` applied."""
    peaks = {"bfloat16": None, "tf32": None, "float32": None}
    for name, values in PEAKS:
        if name.lower() in (device_name or "").lower():
            peaks = dict(zip(peaks, values))
            break
    for item in overrides:
        precision, _, number = item.rpartition("=")
        targets = [precision] if precision else list(peaks)
        for target in targets:
            if target not in peaks:
                raise SystemExit(f"--peak-tflops {item}: precision must be one of "
                                 f"{', '.join(peaks)}")
            peaks[target] = float(number)
    return peaks


def utilisation(events_per_s, flops_event, factor, peak_tflops) -> dict:
    """Achieved TFLOP/s and the share of the peak (None where a figure is missing)."""
    if not events_per_s or not flops_event:
        return {"tflops": None, "mfu": None}
    tflops = events_per_s * flops_event * factor / 1e12
    return {"tflops": tflops, "mfu": tflops / peak_tflops if peak_tflops else None}


def checkpoint_facts(path) -> dict:
    """Model sizes, FLOPs per event and the per-round events/s of a checkpoint's history."""
    from midilstm.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    config = {"hidden_size": ckpt.model.config.hidden_size,
              "num_layers": ckpt.model.config.num_layers, "sizes": list(ckpt.model.config.sizes),
              "input_mode": ckpt.model.config.input_mode, "arch": ckpt.model.config.arch}
    rates = [h["events_per_s"] for h in ckpt.history if h.get("events_per_s")]
    return {"model": config, "input_size": int(ckpt.model.input_size),
            "flops_per_event_forward": flops_per_event(config, int(ckpt.model.input_size))
            if config["arch"] == "lstm" else None,
            "rounds_events_per_s": rates, "events_per_s": steady(rates),
            "precision": ckpt.params.get("precision", ckpt.train_config.get("precision")),
            "world_size": ckpt.params.get("world_size", 1),
            "val_nll": min((h["val"]["nll"] for h in ckpt.history if h.get("val")), default=None)}


def steady(rates: list):
    """The median events/s of the rounds after the first (which pays CUDA's and cuDNN's
    warm-up), or the only one."""
    rates = [r for r in rates if r and math.isfinite(r)]
    if not rates:
        return None
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


# --- running stages ----------------------------------------------------------------------------

class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def run_process(cmd: list, timeout: float, log: Path, env: dict | None = None) -> tuple:
    """Run ``cmd`` in its own process group, output to ``log``; on timeout the whole group is
    ended (torchrun's workers too). Returns (returncode or None on timeout, seconds)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _end_group(proc)
            code = None
        except KeyboardInterrupt:
            _end_group(proc)
            raise
    return code, time.perf_counter() - start


def _end_group(proc) -> None:
    """End ``proc``, its process group and every process below it: a notebook's kernel runs
    in a session of its own (jupyter_client), outside the group."""
    below = _descendants(proc.pid)
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        for pid in below:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _descendants(pid: int) -> list:
    """The processes below ``pid`` (Linux: from /proc; elsewhere none)."""
    children = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def last_line(log: Path) -> str:
    """The line that says why a process failed: the last error line, else the last line."""
    try:
        lines = [l.strip() for l in log.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "(no output)"
    for line in reversed(lines):
        if line.startswith(("error:", "Error", "RuntimeError", "ValueError", "torch.",
                            "AssertionError", "subprocess", "ChildFailedError")) or \
                "Error:" in line:
            return line[:300]
    return lines[-1][:300] if lines else "(no output)"


class Check:
    """Runs the stages in order, keeping each one's row and never stopping at a failure."""

    def __init__(self, args):
        self.args, self.dry = args, args.dry_run
        self.size = {name: getattr(args, name) if getattr(args, name) is not None
                     else (dry if args.dry_run else gpu) for name, (gpu, dry) in SIZES.items()}
        self.device = args.device or ("cpu" if self.dry else "cuda")
        self.cuda = self.device.startswith("cuda")
        self.budget = Budget(args.budget_s)
        self.work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.rows, self.env, self.peaks = [], {}, {}
        self.python = sys.executable

    # a stage: its name, a function returning its figures (a dict) or raising StageFailed
    def stage(self, name: str, function) -> None:
        if self.args.only and name not in self.args.only:
            return
        timeout = min(TIMEOUTS[name], self.budget.left())
        row = {"stage": name}
        if timeout < 5:
            row.update(status="skipped", note="the time budget (--budget-s) is spent")
        else:
            start = time.perf_counter()
            try:
                row.update(status="ok", **function(timeout))
            except Skipped as err:
                row.update(status="skipped", note=str(err))
            except StageFailed as err:
                row.update(status="FAILED", note=str(err))
            except Exception as err:  # noqa: BLE001 - one line, the other stages still run
                row.update(status="FAILED", note=f"{type(err).__name__}: {err}"[:300])
            row.setdefault("seconds", time.perf_counter() - start)
        self.rows.append(row)
        print(f"  {name}: {row['status']}" + (f" ({row['note']})" if row.get("note") else "")
              + f"  [{row.get('seconds', 0):.0f} s]", flush=True)

    def process(self, name, cmd, timeout, env=None) -> float:
        log = self.work / f"{name}.log"
        code, seconds = run_process(cmd, timeout, log, env)
        if code is None:
            raise StageFailed(f"timed out after {timeout:.0f} s; see {log}")
        if code != 0:
            raise StageFailed(f"exit {code}: {last_line(log)}")
        return seconds

    def child(self, name, kind, timeout, extra=(), launcher=()) -> tuple:
        result = self.work / f"{name}.json"
        result.unlink(missing_ok=True)
        cmd = [*(launcher or [self.python]), str(Path(__file__).resolve()), "--child", kind,
               "--result", str(result), "--device", self.device, *extra]
        for name_, value in self.size.items():
            cmd += ["--" + name_.replace("_", "-"), str(value)]
        seconds = self.process(name, cmd, timeout)
        return json.loads(result.read_text()), seconds

    # --- the stages --------------------------------------------------------------------------
    def s_env(self, timeout):
        facts, seconds = self.child("env", "env", timeout)
        self.env = facts
        if self.cuda and not facts.get("cuda_available"):
            raise StageFailed(f"CUDA is not available to torch {facts.get('torch')} "
                              f"(use --dry-run on a CPU)")
        self.peaks = peak_table(facts.get("device_name", ""), self.args.peak_tflops)
        facts["peaks_tflops"] = self.peaks
        note = f"{facts.get('device_name')}; torch {facts.get('torch')}"
        if self.cuda:
            note += f", CUDA {facts.get('cuda')}, {facts.get('gpus')} GPU(s)"
        if not any(self.peaks.values()):
            note += "; no peak known: MFU n/a (--peak-tflops N)"
        return {"seconds": seconds, "facts": facts, "note": note}

    def s_series(self, timeout):
        out = self.work / "series"
        params = {"device": self.device, "epochs": self.size["epochs"],
                  "n_events": self.size["n_events"], "grid_events": self.size["grid_events"],
                  "long_events": self.size["long_events"],
                  "grid_variations": self.size["grid_variations"]}
        cmd = [self.python, "-m", "midilstm", "run", "--out", str(out), "--force"]
        for name, value in params.items():
            cmd += ["-p", name, str(value)]
        seconds = self.process("series", cmd, timeout)
        history = json.loads((out / "history.json").read_text())
        facts = checkpoint_facts(out / "model.pt")
        rates = [h["events_per_s"] for h in history if h.get("events_per_s")]
        rate = steady(rates)
        figures = utilisation(rate, facts["flops_per_event_forward"], 3, self.peaks.get("float32"))
        return {"seconds": seconds, "events_per_s": rate, "precision": "float32",
                "flops_per_event": 3 * facts["flops_per_event_forward"], **figures,
                "epochs": len(history), "model": facts["model"], "params": params,
                "note": f"03_train, {len(history)} epochs (median of epochs 2..), "
                        f"batch 16 x 64 events"}

    def s_corpus(self, timeout):
        source = self.args.source or (ROOT / "corpus" / "bach" if (ROOT / "corpus" / "bach")
                                      .is_dir() else ROOT / "music")
        out = self.work / "corpus"
        cmd = [self.python, "-m", "midilstm", "corpus", str(source), "--out", str(out),
               "--cache", str(self.work / "cache")]
        seconds = self.process("corpus", cmd, timeout)
        manifest = json.loads((out / "corpus.json").read_text())
        files = manifest["stats"].get("files", len(manifest["names"]))
        return {"seconds": seconds, "source": str(source), "pieces": len(manifest["names"]),
                "events": manifest["n_events"], "files_per_s": files / seconds,
                "note": f"{_rel(source)}: {len(manifest['names'])} pieces, "
                        f"{manifest['n_events']:,} events, cold (wall time with start-up)"}

    def train_cmd(self, out: Path, precision: str) -> list:
        s = self.size
        cmd = ["-m", "midilstm.batch", "train", "--data", str(self.work / "corpus"),
               "--out", str(out), "--steps", str(s["steps"]), "--eval-every", str(s["eval_every"]),
               "--batch-size", str(s["batch_size"]), "--seq-len", str(s["seq_len"]),
               "--precision", precision, "--device", self.device, "--threads", "1"]
        if self.args.hidden_size:
            cmd += ["--hidden-size", str(self.args.hidden_size)]
        return cmd

    def s_train(self, precision: str):
        def run(timeout):
            if precision == "bfloat16" and not self.cuda and not self.env.get("native_bfloat16"):
                raise Skipped("this CPU has no native bfloat16 (loop.native_bfloat16)")
            name = "train_fp32" if precision == "float32" else "train_bf16"
            out = self.work / f"{name}.pt"
            seconds = self.process(name, [self.python, *self.train_cmd(out, precision)], timeout)
            return self.train_row(out, seconds, precision, 1)
        return run

    def train_row(self, out: Path, seconds: float, precision: str, processes: int) -> dict:
        facts = checkpoint_facts(out)
        if facts["precision"] != precision:
            raise StageFailed(f"the checkpoint says it trained in {facts['precision']}")
        peak = self.peaks.get(precision)
        figures = utilisation(facts["events_per_s"], facts["flops_per_event_forward"], 3, peak)
        row = {"seconds": seconds, "events_per_s": facts["events_per_s"], "precision": precision,
               "flops_per_event": 3 * facts["flops_per_event_forward"], **figures,
               "rounds_events_per_s": facts["rounds_events_per_s"], "val_nll": facts["val_nll"],
               "world_size": facts["world_size"], "model": facts["model"],
               "note": f"{processes} x batch {self.size['batch_size']} x {self.size['seq_len']} "
                       f"events, {self.size['steps']} steps, median of rounds 2..; "
                       f"best val {facts['val_nll']:.3f}"}
        if precision == "float32" and self.peaks.get("tf32"):  # cuDNN may use TF32 for float32
            row["mfu_vs_tf32"] = figures["tflops"] / self.peaks["tf32"] if figures["tflops"] \
                else None
        return row

    def launcher(self, processes: int) -> list:
        return [self.python, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(processes)]

    def processes(self) -> int:
        if self.args.gpus:
            return self.args.gpus
        if self.cuda:
            return max(1, int(self.env.get("gpus") or 1))
        return 2 if (os.cpu_count() or 1) >= 2 else 1

    def s_torchrun(self, timeout):
        n, out = self.processes(), self.work / "torchrun.pt"
        seconds = self.process("torchrun", [*self.launcher(n), *self.train_cmd(out, "float32")],
                               timeout)
        row = self.train_row(out, seconds, "float32", n)
        backend = "nccl" if self.cuda else "gloo"
        row["backend"] = backend if n > 1 else None
        row["note"] += (f"; {backend} DDP" if n > 1 else
                        "; WORLD_SIZE 1: no process group (see the ddp stage)")
        return row

    def s_ddp(self, timeout):
        n = self.processes()
        facts, seconds = self.child("ddp", "ddp", timeout, extra=[
            "--checkpoint", str(self.work / "train_fp32.pt"), "--corpus", str(self.work / "corpus")],
            launcher=self.launcher(n))
        flops = facts["flops_per_event_forward"]
        figures = utilisation(facts["events_per_s"], flops, 3, self.peaks.get("float32"))
        return {"seconds": seconds, "events_per_s": facts["events_per_s"], "precision": "float32",
                "flops_per_event": 3 * flops, **figures, "backend": facts["backend"],
                "world_size": facts["world_size"], "weights_agree": facts["weights_agree"],
                "note": f"{facts['backend']}, {facts['world_size']} rank(s) DDP, "
                        f"{facts['steps']} steps; ranks' weights agree: {facts['weights_agree']}"}

    def s_generate(self, name: str, checkpoint: Path, data: Path):
        def run(timeout):
            return self.generate_row(name, checkpoint, data, timeout)
        return run

    def generate_row(self, name, checkpoint, data, timeout):
        facts, seconds = self.child(name, "generate", timeout, extra=[
            "--checkpoint", str(checkpoint), "--corpus", str(data)])
        flops = facts["flops_per_event_forward"]
        score = utilisation(facts["score_events_per_s"], flops, 1, self.peaks.get("float32"))
        rows = {"seconds": seconds, "events_per_s": facts["events_per_s"],
                "flops_per_event": flops, "tflops": None, "mfu": None, **facts,
                "score": {"events_per_s": facts["score_events_per_s"], **score},
                "note": f"{facts['input_mode']} inputs; model on {facts['model_device']}, "
                        f"steps on the CPU (numba); "
                        f"{facts['many_variations']} variations: "
                        f"{facts['many_events_per_s']:,.0f} events/s; same music as the CPU "
                        f"model: {facts['identical_to_cpu']}"}
        return rows

    def run(self) -> list:
        self.stage("env", self.s_env)
        self.stage("series", self.s_series)
        self.stage("corpus", self.s_corpus)
        self.stage("train_fp32", self.s_train("float32"))
        self.stage("train_bf16", self.s_train("bfloat16"))
        self.stage("torchrun", self.s_torchrun)
        self.stage("ddp", self.s_ddp)
        self.stage("generate", self.s_generate("generate", self.work / "train_fp32.pt",
                                               self.work / "corpus"))
        self.stage("generate_series", self.s_generate(  # the notebooks' one-hot model
            "generate_series", self.work / "series" / "model.pt", self.work / "series"))
        for gen in [r for r in self.rows if r["stage"].startswith("generate") and
                    r["status"] == "ok"]:  # the scoring pass: the forward on the device
            self.rows.append({"stage": "score" + gen["stage"][len("generate"):],
                              "status": "ok", "precision": "float32",
                              "events_per_s": gen["score"]["events_per_s"],
                              "flops_per_event": gen["flops_per_event"],
                              "tflops": gen["score"]["tflops"], "mfu": gen["score"]["mfu"],
                              "seconds": gen.get("score_seconds"),
                              "note": f"loop.evaluate on {gen['model_device']}: held-out pieces, "
                                      f"batch 1, chunks of 2048 (forward only)"})
        return self.rows


class StageFailed(Exception):
    pass


class Skipped(StageFailed):
    pass


def _rel(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def run_all(args) -> int:
    check = Check(args)
    started = time.perf_counter()
    mode = "dry run (CPU, tiny sizes, gloo)" if check.dry else f"device {check.device}"
    print(f"gpu_check: {mode}; work folder {check.work}; budget {args.budget_s:.0f} s", flush=True)
    try:
        rows = check.run()
    finally:
        if args.work is None:
            shutil.rmtree(check.work, ignore_errors=True)
    total = time.perf_counter() - started
    print()
    print(table(rows, check))
    print(f"\ntotal {total:.0f} s")
    report = {"dry_run": check.dry, "device": check.device, "sizes": check.size,
              "env": check.env, "peaks_tflops": check.peaks, "total_seconds": total,
              "machine": {"host_cpu": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count()},
              "flops_formula": "forward per event: sum over layers 2*4*hidden*(inputs+hidden) "
                               "+ 2*hidden*classes; training x3", "stages": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r["status"] in ("ok", "skipped") for r in rows) else 1


def table(rows: list, check) -> str:
    head = ("stage", "status", "precision", "events/s", "FLOP/event", "TFLOP/s", "MFU",
            "seconds", "note")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    def num(r, key, fmt):
        value = r.get(key)
        return fmt.format(value) if isinstance(value, (int, float)) else "-"

    for r in rows:
        mfu = r.get("mfu")
        mfu_text = f"{100 * mfu:.3f}%" if isinstance(mfu, float) else \
            ("n/a" if r.get("tflops") is not None else "-")
        cells = (r["stage"], r["status"], r.get("precision") or "-", num(r, "events_per_s", "{:,.0f}"),
                 num(r, "flops_per_event", "{:,.0f}"), num(r, "tflops", "{:.4f}"), mfu_text,
                 num(r, "seconds", "{:.0f}"), str(r.get("note", "")).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    peaks = ", ".join(f"{k} {v:g}" for k, v in check.peaks.items() if v) or "none known"
    lines.append(f"\nMFU against the dense peak TFLOP/s for the row's precision ({peaks}); "
                 f"training rows count 3x the forward FLOPs.")
    return "\n".join(lines)


# --- the children: one process each ---------------------------------------------------------

def child_env(args) -> int:
    import torch

    from midilstm.loop import native_bfloat16

    facts = {"torch": torch.__version__, "python": platform.python_version(),
             "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
             "native_bfloat16": native_bfloat16(torch.device("cpu")),
             "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
             "nccl_available": torch.distributed.is_nccl_available()}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        facts.update(gpus=torch.cuda.device_count(), device_name=torch.cuda.get_device_name(),
                     cudnn=torch.backends.cudnn.version(),
                     bf16_supported=torch.cuda.is_bf16_supported(),
                     memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
    else:
        facts.update(gpus=0, device_name=f"CPU ({platform.processor() or platform.machine()}, "
                                         f"{os.cpu_count()} cores)")
    args.result.write_text(json.dumps(facts))
    return 0


def child_ddp(args) -> int:
    """Under torchrun: a process group of any size (nccl on CUDA, gloo on a CPU), the trained
    model in DistributedDataParallel, the trainer's own windows; timed steps, weights compared."""
    import numpy as np
    import torch
    from torch import distributed as dist

    from midilstm.batch import CorpusTrainConfig, Windows, held_out_split
    from midilstm.checkpoint import load_checkpoint
    from midilstm.corpus import load_corpus
    from midilstm.loop import optimiser_step, sequence_loss

    cuda = args.device.startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        torch.set_num_threads(1)
        ckpt = load_checkpoint(args.checkpoint)
        corpus = load_corpus(args.corpus)
        train_idx, _ = held_out_split(ckpt, corpus)
        model = ckpt.model.to(device).train()
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local] if cuda else None)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        config = CorpusTrainConfig(batch_size=args.batch_size, seq_len=args.seq_len,
                                   device=args.device, steps=args.ddp_steps)
        longest = int(corpus.lengths()[train_idx].max())
        length = min(config.seq_len, longest - 1) + 1
        windows = Windows(corpus, ckpt.codec, train_idx, length, config, rank, world, device)
        warm = min(5, max(1, args.ddp_steps // 5))
        events, start = 0, None
        for step, (batch, before) in enumerate(windows.batches(args.ddp_steps + warm)):
            if step == warm:
                _sync(device)
                start, events = time.perf_counter(), 0
            loss, _ = sequence_loss(ddp, batch, stats=False, before=before)
            optimiser_step(ddp, optimizer, loss, 1.0)
            events += batch[:, 1:, 0].numel() * world
        _sync(device)
        seconds = time.perf_counter() - start
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
        low, high = checksum.clone(), checksum.clone()
        dist.all_reduce(low, dist.ReduceOp.MIN)
        dist.all_reduce(high, dist.ReduceOp.MAX)
        agree = bool(torch.isclose(low, high, rtol=1e-9, atol=1e-9).item())
        if rank == 0:
            facts = checkpoint_facts(args.checkpoint)
            args.result.write_text(json.dumps({
                "backend": backend, "world_size": world, "steps": args.ddp_steps,
                "events_per_s": events / seconds, "seconds": seconds,
                "weights_agree": agree, "loss": float(loss.item()),
                "flops_per_event_forward": facts["flops_per_event_forward"],
                "finite": bool(np.isfinite(loss.item()))}))
        if not agree:
            print("error: the ranks' weights differ after DDP training", file=sys.stderr)
            return 1
        return 0
    finally:
        dist.destroy_process_group()


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def child_generate(args) -> int:
    """Generation with the checkpoint's model on the device (1 and many variations), against
    the CPU model's music; then the held-out pieces scored on the device."""
    import copy

    import numpy as np
    import torch

    from midilstm.batch import held_out_split
    from midilstm.checkpoint import load_checkpoint
    from midilstm.corpus import load_corpus
    from midilstm.generate import generate, warm_up
    from midilstm.loop import evaluate

    torch.set_num_threads(1)
    device = torch.device(args.device)
    ckpt = load_checkpoint(args.checkpoint)
    model = copy.deepcopy(ckpt.model).to(device).eval()
    if (args.corpus / "corpus.json").exists():  # a corpus: its held-out pieces
        corpus = load_corpus(args.corpus)
        _, val_idx = held_out_split(ckpt, corpus)
        primer = corpus.piece(val_idx[0])[:30]
        val_codes = [ckpt.codec.encode(corpus.piece(i)) for i in val_idx]
    else:  # a run directory: 02_encode's validation part
        with np.load(args.corpus / "events_val.npz") as events, \
                np.load(args.corpus / "codes_val.npz") as codes:
            names = [k for k in codes.files if k != "labels"]
            primer = events[names[0]][:30]
            val_codes = [codes[k] for k in names]
    warm_up(verbose=False)
    start = time.perf_counter()
    on_device = generate(model, ckpt.codec, primer, n_events=args.gen_events, seed=0)
    seconds_one = time.perf_counter() - start
    on_cpu = generate(ckpt.model, ckpt.codec, primer, n_events=args.gen_events, seed=0)
    identical = all(np.array_equal(a, b) for a, b in zip(on_device, on_cpu))
    start = time.perf_counter()
    generate(model, ckpt.codec, primer, n_events=args.gen_many_events,
             n_variations=args.gen_variations, seed=0)
    seconds_many = time.perf_counter() - start
    n_scored = sum(max(len(c) - 1, 0) for c in val_codes)
    evaluate(model, val_codes[:1], device)  # warm-up: CUDA kernels, cuDNN plans
    _sync(device)
    start = time.perf_counter()
    scored = evaluate(model, val_codes, device)
    _sync(device)
    seconds_score = time.perf_counter() - start
    facts = checkpoint_facts(args.checkpoint)
    args.result.write_text(json.dumps({
        "model_device": str(next(model.parameters()).device),
        "input_mode": ckpt.model.config.input_mode,
        "events_per_s": args.gen_events / seconds_one,
        "many_variations": args.gen_variations,
        "many_events_per_s": args.gen_variations * args.gen_many_events / seconds_many,
        "identical_to_cpu": identical, "score_events_per_s": n_scored / seconds_score,
        "score_seconds": seconds_score, "score_nll": scored["nll"], "score_events": n_scored,
        "flops_per_event_forward": facts["flops_per_event_forward"]}))
    return 0 if identical else 1


CHILDREN = {"env": child_env, "ddp": child_ddp, "generate": child_generate}

if __name__ == "__main__":
    sys.exit(main())
