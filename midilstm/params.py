"""Every notebook parameter, declared once, and checked before anything runs.

The notebooks' ``parameters`` cells are what papermill and ``python -m midilstm run -p`` fill
in; ``PARAMETERS`` below says, for each of them, its type, its allowed range or choices and
which notebooks declare it (a test keeps this table and the cells in agreement). ``validate``
checks a set of values against the table, and against the constraints that tie parameters
together, so that ``epochs ten`` or ``top_p 2`` is refused in one line naming the parameter
before a single notebook has run, not as a ``TypeError`` after training.

    >>> validate({"epochs": 50, "temperature": 0.9})            # a run: any subset of the series
    {'epochs': 50, 'temperature': 0.9}
    >>> validate({"epochs": "ten"})
    Traceback (most recent call last):
    ...
    midilstm.errors.ParameterError: parameter epochs: must be an integer >= 1, got 'ten'
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
import textwrap
from dataclasses import dataclass

from .checks import is_int, is_number
from .constants import (ARCHITECTURES, DEVICE_PATTERN, INPUT_MODES, MAX_BPM, MAX_CONTEXT,
                        MAX_HIDDEN, MAX_LAYERS, MAX_NOTE_S, MAX_POLYPHONY, MAX_TIME_BINS,
                        MIN_WRITABLE_BPM, TIME_STRATEGIES)
from .errors import ParameterError

SERIES = ("01_parse", "02_encode", "03_train", "04_generate", "05_evaluate")
ALL = SERIES  # a parameter every notebook declares (run_dir)

# Generation allocates (events x variations x 3) codes and random numbers at once: a cap keeps
# a typo such as n_events 6000000 from asking for gigabytes.
MAX_GENERATED_EVENTS = 2_000_000
MAX_GRID_POINTS = 64
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds both accept 0 .. 2**32 - 1


@dataclass(frozen=True)
class Spec:
    """One parameter: ``kind`` is int, float, str, bool or list (of ``item`` values);
    ``low``/``high`` bound numbers (and list items), ``open_low``/``open_high`` exclude the bound;
    ``optional``: None is allowed; ``choices`` for strings; ``notebooks`` that declare it."""

    kind: str
    notebooks: tuple
    help: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False
    choices: tuple = ()
    item: str | None = None  # the kind of a list's items
    pattern: str | None = None  # a regular expression a string must match in full
    pattern_text: str = ""  # ...and how to say it

    def describe(self) -> str:
        """What the value must be, as said in an error message: "an integer >= 1"."""
        what = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
                "list": f"a non-empty list of {_plural(self.item)}"}[self.kind]
        if self.choices:
            what = "one of " + ", ".join(repr(c) for c in self.choices)
        if self.pattern:
            what = self.pattern_text
        what += self._range_text()
        if self.optional:
            what += " or None"
        return what

    def _range_text(self) -> str:
        low, high = _number_text(self.low), _number_text(self.high)
        if self.low is not None and self.high is not None:
            if not (self.open_low or self.open_high):
                return f" in {low}..{high}"
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            return f" in {left}{low}, {high}{right}"
        if self.low is not None:
            return f" {'>' if self.open_low else '>='} {low}"
        if self.high is not None:
            return f" {'<' if self.open_high else '<='} {high}"
        return ""


def _plural(kind) -> str:
    return {"int": "integers", "float": "numbers", None: "values"}[kind]


def _number_text(x) -> str:
    return "" if x is None else f"{x:g}" if isinstance(x, float) else str(x)


P01, P02, P03, P04, P05 = SERIES
SEED = Spec("int", (P02, P03, P04, P05), "a random seed", low=0, high=MAX_SEED)
PRIMER = Spec("int", (P04, P05), "events of the first piece that prime the network", low=1, high=100_000)
CLIP = Spec("float", (P04, P05), "seconds of audio played in the notebook", low=0, high=600, open_low=True)

PARAMETERS: dict[str, Spec] = {
    # 01_parse
    "piece": Spec("str", (P01,), 'a MIDI file, folder or glob; or a bundled name ("default", "josquin")'),
    "channels": Spec("list", (P01,), "0-based MIDI channels to keep (None: every melodic channel)",
                     item="int", low=0, high=15, optional=True),
    "include_drums": Spec("bool", (P01,), "keep the drum channel (index 9)"),
    "sustain_pedal": Spec("bool", (P01,), "hold notes while the sustain pedal is down"),
    "out_of_range": Spec("str", (P01,), "pitches outside 24..112: fold by octaves or drop",
                         choices=("fold", "drop")),
    # 02_encode
    "time_strategy": Spec("str", (P02,), "how time bins are placed", choices=TIME_STRATEGIES),
    "n_time_bins": Spec("int", (P02,), "bins for positive delta times", low=1, high=MAX_TIME_BINS),
    "velocity_bins": Spec("int", (P02,), "velocity classes (None: all 128)", low=1, high=127, optional=True),
    "val_fraction": Spec("float", (P02,), "share held out for validation", low=0, high=1,
                         open_low=True, open_high=True),
    # 03_train
    "arch": Spec("str", (P03,), "the network", choices=tuple(ARCHITECTURES)),
    "hidden_size": Spec("int", (P03,), "LSTM units or transformer width", low=1, high=MAX_HIDDEN),
    "num_layers": Spec("int", (P03,), "stacked LSTM layers or transformer blocks", low=1,
                       high=MAX_LAYERS),
    "heads": Spec("int", (P03,), "transformer attention heads", low=1, high=MAX_HIDDEN),
    "context": Spec("int", (P03,), "events a transformer looks back", low=1, high=MAX_CONTEXT),
    "input_mode": Spec("str", (P03,), "how classes enter the LSTM", choices=INPUT_MODES),
    "sounding_input": Spec("bool", (P03,), "the LSTM also reads which pitches are sounding"),
    "key_input": Spec("bool", (P03,), "the LSTM also reads the key profile of the recent notes"),
    "age_input": Spec("bool", (P03,), "the LSTM also reads how long each sounding note has sounded"),
    "dropout": Spec("float", (P03,), "dropout on the LSTM output", low=0, high=1, open_high=True),
    "seq_len": Spec("int", (P03,), "events per training sequence", low=1, high=100_000),
    "batch_size": Spec("int", (P03,), "sequences per optimiser step", low=1, high=4096),
    "epochs": Spec("int", (P03,), "upper bound on training epochs", low=1),
    "lr": Spec("float", (P03,), "Adam learning rate", low=0, high=1, open_low=True),
    "patience": Spec("int", (P03,), "epochs without improvement before stopping", low=1),
    "transpose_semitones": Spec("int", (P03,), "random transposition of training sequences",
                                low=0, high=48),
    "device": Spec("str", (P03,), "where to train", pattern=DEVICE_PATTERN,
                   pattern_text='"auto", "cpu", "cuda", "cuda:N" or "mps"'),
    # 04_generate
    "n_events": Spec("int", (P04,), "new events per variation", low=1, high=MAX_GENERATED_EVENTS),
    "seconds": Spec("float", (P04,), "stop each variation after this much music", low=0,
                    high=6 * 3600, open_low=True, optional=True),
    "n_variations": Spec("int", (P04,), "variations generated together", low=1, high=1024),
    "temperature": Spec("float", (P04,), "sampling temperature", low=0, high=100, open_low=True),
    "top_k": Spec("int", (P04,), "sample among the k most likely classes (0 or None: all)",
                  low=0, optional=True),
    "top_p": Spec("float", (P04,), "sample among the classes holding this much probability",
                  low=0, high=1, open_low=True, optional=True),
    "max_note_s": Spec("float", (P04,), "end notes held longer than this many seconds "
                       "(None: the training music's longest note; 0: off)", low=0, high=MAX_NOTE_S,
                       optional=True),
    "max_polyphony": Spec("int", (P04,), "start no note while this many sound (None: the most "
                          "the training music holds at once; 0: off)", low=0, high=MAX_POLYPHONY,
                          optional=True),
    "bpm": Spec("float", (P04,), "tempo written into the MIDI files", low=MIN_WRITABLE_BPM,
                high=MAX_BPM),
    "program": Spec("int", (P04,), "General MIDI instrument of the written files", low=0, high=127),
    # 05_evaluate
    "temperatures": Spec("list", (P05,), "temperatures of the sampling grid", item="float",
                         low=0, high=100, open_low=True),
    "top_ks": Spec("list", (P05,), "top-k values of the sampling grid (0: no top-k)", item="int", low=0),
    "grid_variations": Spec("int", (P05,), "samples per grid point", low=1, high=1024),
    "long_events": Spec("int", (P05,), "events per sample in the texture comparison", low=1,
                        high=MAX_GENERATED_EVENTS),
    "grid_events": Spec("int", (P05,), "events per grid sample", low=1, high=MAX_GENERATED_EVENTS),
    # shared
    "seed": SEED,
    "primer_events": PRIMER,
    "clip_seconds": CLIP,
    "run_dir": Spec("str", ALL, "the run directory (given with --out on the command line)"),
}


def help_text() -> str:
    """The parameter list of ``--help``: name, notebooks, what it is and what values it takes."""
    lines = ["parameters (-p NAME VALUE; values are plain YAML: 0.5, [0, 1], null, text),",
             "[the notebooks that take them]:"]
    for name, spec in PARAMETERS.items():
        if name != "run_dir":
            owners = ",".join(n[:2] for n in spec.notebooks)
            lines += textwrap.wrap(f"{name:<19} [{owners}] {spec.help}: {spec.describe()}", 96,
                                   initial_indent="  ", subsequent_indent=" " * 22)
    lines.append("Defaults: the first cell of each notebook, or papermill --help-notebook "
                 "notebooks/03_train.ipynb")
    return "\n".join(lines)


def names(notebook: str) -> list[str]:
    """The parameters ``notebook`` declares, in table order."""
    _check_notebook(notebook)
    return [name for name, spec in PARAMETERS.items() if notebook in spec.notebooks]


def validate(params: dict, notebook: str | None = None) -> dict:
    """Check ``params`` and return them normalised (ints given for floats become floats, a
    single channel becomes a list, ``top_k`` 0 becomes None); raise ``ParameterError`` naming
    the first parameter at fault.

    ``notebook=None``: a run's or sweep's values, any subset of the whole series' parameters.
    ``notebook="03_train"``: exactly that notebook's parameters, every one of them.
    """
    if not isinstance(params, dict):
        raise ParameterError("(all)", f"parameters must be a mapping of names to values, "
                                      f"got {type(params).__name__}")
    for name in params:
        _check_known(name, notebook)
    if notebook is not None:
        missing = [n for n in names(notebook) if n not in params]
        if missing:
            raise ParameterError(missing[0], f"missing: {notebook} declares it")
    out = {name: check(name, value) for name, value in params.items()}
    _check_together(out)
    return out


def check(name: str, value, spec: Spec | None = None):
    """One value against its table entry (or ``spec``, for a field that shares an entry's rule
    under another name); returns it normalised."""
    spec = spec or PARAMETERS[name]
    if value is None:
        if spec.optional:
            return None
        _refuse(name, spec, value)
    if name == "channels" and is_int(value):
        value = [value]  # a single channel, as Selection accepts it
    if name == "top_k" and is_int(value) and value == 0:
        return None  # 0 means "no top-k" in 05's grid: the same here
    if spec.kind == "list":
        if not isinstance(value, (list, tuple)) or not value:
            _refuse(name, spec, value)
        items = [_scalar(name, spec, spec.item, v, whole=value) for v in value]
        if name == "channels" and len(set(items)) != len(items):
            raise ParameterError("channels", f"lists a channel twice: {items}")
        return items
    return _scalar(name, spec, spec.kind, value)


def config_from(cls, params: dict, **fixed):
    """A config of dataclass ``cls`` from the parameters of its fields' names (and ``fixed``
    values): ``config_from(TrainConfig, params)``, ``config_from(ModelConfig, params,
    sizes=codec.sizes)``. A notebook cell builds what it uses from the recorded parameters."""
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{name: value for name, value in params.items() if name in names}, **fixed)


def check_fields(config, shared: dict[str, str] | None = None) -> None:
    """Check every field of the dataclass ``config`` that the table declares by the field's
    name (or, ``shared``: by another entry's name, whose rule it shares, None allowed) and
    store the normalised value. The table is the one home of each rule: a config class and a
    run's parameters refuse the same values, with the same message."""
    shared = shared or {}
    for field in dataclasses.fields(config):
        if field.name in shared:
            spec = dataclasses.replace(PARAMETERS[shared[field.name]], optional=True)
        elif field.name in PARAMETERS:
            spec = PARAMETERS[field.name]
        else:
            continue
        value = getattr(config, field.name)
        if field.name == "channels" and not isinstance(value, (list, str, bytes)):
            with contextlib.suppress(TypeError):  # a tuple, set or array of channels: a list
                value = list(value)  # (one number, or a 0-d array, stays as it is)
        object.__setattr__(config, field.name, check(field.name, value, spec))


def _scalar(name, spec, kind, value, whole=None):
    given = value if whole is None else whole  # shown as given in the message
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = is_int(value)
        value = int(value) if ok else value
    elif kind == "float":
        ok = is_number(value, finite=True)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str) and bool(value.strip())
    if ok and kind in ("int", "float"):
        ok = _in_range(spec, value)
    if ok and spec.choices:
        ok = value in spec.choices
    if ok and spec.pattern:
        ok = re.fullmatch(spec.pattern, value) is not None
    if not ok:
        _refuse(name, spec, given)
    return value


