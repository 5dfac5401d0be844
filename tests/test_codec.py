"""The event codec: classes, the zero-time class, the three time-bin strategies, velocity bins,
saving, timing errors, the lesson's uniform-bin collapse, and validation of tampered codecs."""
import json
import re
import time
import tracemalloc

import numpy as np
import pytest

from midilstm.codec import EventCodec
from midilstm.errors import CodecError
from midilstm.events import make_events

# C2 for a quarter at 60 bpm (1 s), then a chord; deltas 0, 0.25, 1.0 (and two zeros).
EVENTS = make_events([(36, 80, 0.0), (36, 0, 0.25), (60, 90, 0.25), (64, 91, 0.0),
                      (60, 0, 1.0), (64, 0, 0.0)])


def test_fit_encode_decode():
    codec = EventCodec(time_strategy="log", n_time_bins=2).fit(EVENTS)
    # positive deltas 0.25, 0.25, 1.0: log edges 0.25, 0.5, 1.0; bin 0 holds 0.25, bin 1 holds 1.0
    np.testing.assert_allclose(codec.time_edges_s, [0.25, 0.5, 1.0])
    np.testing.assert_allclose(codec.time_centers_s, [0.25, 1.0])
    assert codec.sizes == (89, 128, 3)
    codes = codec.encode(EVENTS)
    assert codes.dtype == np.int64
    assert codes.tolist() == [[12, 80, 0], [12, 0, 1], [36, 90, 1], [40, 91, 0],
                              [36, 0, 2], [40, 0, 0]]
    decoded = codec.decode(codes)
    assert decoded.tolist() == EVENTS.tolist()


def test_pitch_classes_cover_24_to_112():
    codec = EventCodec(n_time_bins=1).fit(make_events([(24, 1, 0.5), (112, 127, 0.5)]))
    assert codec.encode(make_events([(24, 1, 0.5), (112, 127, 0.5)]))[:, :2].tolist() == \
        [[0, 1], [88, 127]]
    with pytest.raises(ValueError, match="24..112"):
        codec.encode(make_events([(23, 80, 0.5)]))
    with pytest.raises(ValueError):
        codec.encode(make_events([(113, 80, 0.5)]))


def test_zero_time_class():
    codec = EventCodec(n_time_bins=4).fit(make_events([(60, 80, d) for d in (0.1, 0.2, 0.4, 0.8)]))
    # 0 and anything below same_time_s (2 ms) are "at the same time": class 0, decoded as 0 s
    codes = codec.encode(make_events([(60, 80, 0.0), (60, 80, 0.001), (60, 80, 0.1)]))
    assert codes[:, 2].tolist() == [0, 0, 1]
    assert codec.decode([[36, 80, 0]])["delta_s"].tolist() == [0.0]


def test_same_time_zero_is_the_lessons_exact_zero_class():
    codec = EventCodec(n_time_bins=2, same_time_s=0.0).fit(
        make_events([(60, 80, 0.0), (60, 80, 0.001), (60, 80, 0.5)]))
    assert codec.time_edges_s[0] == pytest.approx(0.001)
    codes = codec.encode(make_events([(60, 80, 0.0), (60, 80, 0.001), (60, 80, 0.5)]))
    assert codes[:, 2].tolist() == [0, 1, 2]


def test_unfitted_codec_and_data_without_positive_deltas():
    with pytest.raises(RuntimeError, match="not fitted"):
        EventCodec().encode(EVENTS)
    with pytest.raises(ValueError, match="cannot fit"):
        EventCodec().fit(make_events([(60, 80, 0.0), (60, 0, 0.0)]))
    with pytest.raises(ValueError):
        EventCodec(time_strategy="linear")
    with pytest.raises(ValueError):
        EventCodec(velocity_bins=0)


