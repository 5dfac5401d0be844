"""The compiled generation kernels refuse arrays that disagree, instead of writing out of bounds.

numba does not check indices, so a model and a codec of different sizes (say from a tampered
checkpoint) once made the LSTM step write logits past the end of their buffer: wrong music, a
segfault or a corrupted heap. The kernels are run in a subprocess here, so that a crash fails
the test instead of killing pytest.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from helpers_model import fitted_codec, random_walk_events, tiny_model
from midilstm.lstm_step import LSTMWeights, lstm_weights
from midilstm.model import LESSON_INPUTS
from midilstm.sounding import N_PITCH_CLASSES

ROOT = Path(__file__).resolve().parents[1]
SIZES = (5, 4, 3)


def step_arrays(sizes=SIZES, layers=2, streams=2, hidden=6, sounding=True, key=True, age=True):
    """Arrays of the shapes and dtypes ``Improviser`` gives the kernels, by keyword (without
    ``sounding``, ``key`` or ``age``: the tables of a model that does not read them, with no
    rows)."""
    rng = np.random.default_rng(0)
    outputs, gates = sum(sizes), 4 * hidden

    def f32(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    weights = LSTMWeights(table_p=f32(sizes[0], gates), table_v=f32(sizes[1], gates),
                          table_t=f32(sizes[2], gates),
                          table_s=f32(sizes[0] if sounding else 0, gates),
                          table_a=f32(sizes[0] if age else 0, gates),
                          table_k=f32(N_PITCH_CLASSES if key else 0, gates),
                          w_ih=f32(max(layers - 1, 1), gates, hidden),
                          w_hh=f32(layers, gates, hidden), bias=f32(layers, gates),
                          head_w=f32(outputs, hidden), head_b=f32(outputs))
    return dict(sizes=np.array(sizes, np.int64), weights=weights,
                h=np.zeros((layers, streams, hidden), np.float32),
                c=np.zeros((layers, streams, hidden), np.float32),
                logits=np.zeros((streams, outputs), np.float32),
                probs=np.zeros((streams, outputs)),
                sounding_since=np.full((streams, sizes[0]), np.nan),
                ages=np.zeros((streams, sizes[0])), age_shares=np.zeros((streams, sizes[0]), np.float32),
                key=rng.random((streams, N_PITCH_CLASSES)),
                time_centers=np.linspace(0.0, 1.0, sizes[2]))


def test_the_weights_of_a_real_model_have_the_shapes_the_kernel_checks():
    events = random_walk_events(60)
    codec = fitted_codec(events, n_time_bins=4)
    for kw in (dict(num_layers=2), dict(LESSON_INPUTS),
               dict(sounding_input=False)):
        model = tiny_model(codec, **kw)
        weights = lstm_weights(model)
        hidden, gates = model.config.hidden_size, 4 * model.config.hidden_size
        assert weights.table_p.shape == (codec.sizes[0], gates)
        assert weights.w_hh.shape == (model.config.num_layers, gates, hidden)
        assert weights.table_s.shape[0] == (codec.n_pitches if model.config.sounding_input else 0)
        assert weights.table_a.shape[0] == (codec.n_pitches if model.config.age_input else 0)
        assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in weights)


# Each case calls a kernel with arrays that disagree; a kernel must raise ValueError.
KERNEL_CASES = r'''
import json, sys
import numpy as np
sys.path.insert(0, "tests")
from test_kernels import step_arrays
from midilstm.lstm_step import lstm_step
from midilstm.sampling import SamplingConfig, sample_step
from midilstm.sounding import track_notes

def lstm(a, codes, **weights):
    w = a["weights"]._replace(**weights)
    lstm_step(codes, a["h"], a["c"], w, a["sounding_since"], a["key"], a["age_shares"],
              a["logits"])

def sample(a, **change):
    a = {**a, **change}
    streams = a["logits"].shape[0]
    knobs = SamplingConfig(max_note_s=0, max_polyphony=0).knobs()
    sample_step(a["logits"], a["sizes"], knobs, a["sounding_since"], np.zeros(streams),
                np.full((streams, 3), 0.99), np.zeros((streams, 3), np.int64), a["probs"])

def track(a, codes):
    track_notes(codes, a["time_centers"], 5.0, np.zeros(len(codes)), a["sounding_since"],
                a["key"], 0.97, True, a["ages"])

GOOD = np.array([[4, 3, 2], [0, 0, 0]], np.int64)  # the largest and smallest class of each head
BIG = step_arrays(sizes=(5, 4, 300))["weights"]  # the model's heads: more classes than the codec's
OTHER = step_arrays(hidden=7)["weights"]
cases = {
    "valid codes, valid arrays": lambda: (lstm(step_arrays(), GOOD), sample(step_arrays()),
                                          track(step_arrays(), GOOD),
                                          lstm(step_arrays(sounding=False, key=False,
                                                           age=False), GOOD),
                                          lstm(step_arrays(sounding=False), GOOD)),
    "head_w with more rows than logits": lambda: lstm(step_arrays(), GOOD, head_w=BIG.head_w,
                                                      head_b=BIG.head_b),
    "a pitch code past the table": lambda: lstm(step_arrays(), np.array([[5, 0, 0], [0, 0, 0]])),
    "a negative time code": lambda: lstm(step_arrays(), np.array([[0, 0, -1], [0, 0, 0]])),
    "table rows of the wrong width": lambda: lstm(step_arrays(), GOOD, table_v=OTHER.table_v),
    "w_hh of another hidden size": lambda: lstm(step_arrays(), GOOD,
                                                w_hh=step_arrays(hidden=60)["weights"].w_hh),
    "w_ih and w_hh swapped": lambda: lstm(step_arrays(), GOOD, w_ih=step_arrays()["weights"].w_hh,
                                          w_hh=step_arrays()["weights"].w_ih),
    "codes for more streams than the state": lambda: lstm(step_arrays(),
                                                           np.zeros((40, 3), np.int64)),
    "sizes that add up to more than the logits": lambda: sample(
        step_arrays(), sizes=np.array([5, 4, 300], np.int64)),
    "sounding_since narrower than the pitches": lambda: sample(
        step_arrays(), sounding_since=np.full((2, 2), np.nan)),
    "probs narrower than the logits": lambda: sample(step_arrays(), probs=np.zeros((2, 3))),
    "a time code past time_centers": lambda: track(step_arrays(), np.array([[0, 1, 3], [0, 1, 0]])),
    "a pitch code past sounding_since": lambda: track(step_arrays(),
                                                      np.array([[900, 1, 0], [0, 1, 0]])),
    "table_k rows of the wrong width": lambda: lstm(step_arrays(), GOOD, table_k=OTHER.table_k),
    "key for fewer streams than the state": lambda: lstm(
        {**step_arrays(), "key": np.ones((1, 12))}, GOOD),
    "key narrower than table_k": lambda: lstm({**step_arrays(), "key": np.ones((2, 5))}, GOOD),
    "table_k without rows, table_s of the wrong width": lambda: lstm(
        step_arrays(key=False), GOOD, table_s=OTHER.table_s),
    "track key for fewer streams": lambda: track({**step_arrays(), "key": np.ones((1, 12))},
                                                 GOOD),
    "track key without columns": lambda: track({**step_arrays(), "key": np.ones((2, 0))}, GOOD),
    "table_a rows of the wrong width": lambda: lstm(step_arrays(), GOOD, table_a=OTHER.table_a),
    "table_a for fewer pitches": lambda: lstm(step_arrays(), GOOD,
                                              table_a=step_arrays(sizes=(3, 4, 3))["weights"].table_a),
    "age shares for fewer streams": lambda: lstm(
        {**step_arrays(), "age_shares": np.zeros((1, 5), np.float32)}, GOOD),
    "track ages narrower than the pitches": lambda: track(
        {**step_arrays(), "ages": np.zeros((2, 3))}, GOOD),
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
            "lstm_step", "sample_step", "track_notes"), (case, message)
