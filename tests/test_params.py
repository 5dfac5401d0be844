"""Notebook parameters: the table agrees with the notebooks' parameters cells, their defaults
pass, and every usual mistake is refused in one line that names the parameter."""
import ast
import math

import numpy as np
import papermill
import pytest
import yaml

from midilstm import params
from midilstm.errors import ParameterError
from midilstm.runs import NOTEBOOK_DIR

# How papermill names the type annotation of each kind of table entry.
TYPE_NAMES = {("int", False): "int", ("float", False): "float", ("str", False): "str",
              ("bool", False): "bool", ("list", False): "list", ("int", True): "Optional[int]",
              ("float", True): "Optional[float]", ("list", True): "Optional[list]"}


@pytest.fixture(scope="module")
def declared():
    """Each notebook's parameters cell, read by papermill (not by our own code)."""
    return {name: papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))
            for name in params.SERIES}


def defaults(declared, notebook):
    return {k: ast.literal_eval(v["default"]) for k, v in declared[notebook].items()}


def refused(values, notebook=None) -> str:
    with pytest.raises(ParameterError) as info:
        params.validate(values, notebook)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_table_and_notebooks_declare_the_same_parameters_with_the_same_types(declared):
    for notebook, cell in declared.items():
        assert set(params.names(notebook)) == set(cell), notebook
        for name, entry in cell.items():
            spec = params.PARAMETERS[name]
            assert TYPE_NAMES[spec.kind, spec.optional] == entry["inferred_type_name"], (notebook, name)
    every = set().union(*declared.values())
    assert set(params.PARAMETERS) == every  # nothing in the table that no notebook declares


def test_each_notebooks_defaults_pass_unchanged(declared):
    for notebook in params.SERIES:
        values = defaults(declared, notebook)
        out = params.validate(values, notebook)
        assert set(out) == set(values)
        for name, value in values.items():
            if not (name == "top_k" and value == 0):
                assert out[name] == value, (notebook, name)


def test_a_whole_series_set_is_any_subset_of_the_union(declared):
    union = {}
    for notebook in params.SERIES:
        union.update(defaults(declared, notebook))
    assert params.validate(union) == union
    assert params.validate({}) == {}
    assert params.validate({"epochs": 5, "temperature": 0.8}) == {"epochs": 5, "temperature": 0.8}


def test_epochs_ten_names_the_parameter_and_the_rule():
    assert refused({"epochs": "ten"}) == "parameter epochs: must be an integer >= 1, got 'ten'"


@pytest.mark.parametrize("values, name, words", [
    ({"epochs": 0}, "epochs", ">= 1, got 0"),
    ({"epochs": -3}, "epochs", ">= 1"),
    ({"epochs": 2.5}, "epochs", "an integer"),
    ({"top_p": 2}, "top_p", "in (0, 1] or None, got 2"),
    ({"top_p": 0}, "top_p", "in (0, 1]"),
    ({"top_k": -1}, "top_k", ">= 0 or None"),
    ({"n_time_bins": 0}, "n_time_bins", "in 1..1024"),
    ({"n_time_bins": 1025}, "n_time_bins", "in 1..1024"),
    ({"val_fraction": 0}, "val_fraction", "in (0, 1)"),
    ({"val_fraction": 1}, "val_fraction", "in (0, 1)"),
    ({"hidden_size": 4097}, "hidden_size", "in 1..4096"),
    ({"hidden_size": 20000}, "hidden_size", "in 1..4096"),
    ({"dropout": 1.0}, "dropout", "in [0, 1)"),
    ({"lr": 0}, "lr", "in (0, 1]"),
    ({"patience": 0}, "patience", ">= 1"),
    ({"velocity_bins": 128}, "velocity_bins", "in 1..127 or None"),
    ({"program": 128}, "program", "in 0..127"),
    ({"bpm": 0}, "bpm", "in 3.5763..2000"),
    ({"seed": -1}, "seed", "in 0..4294967295"),
    ({"max_note_s": -1}, "max_note_s", "in 0..3600 or None"),  # 0 is "off", None "learned"
    ({"max_note_s": 3601}, "max_note_s", "in 0..3600 or None"),
    ({"max_polyphony": -1}, "max_polyphony", "in 0..128 or None"),
    ({"max_polyphony": 129}, "max_polyphony", "in 0..128 or None"),
    ({"max_polyphony": 2.5}, "max_polyphony", "an integer"),
    ({"channels": [16]}, "channels", "integers in 0..15"),
    ({"channels": []}, "channels", "a non-empty list"),
    ({"temperatures": [0.5, -1.0]}, "temperatures", "numbers in (0, 100]"),
    ({"top_ks": [5, -2]}, "top_ks", "integers >= 0"),
    ({"time_strategy": "linear"}, "time_strategy", "one of 'uniform', 'log', 'quantile'"),
    ({"input_mode": "onehot"}, "input_mode", "one of 'one_hot', 'embedding'"),
    ({"out_of_range": "clip"}, "out_of_range", "one of 'fold', 'drop'"),
    ({"device": "gpu"}, "device", '"cuda:N"'),
    ({"piece": ""}, "piece", "a string"),
])
def test_out_of_range_values_name_the_parameter(values, name, words):
    message = refused(values)
    assert message.startswith(f"parameter {name}: must be ")
    assert words in message