def test_fit_on_a_list_of_pieces():
    a = make_events([(60, 80, 0.1)])
    b = make_events([(60, 80, 1.0)])
    codec = EventCodec(time_strategy="uniform", n_time_bins=3).fit([a, b])
    np.testing.assert_allclose(codec.time_edges_s, [0.1, 0.4, 0.7, 1.0])


DELTAS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def deltas_events(deltas):
    return make_events([(60, 80, d) for d in deltas])


def test_uniform_edges():
    codec = EventCodec(time_strategy="uniform", n_time_bins=3).fit(deltas_events(DELTAS))
    np.testing.assert_allclose(codec.time_edges_s, [0.1, 0.4, 0.7, 1.0])
    # bins [0.1,0.4) [0.4,0.7) [0.7,1.0]; out-of-range deltas go to the end bins
    codes = codec.encode(deltas_events([0.05, 0.1, 0.39, 0.4, 0.7, 1.0, 5.0]))
    assert codes[:, 2].tolist() == [1, 1, 1, 2, 3, 3, 3]
    np.testing.assert_allclose(codec.time_centers_s, [0.2, 0.5, 0.85])


def test_log_edges():
    codec = EventCodec(time_strategy="log", n_time_bins=2).fit(deltas_events([0.01, 0.1, 1.0]))
    np.testing.assert_allclose(codec.time_edges_s, [0.01, 0.1, 1.0])


def test_quantile_edges_hold_equal_counts():
    codec = EventCodec(time_strategy="quantile", n_time_bins=2).fit(deltas_events(DELTAS))
    np.testing.assert_allclose(codec.time_edges_s, [0.1, 0.55, 1.0])
    assert np.bincount(codec.encode(deltas_events(DELTAS))[:, 2]).tolist() == [0, 5, 5]


def test_quantile_handles_repeated_values():
    # A score: mostly eighths, some quarters, few half notes -> plain quantiles repeat 0.25.
    deltas = [0.25] * 100 + [0.5] * 50 + [1.0] * 10
    codec = EventCodec(time_strategy="quantile", n_time_bins=8).fit(deltas_events(deltas))
    edges = np.array(codec.time_edges_s)
    assert len(edges) == 9 and (np.diff(edges) > 0).all()
    # each distinct delta keeps a class of its own, so it decodes exactly
    codes = codec.encode(deltas_events([0.25, 0.5, 1.0]))
    assert len(set(codes[:, 2].tolist())) == 3
    assert codec.timing_error_ms(deltas_events(deltas))["delta_mean_ms"] == pytest.approx(0)


@pytest.mark.parametrize("strategy", ["uniform", "log", "quantile"])
@pytest.mark.parametrize("deltas", [DELTAS, [0.5] * 20, [0.25] * 30 + [4.0], [0.003, 0.004]],
                         ids=["spread", "one_value", "one_long_pause", "tiny"])
def test_edges_strictly_increasing(strategy, deltas):
    codec = EventCodec(time_strategy=strategy, n_time_bins=16).fit(deltas_events(deltas))
    edges = np.array(codec.time_edges_s)
    assert len(edges) == 17 and (np.diff(edges) > 0).all()
    assert edges[0] == pytest.approx(min(deltas)) and edges[-1] == pytest.approx(max(deltas))
    assert len(codec.time_centers_s) == 16
    # every training delta decodes to a delta inside its bin
    decoded = codec.decode(codec.encode(deltas_events(deltas)))["delta_s"]
    assert (decoded >= edges[0] - 1e-12).all() and (decoded <= edges[-1] + 1e-12).all()


