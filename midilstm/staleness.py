"""The steps of the series, the files each reads and writes, and when a recorded step is stale.

A step's record in the manifest (``RunDir.complete``) holds the sha256 of every file it read
and wrote. A recorded step is *stale* when a file it read is no longer the one it read, or when
the step that made one of its inputs is stale itself. ``input_problem`` says why a step may not
start on the files present, naming the first notebook to re-run; ``mark_stale`` writes
``"stale"`` on every step's record and metrics section, so nothing stale passes for current.
"""
from __future__ import annotations

from dataclasses import dataclass

GENERATED = "generated/"  # a directory output: stands for every file inside it


@dataclass(frozen=True)
class Step:
    """A notebook: its metrics.json section, the files it reads and the files it writes."""

    name: str
    section: str
    inputs: tuple
    outputs: tuple


STEPS = {s.name: s for s in (
    Step("01_parse", "parse", (), ("events.npz", "parse_report.json")),
    Step("02_encode", "encode", ("events.npz",),
         ("codec.json", "events_train.npz", "events_val.npz", "codes_train.npz", "codes_val.npz")),
    Step("03_train", "train", ("codec.json", "codes_train.npz", "codes_val.npz", "parse_report.json"),
         ("model.pt", "history.json")),
    Step("04_generate", "generate", ("model.pt", "events.npz"), (GENERATED,)),
    Step("05_evaluate", "evaluate", ("model.pt", "events.npz", "events_train.npz", "codes_train.npz",
                                     "codes_val.npz", "codec.json", GENERATED), ()),
)}
ORDER = tuple(STEPS)
MAKER = {out: s.name for s in STEPS.values() for out in s.outputs}  # file -> the step writing it


@dataclass(frozen=True)
class Stale:
    """Why a recorded step is out of date: ``changed`` (a file it read) is no longer the one
    it read; ``maker`` wrote that file (``reran``: a later, successful run of it did);
    ``root`` is the first notebook to re-run (the step itself, or a stale step upstream)."""

    changed: str
    maker: str
    reran: bool
    root: str

    def describe(self, step: str, made: str | None = None) -> str:
        """"codec.json changed after 03_train made model.pt (02_encode re-ran)"."""
        shown = GENERATED if self.changed.startswith(GENERATED) else self.changed
        did = f"made {made}" if made else "read it"
        cause = f"{self.maker} re-ran" if self.reran else \
            f"a later {self.maker} did not finish, or it was edited"
        return f"{shown} changed after {step} {did} ({cause})"

    def text(self) -> str:
        """As shown in manifest.json and metrics.json."""
        if self.reran:
            return f"{self.maker} re-ran after this"
        return f"{self.changed} changed after this (a later {self.maker} did not finish, or it was edited)"


def view(snapshot: dict, names) -> dict:
    """The hashes of ``names`` (``generated/`` expanded to its files) in a snapshot."""
    return {k: v for k, v in snapshot.items()
            if k in names or (GENERATED in names and k.startswith(GENERATED))}


def maker_of(name: str) -> str:
    return MAKER[GENERATED] if name.startswith(GENERATED) else MAKER[name]


def stale_steps(records: dict, snapshot: dict) -> dict:
    """``{step: Stale}``: a recorded step is stale when a file it read is no longer the one it
    read, or when a step that made one of its inputs is itself stale."""
    stale = {}
    for name in ORDER:
        record = records.get(name)
        if not is_record(record):
            continue
        read, now = record["inputs"], view(snapshot, STEPS[name].inputs)
        changed = sorted((k for k in set(read) | set(now) if read.get(k) != now.get(k)),
                         key=lambda k: (ORDER.index(maker_of(k)), k))  # the first cause upstream
        upstream = [stale[MAKER[n]] for n in STEPS[name].inputs if MAKER[n] in stale]
        if changed:
            maker = maker_of(changed[0])
            made = records[maker]["outputs"] if is_record(records.get(maker)) else {}
            reran = changed[0] in now and made.get(changed[0]) == now[changed[0]]
            if maker in stale:
                root = stale[maker].root  # the file's maker is stale itself: start there
            elif reran:
                root = name  # the file is sound and newer: re-running this step is enough
            else:
                root = maker  # the file is not what its maker recorded
            why = Stale(changed[0], maker, reran, root)
        elif upstream:
            why = upstream[0]
        else:
            continue
        roots = [why.root, *(u.root for u in upstream)]
        stale[name] = Stale(why.changed, why.maker, why.reran, min(roots, key=ORDER.index))
    return stale


def input_problem(spec: Step, records: dict, snapshot: dict) -> str | None:
    """Why the inputs of ``spec`` cannot be used, naming the notebook to re-run; or None."""
    for name in spec.inputs:  # in the order the step reads them
        if not view(snapshot, [name]):
            return f"{name} is {'empty' if name == GENERATED else 'missing'}: run {MAKER[name]} first"
    stale = stale_steps(records, snapshot)
    for maker in ORDER:
        mine = [n for n in spec.inputs if MAKER[n] == maker]
        if not mine:
            continue
        record = records.get(maker)
        if not is_record(record):
            return f"{mine[0]} was not made by a successful {maker} (not in manifest.json): re-run {maker}"
        now, made = view(snapshot, mine), view(record["outputs"], mine)
        if now != made:
            changed = min(k for k in set(now) | set(made) if now.get(k) != made.get(k))
            return (f"{changed} is not the file {maker} recorded (a later {maker} did not finish, "
                    f"or it was edited): re-run {maker}")
        if maker in stale:
            why = stale[maker]
            if why.root == maker:
                return f"{why.describe(maker, mine[0])}: re-run {maker}"
            first = stale.get(why.root)  # none: the root's own file is not what it recorded
            cause = first.describe(why.root) if first else why.describe(maker)
            return (f"{mine[0]} was made from files that are now stale: {cause}; "
                    f"re-run {why.root} and the notebooks after it")
    return None


def mark_stale(manifest: dict, metrics: dict, snapshot: dict) -> None:
    """Set (or clear) ``"stale"`` on every recorded step and on its metrics.json section."""
    records = manifest.get("steps", {})
    stale = stale_steps(records, snapshot)
    for spec in STEPS.values():
        if spec.name in stale:
            reason = stale[spec.name].text()
        elif spec.section in metrics and not is_record(records.get(spec.name)):
            reason = f"not recorded by a successful {spec.name}"  # figures with nothing behind them
        else:
            reason = None
        for entry in (records.get(spec.name) if is_record(records.get(spec.name)) else None,
                      metrics.get(spec.section)):
            if isinstance(entry, dict):
                if reason:
                    entry["stale"] = reason
                else:
                    entry.pop("stale", None)


def is_record(record) -> bool:
    return isinstance(record, dict) and isinstance(record.get("outputs"), dict) \
        and isinstance(record.get("inputs"), dict)


def step_spec(step: str) -> Step:
    if step not in STEPS:
        raise ValueError(f"step must be one of {ORDER}, not {step!r}")
    return STEPS[step]
