"""The MIDI reader against damaged and hostile files: a fuzz run and crafted worst cases.

    python bench/fuzz.py fuzz [--mutants 3000] [--seed 0] [--workers 2]
    python bench/fuzz.py worst [--mb 1 | --at-limits] [--case NAME ...] [--timeout 120]

``fuzz`` mutates the project's real MIDI files (every ``.mid`` under ``music/``) with bit flips,
byte inserts and deletes, chunk-length edits, truncations and stretched variable-length
quantities, reads each mutant with ``midilstm.read_midi`` in a child process (20 s timeout,
peak memory from ``getrusage``) and counts: tracebacks (any exception that is not
``MidiInputError``), hangs over 20 s and peak memory over 1 GB. The target is 0/0/0.

``worst`` builds crafted files of about ``--mb`` MB each (long deltas, dense control changes,
many notes, many tracks, running-status tricks, huge sysex and meta lengths, ...) and reads
each in a child process, printing its wall time, peak memory and outcome. It need not run in
CI; bench/README.md ("The reader against hostile files") has the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HANG_S = 20.0
MEMORY_LIMIT = 2**30  # 1 GB: a child past this is counted

# --- the child: read one file, report time, peak memory and outcome ---------------------------

CHILD = r"""
import json, resource, sys, time, traceback
start = time.perf_counter()
outcome, detail = "ok", ""
try:
    from midilstm.errors import MidiInputError
    from midilstm.parse import Selection, read_midi
    try:
        parsed = read_midi(sys.argv[1], Selection(sustain_pedal=sys.argv[2] == "1"))
        detail = f"{len(parsed.notes)} notes"
    except MidiInputError as err:
        outcome, detail = "refused", str(err)
        if "\n" in detail:
            outcome = "multi-line"
except BaseException as err:  # noqa: BLE001
    outcome, detail = "traceback", "".join(traceback.format_exception(err))[-2000:]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # may hold the parent's (fork)
try:  # this process's own peak (VmHWM is reset by exec; ru_maxrss is not, on Linux)
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
except (OSError, StopIteration, ValueError):
    pass
print(json.dumps({"outcome": outcome, "detail": detail[:3000], "seconds": time.perf_counter() - start,
                  "peak_bytes": rss}))