def test_velocity_bins():
    codec = EventCodec(n_time_bins=1, velocity_bins=32).fit(EVENTS)
    assert codec.sizes == (89, 33, 2)
    # 32 bins of width 127/32 = 3.97 over 1..127: bin k holds v with (k-1)*3.97 <= v-1 < k*3.97,
    # so 1-4 -> 1, 5-8 -> 2, 9-12 -> 3, ..., 64 -> 16, ..., 124 -> 31, 125-127 -> 32
    velocities = make_events([(60, v, 0.0) for v in (0, 1, 4, 5, 8, 9, 64, 124, 125, 127)])
    assert codec.encode(velocities)[:, 1].tolist() == [0, 1, 1, 2, 2, 3, 16, 31, 32, 32]
    decoded = codec.decode([[36, 0, 0], [36, 1, 0], [36, 32, 0]])["velocity"].tolist()
    assert decoded[0] == 0  # note-off stays a note-off
    assert 1 <= decoded[1] <= 4 and 125 <= decoded[2] <= 127


def test_velocity_bins_decode_into_their_own_bin():
    """For every bin count: only velocity 0 is class 0, every class is used, classes grow with
    velocity, and each class decodes to a velocity that encodes back to it."""
    wrong = []
    for bins in range(1, 128):
        codec = EventCodec(n_time_bins=1, velocity_bins=bins).fit(EVENTS)
        classes = codec.encode(make_events([(60, v, 0.0) for v in range(128)]))[:, 1]
        codes = [[0, c, 0] for c in range(bins + 1)]
        again = codec.encode(codec.decode(codes))[:, 1]
        if not (classes[0] == 0 and (classes[1:] >= 1).all() and (np.diff(classes) >= 0).all()
                and sorted(set(classes.tolist())) == list(range(bins + 1))
                and again.tolist() == list(range(bins + 1))):
            wrong.append(bins)
    assert wrong == []


@pytest.mark.parametrize("options", [dict(), dict(time_strategy="uniform", n_time_bins=10),
                                     dict(time_strategy="quantile", velocity_bins=32)])
def test_save_load_round_trip(tmp_path, options):
    rng = np.random.default_rng(0)
    events = make_events([(int(p), int(v), float(d)) for p, v, d in zip(
        rng.integers(24, 113, 500), rng.integers(0, 128, 500), rng.exponential(0.3, 500))])
    codec = EventCodec(**options).fit(events)
    path = codec.save(tmp_path / "codec.json")
    assert json.loads(path.read_text())["time_strategy"] == codec.time_strategy
    loaded = EventCodec.load(path)
    assert loaded == codec
    assert np.array_equal(loaded.encode(events), codec.encode(events))
    codes = codec.encode(events)
    assert loaded.decode(codes).tolist() == codec.decode(codes).tolist()


def test_timing_error_ms():
    # One bin holding 0.1 and 0.3 s decodes both to their mean 0.2 s: each delta is 100 ms off;
    # onsets: 0.1 -> 0.2 (100 ms late), 0.4 -> 0.4 (back in place).
    codec = EventCodec(time_strategy="uniform", n_time_bins=1).fit(deltas_events([0.1, 0.3]))
    error = codec.timing_error_ms(deltas_events([0.1, 0.3]))
    assert error["delta_mean_ms"] == pytest.approx(100)
    assert error["delta_median_ms"] == pytest.approx(100)
    assert error["delta_p95_ms"] == pytest.approx(100)
    assert error["onset_mean_ms"] == pytest.approx(50)
    assert error["onset_final_ms"] == pytest.approx(0, abs=1e-9)


def test_decoded_training_data_keeps_its_length():
    """Each class decodes to its mean training delta, so onset errors do not drift."""
    rng = np.random.default_rng(1)
    events = deltas_events(rng.choice([0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 3.0], 400))
    for strategy in ("uniform", "log", "quantile"):
        codec = EventCodec(time_strategy=strategy, n_time_bins=4).fit(events)
        assert codec.timing_error_ms(events)["onset_final_ms"] == pytest.approx(0, abs=1e-6)