@pytest.mark.parametrize("values, name", [
    ({"epochs": True}, "epochs"),          # bool is an int to Python, never to us
    ({"n_time_bins": False}, "n_time_bins"),
    ({"temperature": True}, "temperature"),
    ({"channels": [True]}, "channels"),
    ({"include_drums": 1}, "include_drums"),
    ({"include_drums": "yes"}, "include_drums"),
    ({"sounding_input": 1}, "sounding_input"),
    ({"max_polyphony": True}, "max_polyphony"),
    ({"n_time_bins": "32"}, "n_time_bins"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"piece": 5}, "piece"),
    ({"piece": ["a.mid"]}, "piece"),
    ({"temperatures": 0.5}, "temperatures"),
    ({"temperatures": "0.5"}, "temperatures"),
    ({"top_ks": [5.5]}, "top_ks"),
    ({"seconds": "10"}, "seconds"),
    ({"epochs": None}, "epochs"),
    ({"hidden_size": {"a": 1}}, "hidden_size"),
])
def test_wrong_types_are_refused_naming_the_parameter(values, name):
    assert refused(values).startswith(f"parameter {name}: must be ")


def test_the_texture_limits_may_be_learned_off_or_set():
    for value in (None, 0, 3):  # None: learned from the training music; 0: off
        assert params.validate({"max_note_s": value, "max_polyphony": value}) == {
            "max_note_s": None if value is None else float(value), "max_polyphony": value}


def test_temperature_zero_says_how_to_get_the_most_likely_event():
    for values, name in (({"temperature": 0}, "temperature"), ({"temperatures": [0.5, 0]}, "temperatures")):
        message = refused(values)
        assert message.startswith(f"parameter {name}: must be > 0")
        assert "every variation the same" in message and "top_k 1" in message


def test_unknown_names_are_refused_with_a_suggestion():
    assert refused({"temprature": 0.9}) == ("parameter temprature: unknown: no notebook declares it; "
                                            "did you mean 'temperature'?")
    assert "unknown" in refused({"zzz": 1})


def test_one_notebook_wants_exactly_its_own_parameters(declared):
    values = defaults(declared, "03_train")
    assert refused({**values, "temperature": 1.0}, "03_train") == (
        "parameter temperature: not a parameter of 03_train (declared by 04_generate)")
    del values["epochs"]
    assert refused(values, "03_train") == "parameter epochs: missing: 03_train declares it"
    assert refused({}, "06_extra").startswith("parameter notebook: must be one of 01_parse")


def test_values_are_normalised():
    out = params.validate({"lr": 1, "temperature": np.float32(0.5), "epochs": np.int64(7),
                           "channels": 3, "top_k": 0, "seconds": None, "temperatures": [1, 2]})
    assert out == {"lr": 1.0, "temperature": 0.5, "epochs": 7, "channels": [3], "top_k": None,
                   "seconds": None, "temperatures": [1.0, 2.0]}
    assert type(out["lr"]) is float and type(out["epochs"]) is int
    assert all(type(t) is float for t in out["temperatures"])
    assert params.validate({"top_k": 5, "device": "cuda:1", "velocity_bins": None}) == {
        "top_k": 5, "device": "cuda:1", "velocity_bins": None}


def test_constraints_between_parameters():
    message = refused({"n_events": 100_000, "n_variations": 100})
    assert message.startswith("parameter n_events: n_events x n_variations = 10,000,000")
    assert params.validate({"n_events": 20_000, "n_variations": 100})  # exactly at the limit
    assert refused({"grid_events": 1_000_000, "grid_variations": 4}).startswith("parameter grid_events:")
    assert refused({"temperatures": [1.0] * 9, "top_ks": [0] * 8}).startswith("parameter temperatures:")
    assert refused({"channels": [0, 1, 0]}) == "parameter channels: lists a channel twice: [0, 1, 0]"


def test_a_yaml_tagged_value_is_data_that_is_refused_not_code(tmp_path):
    payload = "!!omap [ 'x\", __import__(\"os\").system(\"touch PWNED\"), \"': 1 ]"
    value = yaml.safe_load(payload)
    for name in ("piece", "channels", "temperatures", "device"):
        assert refused({name: value}).startswith(f"parameter {name}: must be ")
    assert not (tmp_path / "PWNED").exists()


def test_a_long_value_is_cut_to_keep_the_message_short():
    message = refused({"piece": list(range(1000))})
    assert len(message) < 160 and message.endswith("...")


def test_not_a_mapping_is_refused():
    assert refused([("epochs", 3)]).startswith("parameter (all): parameters must be a mapping")