"""


def read_in_child(path: Path, timeout: float, pedal: bool = False,
                  address_space: int | None = None) -> dict:
    """Read ``path`` in a fresh interpreter; its outcome, seconds and peak memory."""
    def limit():
        if address_space:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(path), "1" if pedal else "0"],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {"outcome": "hang", "detail": f"over {timeout:g} s",
                "seconds": time.perf_counter() - start, "peak_bytes": 0}
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"outcome": "traceback", "detail": f"child died (rc {done.returncode}): "
                  f"{done.stderr[-1500:]}", "seconds": time.perf_counter() - start,
                  "peak_bytes": 0}
    result["wall"] = time.perf_counter() - start
    return result


# --- crafted worst cases -----------------------------------------------------------------------

def vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def header(ntrks=1, kind=1, tpb=480) -> bytes:
    return b"MThd" + struct.pack(">IHHH", 6, kind, ntrks, tpb)


def track(body: bytes, end=True) -> bytes:
    body = body + (b"\x00\xff\x2f\x00" if end else b"")
    return b"MTrk" + struct.pack(">I", len(body)) + body


def smf(*bodies: bytes, kind=1) -> bytes:
    return header(len(bodies), kind) + b"".join(track(b) for b in bodies)


def _fill(first: bytes, repeat: bytes, size: int) -> bytes:
    return first + repeat * max(1, (size - len(first)) // len(repeat))


NOTE = b"\x00\x90\x3c\x40\x10\x80\x3c\x00"


def crafted(size: int) -> dict:
    """name -> (bytes, read with the sustain pedal) of about ``size`` bytes each."""
    n = size
    cases = {
        # deltas of 2,100 continuation bytes (the case), then of 4 bytes (the maximum)
        "long_deltas_2100": _fill(b"", b"\x81" * 2100 + b"\x00\x90\x3c\x40", n),
        "one_delta_of_all_bytes": b"\x81" * n + b"\x00\x90\x3c\x40",  # a bignum for mido
        "delta_padded_by_0x80": b"\x80" * n + b"\x00\x90\x3c\x40",  # value 0: accepted
        "deltas_4_bytes": _fill(b"\x00\x90\x3c\x40", b"\x8f\xff\xff\x7f\x3c\x40", n),
        # running status: 3 bytes a control change, 3 a note, 2 a program change
        "control_changes": _fill(b"\x00\xb0\x07\x40", b"\x00\x07\x40", n),
        "sustain_pedal": _fill(b"\x00\xb0\x40\x7f", b"\x00\x40\x7f\x00\x40\x00", n),
        "notes": _fill(b"\x00\x90\x3c\x40", b"\x01\x3c\x00\x01\x3c\x40", n),
        "notes_every_key": b"".join(bytes([0, 0x90 | c, p, 64, 1, 0x80 | c, p, 0])
                                    for _ in range(max(1, n // 16384))
                                    for c in range(16) for p in range(128)),
        "program_changes": _fill(b"\x00\xc0\x05", b"\x00\x05", n),
        "channel_pressure": _fill(b"\x00\xd0\x05", b"\x00\x05", n),
        "tempo_changes": _fill(b"", b"\x01\xff\x51\x03\x07\xa1\x20", n),
        "tiny_metas": _fill(b"", b"\x00\xff\x01\x00", n),
        "realtime_bytes": _fill(b"", b"\x00\xf8", n),
        # one key struck many times at one tick, ended at that tick, plus one dangling strike
        "same_tick_strikes": (b"\x00\x90\x3c\x40" + b"\x00\x3c\x40" * (n // 6)
                              + b"\x00\x3c\x00" * (n // 6) + b"\x00\x3c\x40"),
        "sysex_999999": _fill(b"", b"\x00\xf0" + vlq(999_999) + b"\x01" * 999_998 + b"\xf7", n),
        "meta_999999": _fill(b"", b"\x00\xff\x01" + vlq(999_999) + b"a" * 999_999, n),
        "sysex_longer_than_file": b"\x00\xf0\x8f\xff\xff\x7f" + b"\x01" * 100,
        "meta_longer_than_file": b"\x00\xff\x01\x8f\xff\xff\x7f" + b"a" * 100,
    }
    # one note first, so that every stage of reading runs
    files = {name: (smf(NOTE + body), name == "sustain_pedal") for name, body in cases.items()}
    per_track = NOTE
    files["many_tracks_65535"] = (header(65535) + track(per_track) * 65535, False)
    files["track_count_40000"] = (header(40000) + track(NOTE) * 40000, False)
    # type 2: a program change and a note in each of many tracks (each its own sequence)
    tracks = min(65535, max(1, n // 40))
    files["type2_program_tracks"] = (
        header(tracks, kind=2) + track(b"\x00\xc0\x05" + NOTE) * tracks, False)
    chunks = -(-n // 1_000_000)  # tracks of at most 1 MB
    files["note_tracks_1mb_each"] = (
        header(chunks) + track(_fill(b"\x00\x90\x3c\x40", b"\x01\x3c\x00\x01\x3c\x40",
                                     n // chunks)) * chunks, False)
    return files


# bytes per message and note-ons per message of the cases that a message or note limit stops
PER_MESSAGE = {"deltas_4_bytes": (6, 1), "control_changes": (3, 0), "sustain_pedal": (3, 0),
               "notes": (3, 0.5), "notes_every_key": (4, 0.5), "program_changes": (2, 0),
               "channel_pressure": (2, 0), "tempo_changes": (7, 0), "tiny_metas": (4, 0),
               "realtime_bytes": (2, 0), "same_tick_strikes": (3, 0.5),
               "note_tracks_1mb_each": (3, 0.5)}


def size_at_limits(name: str, limits) -> int:
    """The size of case ``name`` just under ``limits`` (bytes, messages and notes)."""
    bytes_per, ons_per = PER_MESSAGE.get(name, (None, 0))
    if bytes_per is None:
        return limits.max_bytes - 4096
    messages = limits.max_messages - 100
    if ons_per:
        messages = min(messages, int((limits.max_notes - 100) / ons_per))
    return min(limits.max_bytes - 4096, messages * bytes_per)


def worst(args) -> int:
    names = args.case or list(crafted(1000))
    if args.at_limits:
        sys.path.insert(0, str(ROOT))
        from midilstm.smf import ReadLimits

        limits = ReadLimits()
        print(f"at the default limits: {limits}")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'case':<24} {'MB':>6} {'seconds':>8} {'peak MB':>8}  outcome")
        for name in names:
            size = size_at_limits(name, limits) if args.at_limits else int(args.mb * 2**20)
            data, pedal = crafted(size)[name]
            path = Path(tmp) / f"{name}.mid"
            path.write_bytes(data)
            result = read_in_child(path, args.timeout, pedal, args.address_space)
            detail = result["detail"].splitlines()[-1] if result["detail"] else ""
            print(f"{name:<24} {len(data) / 2**20:6.2f} {result['seconds']:8.2f} "
                  f"{result['peak_bytes'] / 2**20:8.0f}  {result['outcome']}: "
                  f"{detail[:150]}", flush=True)
    return 0


# --- the fuzz run ------------------------------------------------------------------------------

def real_files() -> list[Path]:
    return sorted(p for p in (ROOT / "music").rglob("*") if p.suffix.lower() in (".mid", ".midi"))


def _chunks(data: bytes) -> list[int]:
    """Offsets of the chunk length fields in ``data``."""
    at, out = 8 + 6, [4]
    while at + 8 <= len(data):
        out.append(at + 4)
        at += 8 + int.from_bytes(data[at + 4:at + 8], "big")
    return out


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutant of ``data`` and how it was made."""
    data = bytearray(data)
    how = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.choice(("flip", "flip", "insert", "delete", "length", "truncate", "stretch",
                           "byte", "splice"))
        at = rng.randrange(len(data)) if data else 0
        if kind == "flip" and data:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == "byte" and data:
            data[at] = rng.choice((0x00, 0x7F, 0x80, 0xF0, 0xF7, 0xFF, rng.randrange(256)))
        elif kind == "insert":
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == "delete":
            del data[at:at + rng.randint(1, 8)]
        elif kind == "length":
            field = rng.choice(_chunks(bytes(data)))
            if field + 4 <= len(data):
                old = int.from_bytes(data[field:field + 4], "big")
                new = rng.choice((0, 1, old - 1, old + 1, old * 2, 2**31, 2**32 - 1,
                                  rng.randrange(2**32)))
                data[field:field + 4] = (new % 2**32).to_bytes(4, "big")
        elif kind == "truncate":
            data = data[:at]
        elif kind == "stretch":  # a delta, length or value written with extra 0x80 bytes
            data[at:at] = b"\x80" * rng.choice((1, 3, 5, 40, 2100))
        elif kind == "splice" and len(data) > 16:
            lo = rng.randrange(len(data))
            data[at:at] = data[lo:lo + rng.randint(1, 64)]
        how.append(f"{kind}@{at}")
    return bytes(data), " ".join(how)