def test_lesson_uniform_bins_collapse_under_one_long_pause():
    """The lesson's 10 equal-width bins: one 30 s pause makes every musical delta share bin 1."""
    music = [0.125, 0.25, 0.375, 0.5] * 50
    training = deltas_events(music + [30.0])
    uniform = EventCodec(time_strategy="uniform", n_time_bins=10).fit(training)
    log = EventCodec(time_strategy="log", n_time_bins=10).fit(training)
    tune = deltas_events([0.125, 0.25, 0.375, 0.5])
    # uniform bins are 2.99 s wide: all four deltas land in class 1 and decode to their mean
    # 0.3125 s (errors 187.5, 62.5, 62.5, 187.5 ms -> mean 125 ms)
    assert uniform.encode(tune)[:, 2].tolist() == [1, 1, 1, 1]
    assert uniform.timing_error_ms(tune)["delta_mean_ms"] == pytest.approx(125)
    # log bins grow by 240 ** (1/10) = 1.73: 0.125 | 0.25 | 0.375 and 0.5 (mean 0.4375 s)
    assert log.encode(tune)[:, 2].tolist() == [1, 2, 3, 3]
    assert log.timing_error_ms(tune)["delta_mean_ms"] == pytest.approx(31.25)


def test_fitting_or_measuring_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match="no training events"):
        EventCodec().fit([])
    codec = EventCodec(n_time_bins=2).fit(make_events([(60, 90, 0.0), (60, 0, 0.5), (62, 90, 1.0)]))
    with pytest.raises(ValueError, match="at least one event"):
        codec.timing_error_ms(make_events([]))


# --- validation: a codec file decides array sizes and indices, so nothing in it is trusted ------
FITTED = EventCodec(time_strategy="log", n_time_bins=2).fit(EVENTS)  # edges 0.25, 0.5, 1.0


def tampered(**changes) -> dict:
    return {**FITTED.to_dict(), **changes}


@pytest.mark.parametrize("changes, field, reason", [
    (dict(time_edges_s=[-0.25, 0.5, 1.0]), r"time_edges_s\[0\]", "finite number >= 0"),
    (dict(time_edges_s=[0.25, 1.0, 0.5]), "time_edges_s", "strictly increasing"),
    (dict(time_edges_s=[0.25, 0.25, 1.0]), "time_edges_s", "strictly increasing"),
    (dict(time_edges_s=[0.25, float("nan"), 1.0]), r"time_edges_s\[1\]", "finite number"),
    (dict(time_edges_s=[0.25, 0.5, float("inf")]), r"time_edges_s\[2\]", "finite number"),
    (dict(time_edges_s=[0.25, "0.5", 1.0]), r"time_edges_s\[1\]", "finite number"),
    (dict(time_edges_s=[0.25, 0.5, 1.0, 2.0]), "time_edges_s",
     "has 4 values, but n_time_bins 2 needs 3"),
    (dict(time_edges_s="0.25 0.5 1.0"), "time_edges_s", "must be a list"),
    (dict(time_centers_s=[0.25]), "time_centers_s", "has 1 values, but 3 time_edges_s need 2"),
    (dict(time_centers_s=[0.25, 7.0]), r"time_centers_s\[1\]", "outside its bin"),
    (dict(time_centers_s=[0.25, -1.0]), r"time_centers_s\[1\]", "finite number >= 0"),
    (dict(time_edges_s=[], time_centers_s=[0.25, 1.0]), "time_centers_s", "has 2 values"),
    (dict(n_time_bins=10_000_000.0), "n_time_bins", "integer in 1..1024"),
    (dict(n_time_bins=10_000_000), "n_time_bins", "integer in 1..1024"),
    (dict(n_time_bins=0), "n_time_bins", "integer in 1..1024"),
    (dict(n_time_bins="2"), "n_time_bins", "integer"),
    (dict(n_time_bins=True), "n_time_bins", "integer"),
    (dict(velocity_bins=0), "velocity_bins", "1..127"),
    (dict(velocity_bins=128), "velocity_bins", "1..127"),
    (dict(velocity_bins=16.5), "velocity_bins", "1..127"),
    (dict(time_strategy="linear"), "time_strategy", "one of .uniform., .log., .quantile."),
    (dict(time_strategy=["log"]), "time_strategy", "one of"),
    (dict(same_time_s=-0.001), "same_time_s", ">= 0"),
    (dict(same_time_s=float("nan")), "same_time_s", "finite"),
    (dict(pitch_low=-1), "pitch_low", "0..127"),
    (dict(pitch_high=200), "pitch_high", "127"),
    (dict(pitch_low=60, pitch_high=59), "pitch_high", "pitch_low"),
    (dict(bins_per_beat=4), "'bins_per_beat'", "not a codec field"),
])
def test_a_tampered_codec_names_the_file_and_the_field(tmp_path, changes, field, reason):
    path = tmp_path / "codec.json"
    # allow_nan: JSON files may hold NaN and Infinity (Python's json reads them)
    path.write_text(json.dumps(tampered(**changes), allow_nan=True))
    for where, load in ((str(path), lambda: EventCodec.load(path)),
                        ("codec", lambda: EventCodec.from_dict(tampered(**changes)))):
        with pytest.raises(CodecError, match=rf"^{re.escape(where)}: {field} .*{reason}") as err:
            load()
        assert "\n" not in str(err.value)


