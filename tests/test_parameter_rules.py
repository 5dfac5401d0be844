"""One rule per parameter: every entry of the parameter table and the class or function that
takes the same value (a config, the codec, the reader's Selection, generation, the MIDI writer)
accept and refuse exactly the same values, walked over each entry's edges and odd types."""
import math

import numpy as np
import pytest

import midilstm.generate as generate_module
from helpers_model import fitted_codec, pattern_events, tiny_model
from helpers_model import one_thread  # noqa: F401  (autouse: one torch thread)
from midilstm.batch import CorpusTrainConfig
from midilstm.codec import EventCodec
from midilstm.data import split
from midilstm.errors import CodecError, ParameterError
from midilstm.export import events_to_midi
from midilstm.generate import Improviser, generate
from midilstm.model import ModelConfig
from midilstm.params import PARAMETERS, check
from midilstm.parse import Selection
from midilstm.sampling import SamplingConfig
from midilstm.train import TrainConfig

EVENTS = pattern_events(4)
CODEC = fitted_codec(EVENTS)
MODEL = tiny_model(CODEC)


class Reached(Exception):
    """Generation got past its checks (it is stopped there: a valid 2,000,000 events is slow)."""


def generation(**kw):
    def stop(*args, **kwargs):
        raise Reached
    real = generate_module.Improviser
    generate_module.Improviser = stop
    try:
        generate(MODEL, CODEC, EVENTS[:8], **kw)
    except Reached:
        pass
    finally:
        generate_module.Improviser = real


SIZES = (89, 128, 33)
# Who else takes each parameter: every one of them must agree with the table.
TAKERS = {
    **{name: [lambda v, n=name: Selection(**{n: v})]
       for name in ("channels", "include_drums", "sustain_pedal", "out_of_range")},
    **{name: [lambda v, n=name: EventCodec(**{n: v})]
       for name in ("time_strategy", "n_time_bins", "velocity_bins")},
    "val_fraction": [lambda v: split([EVENTS, EVENTS], val_fraction=v),
                     lambda v: CorpusTrainConfig(val_fraction=v)],
    **{name: [lambda v, n=name: ModelConfig(sizes=SIZES, **{n: v})]
       for name in ("arch", "hidden_size", "num_layers", "heads", "context", "input_mode",
                    "sounding_input", "key_input", "age_input", "dropout")},
    **{name: [lambda v, n=name: TrainConfig(**{n: v}), lambda v, n=name: CorpusTrainConfig(**{n: v})]
       for name in ("seq_len", "batch_size", "epochs", "lr", "patience", "transpose_semitones",
                    "device")},
    "seed": [lambda v: TrainConfig(seed=v), lambda v: CorpusTrainConfig(seed=v),
             lambda v: split([EVENTS, EVENTS], seed=v), lambda v: Improviser(MODEL, CODEC, seed=v)],
    **{name: [lambda v, n=name: SamplingConfig(**{n: v})]
       for name in ("temperature", "top_k", "top_p", "max_note_s", "max_polyphony")},
    "n_events": [lambda v: generation(n_events=v)],
    "seconds": [lambda v: generation(seconds=v)],
    "n_variations": [lambda v: Improviser(MODEL, CODEC, n_variations=v)],
    "bpm": [lambda v: events_to_midi(EVENTS, bpm=v)],
    "program": [lambda v: events_to_midi(EVENTS, program=v)],
}
# Read only by a notebook's own cells: no other taker to disagree with. The grids' items
# share the rule of one value (checked below).
NOTEBOOK_ONLY = {"piece", "run_dir", "clip_seconds", "primer_events", "grid_variations",
                 "long_events", "grid_events", "temperatures", "top_ks"}
GRID_ITEMS = {"temperatures": lambda x: SamplingConfig(temperature=x),
              "top_ks": lambda x: SamplingConfig(top_k=x)}
# per-head temperatures follow the overall temperature's rule (None: as the overall one)
SHARED = {f"temperature_{head}": "temperature" for head in ("pitch", "velocity", "time")}


def candidates(name: str) -> list:
    """Values on and around the entry's bounds, its choices, and odd types."""
    spec = PARAMETERS[name]
    values = [None, True, False, "x", "", 0, 1, -1, 2, 0.5, 2.0, 20.0, 2**31, 2**40,
              math.nan, math.inf, np.int64(3), np.float64(0.25)]
    for bound in (spec.low, spec.high):
        if bound is not None:
            values += [bound, bound - 1, bound + 1, bound * (1 - 1e-9), bound * (1 + 1e-9) + 1e-12]
            values += [int(bound), int(bound) - 1, int(bound) + 1]
    values += list(spec.choices) + [f"{c}x" for c in spec.choices] + ["cuda:0", "cuda:x", "mps"]
    if spec.kind == "list":
        values += [[v] for v in values if not isinstance(v, list)] + [[], [1, 1], [0, 2], (3,)]
    return values


def accepts(take, value) -> bool:
    try:
        take(value)
    except (ParameterError, CodecError):
        return False
    return True


def test_every_parameter_has_a_taker_or_is_read_by_a_notebook_only():
    assert set(TAKERS) | NOTEBOOK_ONLY == set(PARAMETERS)
    assert not set(TAKERS) & NOTEBOOK_ONLY


@pytest.mark.parametrize("name", sorted(TAKERS))
def test_the_table_and_every_taker_refuse_the_same_values(name):
    for value in candidates(name):
        table = accepts(lambda v: check(name, v), value)
        for take in TAKERS[name]:
            assert accepts(take, value) == table, (name, value, table)


@pytest.mark.parametrize("name", sorted(GRID_ITEMS))
def test_a_grid_item_follows_the_rule_of_one_value(name):
    for value in candidates(name):  # None: "not given" for one value; a grid says 0 for "off"
        if value is not None and not isinstance(value, list):
            assert accepts(lambda v: check(name, [v]), value) == accepts(GRID_ITEMS[name], value)


@pytest.mark.parametrize("field", sorted(SHARED))
def test_a_per_head_temperature_follows_the_temperature_rule_or_is_none(field):
    for value in candidates("temperature"):
        expected = value is None or accepts(lambda v: check("temperature", v), value)
        assert accepts(lambda v: SamplingConfig(**{field: v}), value) == expected, value


def test_the_issue_cases_are_refused_or_taken_alike():
    for config in (lambda: TrainConfig(lr=2.0), lambda: TrainConfig(seed=2**40)):
        with pytest.raises(ParameterError):
            config()
    assert SamplingConfig(top_k=0).top_k is None and check("top_k", 0) is None
    with pytest.raises(ParameterError, match="pitch_low: 70 is above pitch_high 60"):
        Selection(pitch_low=70, pitch_high=60)