def fuzz(args) -> int:
    sources = real_files()
    originals = [p.read_bytes() for p in sources]
    rng = random.Random(args.seed)
    counts = {"ok": 0, "refused": 0, "traceback": 0, "multi-line": 0, "hang": 0,
              "over_1gb": 0}
    slowest = [0.0, ""]
    biggest = [0, ""]
    bad = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for i in range(args.mutants):
            k = rng.randrange(len(sources))
            data, how = mutate(originals[k], rng)
            path = Path(tmp) / f"mutant_{i:05d}.mid"
            path.write_bytes(data)
            jobs.append((path, f"{sources[k].name}: {how}", rng.random() < 0.2))

        def one(job):
            path, how, pedal = job
            return job, read_in_child(path, HANG_S, pedal)

        start = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            for n, ((path, how, _), result) in enumerate(pool.map(one, jobs), 1):
                outcome = result["outcome"]
                counts[outcome] = counts.get(outcome, 0) + 1
                if result["peak_bytes"] > MEMORY_LIMIT:
                    counts["over_1gb"] += 1
                    bad.append(("over_1gb", how, result["peak_bytes"]))
                if outcome in ("traceback", "hang", "multi-line"):
                    bad.append((outcome, how, result["detail"][-600:]))
                    keep = ROOT / "bench" / "results" / "fuzz_failures"
                    keep.mkdir(parents=True, exist_ok=True)
                    (keep / path.name).write_bytes(path.read_bytes())
                if result["seconds"] > slowest[0]:
                    slowest[:] = [result["seconds"], how]
                if result["peak_bytes"] > biggest[0]:
                    biggest[:] = [result["peak_bytes"], how]
                if n % 250 == 0:
                    print(f"{n}/{len(jobs)} {counts} ({time.perf_counter() - start:.0f} s)",
                          flush=True)
    print(json.dumps({"mutants": args.mutants, "seed": args.seed, "files": len(sources),
                      **counts, "slowest_s": round(slowest[0], 2), "slowest": slowest[1],
                      "peak_mb": round(biggest[0] / 2**20), "peak": biggest[1]}, indent=1))
    for item in bad[:20]:
        print(*item, sep="\n  ")
    return 1 if counts["traceback"] or counts["hang"] or counts["over_1gb"] \
        or counts["multi-line"] else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    f = commands.add_parser("fuzz", help="read mutants of the real files")
    f.add_argument("--mutants", type=int, default=3000)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    f.set_defaults(run=fuzz)
    w = commands.add_parser("worst", help="time and memory of crafted worst cases")
    w.add_argument("--mb", type=float, default=1.0)
    w.add_argument("--case", nargs="*")
    w.add_argument("--at-limits", action="store_true",
                   help="size each case just under the default ReadLimits (ignores --mb)")
    w.add_argument("--timeout", type=float, default=120.0)
    w.add_argument("--address-space", type=int, default=8 * 2**30,
                   help="RLIMIT_AS of each child (bytes; default 8 GB)")
    w.set_defaults(run=worst)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
