"""The compiled generation step refuses arrays that disagree, instead of writing out of bounds.

numba does not check indices, so a model and a codec of different sizes (say from a tampered
checkpoint) once made ``lstm_step`` write logits past the end of their buffer: wrong music, a
segfault or a corrupted heap. The kernels are run in a subprocess here, so that a crash fails
the test instead of killing pytest.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from midilstm.sounding import N_PITCH_CLASSES
from midilstm.step import check_step_arrays

ROOT = Path(__file__).resolve().parents[1]
SIZES = (5, 4, 3)


def step_arrays(sizes=SIZES, layers=2, streams=2, hidden=6, sounding=True, key=True):
    """Arrays of the shapes and dtypes ``Improviser`` gives the kernels, by keyword (without
    ``sounding`` or ``key``: the tables of a model that does not read them, with no rows)."""
    rng = np.random.default_rng(0)
    outputs, gates = sum(sizes), 4 * hidden

    def f32(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    return dict(sizes=np.array(sizes, np.int64), table_p=f32(sizes[0], gates),
                table_v=f32(sizes[1], gates), table_t=f32(sizes[2], gates),
                table_s=f32(sizes[0] if sounding else 0, gates),
                table_k=f32(N_PITCH_CLASSES if key else 0, gates),
                w_ih=f32(max(layers - 1, 1), gates, hidden), w_hh=f32(layers, gates, hidden),
                bias=f32(layers, gates), head_w=f32(outputs, hidden), head_b=f32(outputs),
                h=np.zeros((layers, streams, hidden), np.float32),
                c=np.zeros((layers, streams, hidden), np.float32),
                logits=np.zeros((streams, outputs), np.float32),
                probs=np.zeros((streams, outputs)),
                sounding_since=np.full((streams, sizes[0]), np.nan),
                key=rng.random((streams, N_PITCH_CLASSES)),
                time_centers=np.linspace(0.0, 1.0, sizes[2]))


def test_consistent_arrays_pass():
    check_step_arrays(**step_arrays())
    check_step_arrays(**step_arrays(layers=1, streams=1))
    check_step_arrays(**step_arrays(sounding=False, key=False))  # the lesson model's
    check_step_arrays(**step_arrays(sounding=False))
    check_step_arrays(**step_arrays(key=False))


@pytest.mark.parametrize("name", [n for n in step_arrays() if n not in ("sizes", "h")])
@pytest.mark.parametrize("change", ["one more row", "one fewer column", "float64/float32"])
def test_an_array_of_the_wrong_shape_or_dtype_is_named(name, change):
    arrays = step_arrays()
    array = arrays[name]
    if change == "one more row":
        array = np.concatenate([array, array[:1]])
    elif change == "one fewer column":
        if array.ndim == 1:
            array = array[:-1]
        else:
            array = array[..., :-1]
    else:
        array = array.astype(np.float32 if array.dtype == np.float64 else np.float64)
    arrays[name] = array
    with pytest.raises(ValueError, match=rf"^step arrays: {name} is ") as err:
        check_step_arrays(**arrays)
    assert "\n" not in str(err.value) and "need" in str(err.value)


def test_sizes_and_h_are_checked():
    with pytest.raises(ValueError, match="sizes must be three"):
        check_step_arrays(**{**step_arrays(), "sizes": (5, 4)})
    with pytest.raises(ValueError, match="h must be a float32 array"):
        check_step_arrays(**{**step_arrays(), "h": np.zeros((2, 6), np.float32)})


# Each case calls a kernel with arrays that disagree; a kernel must raise ValueError.
KERNEL_CASES = r'''
import json, sys
import numpy as np
sys.path.insert(0, "tests")
from test_step import step_arrays
from midilstm import step

def lstm(a, codes):
    step.lstm_step(codes, a["h"], a["c"], a["table_p"], a["table_v"], a["table_t"], a["table_s"],
                   a["sounding_since"], a["table_k"], a["key"], a["w_ih"], a["w_hh"], a["bias"],
                   a["head_w"], a["head_b"], a["logits"])

def sample(a, **change):
    a = {**a, **change}
    streams = a["logits"].shape[0]
    step.sample_step(a["logits"], a["sizes"], np.ones(3), 0, 1.0, 0, a["sounding_since"],
                     np.zeros(streams), np.full((streams, 3), 0.99),
                     np.zeros((streams, 3), np.int64), a["probs"])

def track(a, codes):
    step.track_notes(codes, a["time_centers"], 5.0, np.zeros(len(codes)), a["sounding_since"],
                     a["key"], 0.97, True)

def generate_with_a_bigger_model():
    """A model with more time classes than the codec (the tampered-checkpoint exploit): the
    compiled step would write its extra logits past the end of the buffer."""
    from helpers_model import fitted_codec, random_walk_events, tiny_model
    from midilstm.generate import generate
    events = random_walk_events(40)
    model = tiny_model(fitted_codec(events, n_time_bins=30))
    generate(model, fitted_codec(events, n_time_bins=2), events[:10], n_events=50, n_variations=2)

GOOD = np.array([[4, 3, 2], [0, 0, 0]], np.int64)  # the largest and smallest class of each head
BIG_MODEL = step_arrays(sizes=(5, 4, 300))  # the model's heads: more classes than the codec's
cases = {
    "valid codes, valid arrays": lambda: (lstm(step_arrays(), GOOD), sample(step_arrays()),
                                          track(step_arrays(), GOOD),
                                          lstm(step_arrays(sounding=False, key=False), GOOD)),
    "head_w with more rows than logits": lambda: lstm(
        {**step_arrays(), "head_w": BIG_MODEL["head_w"], "head_b": BIG_MODEL["head_b"]}, GOOD),
    "a pitch code past the table": lambda: lstm(step_arrays(), np.array([[5, 0, 0], [0, 0, 0]])),
    "a negative time code": lambda: lstm(step_arrays(), np.array([[0, 0, -1], [0, 0, 0]])),
    "table rows of the wrong width": lambda: lstm(
        {**step_arrays(), "table_v": step_arrays(hidden=7)["table_v"]}, GOOD),
    "w_hh of another hidden size": lambda: lstm(
        {**step_arrays(), "w_hh": step_arrays(hidden=60)["w_hh"]}, GOOD),
    "codes for more streams than the state": lambda: lstm(step_arrays(),
                                                           np.zeros((40, 3), np.int64)),
    "sizes that add up to more than the logits": lambda: sample(
        step_arrays(), sizes=np.array([5, 4, 300], np.int64)),
    "sounding_since narrower than the pitches": lambda: sample(
        step_arrays(), sounding_since=np.full((2, 2), np.nan)),
    "probs narrower than the logits": lambda: sample(step_arrays(), probs=np.zeros((2, 3))),
    "a time code past time_centers": lambda: track(step_arrays(), np.array([[0, 1, 3], [0, 1, 0]])),
    "generate with a model bigger than the codec": generate_with_a_bigger_model,
    "a pitch code past sounding_since": lambda: track(step_arrays(),
                                                      np.array([[900, 1, 0], [0, 1, 0]])),
    "table_k rows of the wrong width": lambda: lstm(
        {**step_arrays(), "table_k": step_arrays(hidden=7)["table_k"]}, GOOD),
    "key for fewer streams than the state": lambda: lstm(
        {**step_arrays(), "key": np.ones((1, 12))}, GOOD),
    "key narrower than table_k": lambda: lstm({**step_arrays(), "key": np.ones((2, 5))}, GOOD),
    "table_k without rows, table_s of the wrong width": lambda: lstm(
        {**step_arrays(key=False), "table_s": step_arrays(hidden=7)["table_s"]}, GOOD),
    "track key for fewer streams": lambda: track({**step_arrays(), "key": np.ones((1, 12))},
                                                 GOOD),
    "track key without columns": lambda: track({**step_arrays(), "key": np.ones((2, 0))}, GOOD),
}
out = {}
for name, case in cases.items():
    try:
        case()
        out[name] = None
    except ValueError as err:
        out[name] = str(err)
print(json.dumps(out))
'''


def test_kernels_refuse_mismatched_arrays_without_crashing():
    done = subprocess.run([sys.executable, "-c", KERNEL_CASES], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"crashed (rc {done.returncode}): {done.stderr[-2000:]}"
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results.pop("valid codes, valid arrays") is None
    for case, message in results.items():
        assert message is not None, f"{case}: no error"
        assert "\n" not in message and message.split(":")[0] in (
            "lstm_step", "sample_step", "track_notes", "step arrays"), (case, message)