def _in_range(spec: Spec, x) -> bool:
    if spec.low is not None and (x <= spec.low if spec.open_low else x < spec.low):
        return False
    if spec.high is not None and (x >= spec.high if spec.open_high else x > spec.high):
        return False
    return True


def _refuse(name, spec, value):
    if name in ("temperature", "temperatures") and _zero_in(value):
        raise ParameterError(name, "must be > 0: temperature 0 would make every variation the same; "
                                   "for the most likely event at every step use top_k 1")
    raise ParameterError(name, f"must be {spec.describe()}, got {_shown(value)}")


def _zero_in(value) -> bool:
    values = value if isinstance(value, (list, tuple)) else [value]
    return any(is_number(v) and v == 0 for v in values)


def _shown(value) -> str:
    """A value as the user can recognise it, short enough for one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_notebook(notebook: str) -> None:
    if notebook not in SERIES:
        raise ParameterError("notebook", f"must be one of {', '.join(SERIES)}, got {_shown(notebook)}")


def _check_known(name, notebook) -> None:
    if notebook is not None:
        _check_notebook(notebook)
    if not isinstance(name, str) or name not in PARAMETERS:
        close = difflib.get_close_matches(str(name), PARAMETERS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; see PARAMETERS in midilstm/params.py"
        raise ParameterError(name, "unknown: no notebook declares it" + hint)
    if notebook is not None and notebook not in PARAMETERS[name].notebooks:
        owners = ", ".join(PARAMETERS[name].notebooks)
        raise ParameterError(name, f"not a parameter of {notebook} (declared by {owners})")


def _check_together(p: dict) -> None:
    """Constraints that tie several parameters together (each only when all are given)."""
    for events, variations in (("n_events", "n_variations"), ("grid_events", "grid_variations")):
        if events in p and variations in p and p[events] * p[variations] > MAX_GENERATED_EVENTS:
            raise ParameterError(events, f"{events} x {variations} = {p[events] * p[variations]:,} "
                                         f"events at once is over the limit of {MAX_GENERATED_EVENTS:,}; "
                                         f"lower one of them")
    if "temperatures" in p and "top_ks" in p and len(p["temperatures"]) * len(p["top_ks"]) > MAX_GRID_POINTS:
        raise ParameterError("temperatures", f"the grid of temperatures x top_ks has "
                             f"{len(p['temperatures']) * len(p['top_ks'])} points, over {MAX_GRID_POINTS}")