def test_the_constructor_checks_as_loading_does():
    with pytest.raises(CodecError, match="^codec: n_time_bins must be an integer in 1..1024"):
        EventCodec(n_time_bins=5000)
    with pytest.raises(CodecError, match="^codec: time_strategy"):
        EventCodec(time_strategy="linear")


@pytest.mark.parametrize("text, reason", [
    ("", "not valid JSON"), ('{"n_time_bins": 2, "time_edges_s": [0.25, ', "not valid JSON"),
    ("[1, 2, 3]", "must be a mapping of codec fields, not list"), ("\xff\xfe", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
])
def test_a_file_that_is_not_a_codec(tmp_path, text, reason):
    path = tmp_path / "codec.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(CodecError, match=rf"^{re.escape(str(path))}: .*{reason}") as err:
        EventCodec.load(path)
    assert "\n" not in str(err.value)


def test_missing_and_oversized_files(tmp_path):
    with pytest.raises(CodecError, match=r"codec.json: cannot read it \(No such file"):
        EventCodec.load(tmp_path / "codec.json")
    big = tmp_path / "big.json"
    big.write_text(json.dumps(tampered(time_edges_s=[0.25] * 300_000)))
    with pytest.raises(CodecError, match="big.json: is over 1048576 bytes"):
        EventCodec.load(big)


def test_a_huge_n_time_bins_fails_at_once_without_allocating(tmp_path):
    path = tmp_path / "codec.json"
    path.write_text(json.dumps(tampered(n_time_bins=1e7)))
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(CodecError, match="n_time_bins"):
        EventCodec.load(path)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the only sizeable buffer is the bounded read of the file (1 MB); sizes were never used
    assert seconds < 5.0 and peak < 5_000_000, (seconds, peak)  # generous: a shared CI machine


def test_every_fitted_codec_passes_its_own_checks():
    """The checks refuse nothing that ``fit`` makes (rounding of the bin means included)."""
    rng = np.random.default_rng(2)
    for trial in range(60):
        deltas = [rng.exponential(0.3, 50), rng.choice([0.0, 0.125, 1 / 3, 0.1 + 0.2], 50),
                  np.round(rng.uniform(0, 2, 50), 2)][trial % 3]
        for strategy in ("uniform", "log", "quantile"):
            for bins in (1, 7, 64, 1024):
                codec = EventCodec(time_strategy=strategy, n_time_bins=bins).fit(
                    deltas_events(np.maximum(deltas, 0.001 * (trial % 2))))
                assert EventCodec.from_dict(json.loads(json.dumps(codec.to_dict()))) == codec
