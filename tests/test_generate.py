"""Generation: the numpy step is the torch model, sampling is seeded and controllable, and the
notes it writes are clean (every off ends a sounding note, every note ends, none is held too
long)."""
import io
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers_model import (PATTERN, fitted_codec, pattern_events, random_walk_events,
                           tiny_config, tiny_model, walk_notes)
from helpers_model import one_thread  # noqa: F401  (autouse: one torch thread)
from midilstm.events import make_events
from midilstm.export import events_to_midi
from midilstm.generate import Improviser, generate
from midilstm.lstm_step import BLAS_STREAMS
from midilstm.sampling import SamplingConfig
from midilstm.train import TrainConfig, train

EVENTS = random_walk_events(200, seed=1)
CODEC = fitted_codec(EVENTS, n_time_bins=6)
PRIMER = EVENTS[:20]  # ends every note it starts
MODEL = tiny_model(CODEC, seed=2)
MODES = [dict(input_mode="one_hot"), dict(input_mode="embedding", embedding_dim=6),
         dict(input_mode="one_hot", num_layers=2),
         dict(input_mode="embedding", embedding_dim=6, num_layers=2),
         dict(input_mode="one_hot", sounding_input=False)]  # the lesson's inputs (no table_s)


def midi_bytes(events) -> bytes:
    buffer = io.BytesIO()
    events_to_midi(events).save(file=buffer)
    return buffer.getvalue()


def gen(sampling=SamplingConfig(), seed=0, model=MODEL, primer=PRIMER, **kw):
    kw.setdefault("n_events", 120)
    return generate(model, CODEC, primer, seed=seed, sampling=sampling, **kw)


# --- the numpy step is the torch model ----------------------------------------------------------
@pytest.mark.parametrize("streams", [2, BLAS_STREAMS])  # the compiled loops, and numpy's products
@pytest.mark.parametrize("kw", MODES)
def test_numpy_step_matches_the_torch_model(kw, streams):
    model = tiny_model(CODEC, seed=3, **kw)
    codes = CODEC.encode(EVENTS[:30 * streams]).reshape(streams, 30, 3)  # different music each
    with torch.no_grad():
        expected, _ = model(torch.as_tensor(codes))
    improviser = Improviser(model, CODEC, n_variations=streams)
    for t in range(codes.shape[1]):
        improviser.feed(codes[:, t])
        for head in range(3):
            np.testing.assert_allclose(improviser.log_probs[head], expected[head][:, t].numpy(),
                                       atol=1e-5, rtol=0)


def test_generate_makes_the_same_draws_as_stepping_by_hand():
    sampling = SamplingConfig(temperature=1.3, top_p=0.9)
    improviser = Improviser(MODEL, CODEC, sampling, seed=5, n_variations=3)
    improviser.prime(PRIMER)
    by_hand = np.stack([improviser.step()[0] for _ in range(50)], axis=1)
    generated = gen(sampling, seed=5, n_events=50, n_variations=3)
    for stream in range(3):
        np.testing.assert_array_equal(CODEC.encode(generated[stream])[:50, :2], by_hand[stream, :, :2])


def test_step_needs_a_primer():
    with pytest.raises(RuntimeError, match="prime"):
        Improviser(MODEL, CODEC).step()


# --- seeds and variations -----------------------------------------------------------------------
def test_same_seed_gives_byte_identical_midi_and_another_seed_differs():
    a, b, c = gen(seed=7)[0], gen(seed=7)[0], gen(seed=8)[0]
    assert midi_bytes(a) == midi_bytes(b)
    assert midi_bytes(a) != midi_bytes(c)


def test_n_variations_gives_that_many_different_sequences():
    outs = gen(n_variations=64, n_events=30)
    assert len(outs) == 64
    assert all(len(o) >= 30 for o in outs)
    assert len({midi_bytes(o) for o in outs}) > 50


def test_primer_as_a_list_of_triples_or_an_event_array():
    triples = [tuple(e) for e in PRIMER.tolist()]
    from_list, from_array = gen(primer=triples)[0], gen(primer=make_events(triples))[0]
    assert midi_bytes(from_list) == midi_bytes(from_array)
    # the primer is really fed: another primer, another state
    a, b = Improviser(MODEL, CODEC), Improviser(MODEL, CODEC)
    a.prime(triples)
    b.prime(EVENTS[40:60])
    assert np.abs(a.log_probs[0] - b.log_probs[0]).max() > 1e-3


def test_the_primer_builds_up_the_state_and_the_clock():
    improviser = Improviser(MODEL, CODEC, n_variations=3)
    improviser.prime(PRIMER)
    decoded = CODEC.decode(CODEC.encode(PRIMER))
    np.testing.assert_allclose(improviser.now_s, decoded["delta_s"].sum())
    reference = Improviser(MODEL, CODEC, n_variations=1)
    for code in CODEC.encode(PRIMER):
        reference.feed(code[None])
    for mine, ref in zip(improviser.log_probs, reference.log_probs):
        np.testing.assert_allclose(mine, np.repeat(ref, 3, axis=0), atol=1e-6)


# --- sampling controls --------------------------------------------------------------------------
def greedy_choice(improviser) -> np.ndarray:
    """What a greedy decoder picks next, written out from the documented order: the velocity
    head first (an off only while a note sounds), then the pitch among those that choice allows
    (an off ends a sounding pitch, an on starts a silent one), then the time."""
    lp_pitch, lp_velocity, lp_time = improviser.log_probs
    sounding = ~np.isnan(improviser.sounding_since)
    allowed_velocity = np.ones_like(lp_velocity, bool)
    allowed_velocity[:, 0] = sounding.any(axis=1)
    velocity = np.where(allowed_velocity, lp_velocity, -np.inf).argmax(1)
    allowed_pitch = np.where((velocity == 0)[:, None], sounding, ~sounding)
    allowed_pitch[~allowed_pitch.any(axis=1)] = True
    pitch = np.where(allowed_pitch, lp_pitch, -np.inf).argmax(1)
    return np.stack([pitch, velocity, lp_time.argmax(1)], axis=1)


def greedy_fraction(sampling, n_steps=100, n_variations=8) -> float:
    """How often a step picks exactly what the greedy decoder would (the texture limits are
    switched off: a note held too long is ended, and no note starts while as many sound as
    the training music held at once, whatever the model says)."""
    improviser = Improviser(MODEL, CODEC, replace(sampling, max_note_s=0, max_polyphony=0),
                            seed=3, n_variations=n_variations)
    improviser.prime(PRIMER)
    agree = []
    for _ in range(n_steps):
        expected = greedy_choice(improviser)
        codes, _ = improviser.step()
        agree.append((codes == expected).all(axis=1))
    return float(np.mean(agree))


def test_top_k_1_is_the_argmax_of_every_head():
    sampling = SamplingConfig(top_k=1)
    assert greedy_fraction(sampling) == 1.0
    assert midi_bytes(gen(sampling, seed=1)[0]) == midi_bytes(gen(sampling, seed=2)[0])


def test_temperature_towards_zero_becomes_greedy():
    fractions = [greedy_fraction(SamplingConfig(temperature=t)) for t in (1.0, 0.1, 0.02, 1e-5)]
    assert fractions == sorted(fractions) and fractions[0] < 0.1 and fractions[-1] == 1.0
    # and the sampling distributions sharpen steadily on the way
    peaks = []
    for t in (1.0, 0.1, 0.01, 0.001):
        improviser = Improviser(MODEL, CODEC, SamplingConfig(temperature=t))
        improviser.prime(PRIMER)
        peaks.append(improviser.step()[1]["pitch"].max())
    assert peaks == sorted(peaks) and peaks[-1] > 0.9 > peaks[0]


def test_tiny_top_p_equals_top_k_1():
    top_p = midi_bytes(gen(SamplingConfig(top_p=1e-9), seed=4)[0])
    assert top_p == midi_bytes(gen(SamplingConfig(top_k=1), seed=4)[0])


def test_top_k_and_top_p_keep_the_right_classes():
    improviser = Improviser(MODEL, CODEC, SamplingConfig(top_k=5, top_p=0.999999))
    improviser.prime(PRIMER)
    lp = improviser.log_probs[0][0]
    probs = improviser.step()[1]["pitch"][0]
    assert set(np.flatnonzero(probs)) == set(np.argsort(-lp)[:5])
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)

    improviser = Improviser(MODEL, CODEC, SamplingConfig(top_p=0.5))
    improviser.prime(PRIMER)
    p = np.exp(improviser.log_probs[0][0])
    kept = np.flatnonzero(improviser.step()[1]["pitch"][0])
    order = np.argsort(-p)
    n = np.searchsorted(np.cumsum(p[order]), 0.5) + 1  # smallest set with >= 0.5
    assert set(kept) == set(order[:n])


def test_per_head_temperature_overrides_the_overall_one():
    sampling = SamplingConfig(temperature=1.0, temperature_pitch=1e-4)
    improviser = Improviser(MODEL, CODEC, sampling, n_variations=2)
    improviser.prime(PRIMER)
    probs = improviser.step()[1]
    assert probs["pitch"].max(axis=1).min() > 0.999
    assert probs["time"].max() < 0.999


# --- note hygiene -------------------------------------------------------------------------------
def test_every_off_ends_a_sounding_note_and_every_note_ends():
    for temperature in (1.0, 2.0):
        outs = gen(SamplingConfig(temperature=temperature), n_variations=16, n_events=300)
        for out in outs:
            assert walk_notes(out)[:2] == (0, 0)  # no orphan off, nothing left sounding
            assert walk_notes(np.concatenate([PRIMER, out]))[:2] == (0, 0)


def test_no_note_ends_in_the_instant_it_starts():
    # A model that ignores its input: half its events are offs, most come "at the same time".
    model = tiny_model(CODEC, seed=0)
    with torch.no_grad():
        model.head.weight.zero_()
        bias = model.head.bias
        bias.zero_()
        n_pitch, n_velocity, _ = CODEC.sizes
        bias[n_pitch:n_pitch + n_velocity] = -30.0
        bias[n_pitch] = bias[n_pitch + 100] = 0.0  # velocity: off, or 100
        bias[n_pitch + n_velocity] = 3.0  # time class 0 (at once) is 20x likelier than others
    for out in gen(model=model, n_variations=16, n_events=300):
        assert min(walk_notes(out)[2]) > 0


def test_offs_may_end_notes_the_primer_left_sounding():
    primer = make_events([(60, 90, 0.0), (64, 90, 0.0), (67, 90, 0.0), (72, 80, 0.4)])
    for out in gen(primer=primer, n_variations=8, n_events=200):
        orphans, _, _ = walk_notes(np.concatenate([primer, out]))
        assert orphans == 0


def holding_model(codec):
    """A model that never chooses to end a note (velocity class 0 is very unlikely), spreads
    its notes over every pitch and always waits the longest time: notes are held for long."""
    model = tiny_model(codec)
    with torch.no_grad():
        model.head.weight.zero_()
        bias = torch.zeros(sum(codec.sizes))
        n_p, n_v, n_t = codec.sizes
        bias[n_p] = -30.0  # velocity class 0: note-off
        bias[n_p + n_v + n_t - 1] = 30.0  # the longest time class
        model.head.bias.copy_(bias)
    return model


def test_the_model_decides_how_often_notes_end():
    # A model that wants to end a note 70% of the time, over 89 equally likely pitches, keeps
    # few notes sounding. Sampling the pitch first would end a note only when it happened to
    # pick a sounding pitch, piling up ~45 held notes ("long sloppy chords").
    model = tiny_model(CODEC)
    with torch.no_grad():
        model.head.weight.zero_()
        bias = torch.full((sum(CODEC.sizes),), 0.0)
        n_p, n_v, _ = CODEC.sizes
        bias[n_p:n_p + n_v] = -30.0
        bias[n_p], bias[n_p + 100] = np.log(0.7), np.log(0.3)  # off 70%, velocity 100 30%
        model.head.bias.copy_(bias)
    # no texture limits: they would end notes (the polyphony learned here is 1) whatever the
    # model says
    outs = gen(model=model, n_variations=8, n_events=200,
               sampling=SamplingConfig(max_note_s=0, max_polyphony=0))
    for out in outs:
        polyphony = np.cumsum(np.where(out["velocity"] > 0, 1, -1))
        assert polyphony.min() >= 0
        assert polyphony.mean() < 3 and polyphony.max() < 12


def test_notes_held_too_long_are_ended():
    model = holding_model(CODEC)
    longest_step = max(CODEC.time_centers_s)
    kw = dict(model=model, n_variations=4, n_events=300)
    # (no polyphony limit here: with one, the model's notes end once that many sound)
    free = gen(SamplingConfig(max_note_s=0, max_polyphony=0), **kw)
    free_longest = max(max(walk_notes(out)[2]) for out in free)
    assert free_longest > 10 * longest_step  # without the limit, notes are held for long
    limit = 2 * longest_step
    for out in gen(SamplingConfig(max_note_s=limit, max_polyphony=0), **kw):
        orphans, open_notes, durations = walk_notes(out)
        assert (orphans, open_notes) == (0, 0)
        # the check runs before each new event: one more step, plus the final gap, at most
        assert max(durations) <= limit + 2 * longest_step + 1e-9
        assert max(durations) > limit  # notes were really held up to the limit


def test_by_default_no_note_lasts_much_longer_than_the_training_musics_longest():
    model = holding_model(CODEC)
    longest_step = max(CODEC.time_centers_s)
    learned = CODEC.longest_note_s
    assert 0 < learned < 10 * longest_step
    improviser = Improviser(model, CODEC)
    assert improviser.sampling.max_note_s == learned  # the default learns it from the codec
    assert improviser.sampling.max_polyphony == CODEC.max_polyphony
    # max_note_s left to be learned (the polyphony limit, off here, would end notes too)
    for out in gen(model=model, n_variations=4, n_events=300, sampling=SamplingConfig(
            max_polyphony=0)):
        durations = walk_notes(out)[2]
        assert max(durations) <= learned + 2 * longest_step + 1e-9
        assert max(durations) > learned  # the model's notes were held up to the limit


# --- length -------------------------------------------------------------------------------------
def test_seconds_limits_the_length():
    seconds = 6.0
    longest_step = max(CODEC.time_centers_s)
    outs = gen(seconds=seconds, n_events=10_000, n_variations=5)
    for out in outs:
        assert len(out) < 10_000
        duration = out["delta_s"].sum()  # includes the final gap before the closing offs
        assert seconds <= duration <= seconds + 2 * longest_step + 1e-9


def test_generation_stops_once_every_variation_is_long_enough(monkeypatch):
    # generate() samples through Improviser._advance (one call per step): count those calls.
    steps = []
    real_advance = Improviser._advance

    def counting_advance(self, uniforms):
        steps.append(1)
        return real_advance(self, uniforms)

    monkeypatch.setattr(Improviser, "_advance", counting_advance)
    outs = gen(seconds=2.0, n_events=10_000, n_variations=3)
    calls = len(steps)
    # By hand, with the same draws: step until every variation has 2 s of music.
    improviser = Improviser(MODEL, CODEC, seed=0, n_variations=3)
    improviser.prime(PRIMER)
    start_s, needed = improviser.now_s.copy(), 0
    while (improviser.now_s - start_s < 2.0).any():
        improviser.step()
        needed += 1
    assert calls == needed < 10_000
    assert len(outs) == 3


def test_n_events_caps_the_length_when_seconds_is_not_reached():
    out = gen(seconds=6 * 3600, n_events=25)[0]
    _, open_notes, _ = walk_notes(out[:25])
    assert len(out) == 25 + open_notes  # 25 events, then the offs that close open notes


# --- a trained model continues what it learned --------------------------------------------------
def test_a_model_trained_on_a_pattern_continues_it_greedily():
    events = pattern_events(40)
    codec = fitted_codec(events)
    codes = codec.encode(events)
    best = train(codec, [codes[:256]], [codes[256:]],
                 TrainConfig(epochs=10, seq_len=16, batch_size=4, lr=5e-2, seed=0, transpose_semitones=0),
                 tiny_config(codec), progress=False)
    out = generate(best.model, codec, events[:13], n_events=32,
                   sampling=SamplingConfig(top_k=1))[0]
    expected = codec.decode(codec.encode(make_events((PATTERN * 6)[13:13 + 32])))
    # The pattern's next event ends a note the primer started: without the primer that off is
    # an orphan, so the continuation drops it and its 0.25 s moves to the event after it.
    assert tuple(expected[0]) == (67, 0, 0.25)
    expected = expected[1:].copy()
    expected["delta_s"][0] += 0.25
    np.testing.assert_array_equal(out[:31], expected)


# --- the readable reference sampler gives the fast path's distributions -----------------------
import functools  # noqa: E402

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from midilstm import generate as generate_module  # noqa: E402
from midilstm import sampling as sampling_module  # noqa: E402
from midilstm.codec import HEADS, EventCodec  # noqa: E402
from midilstm.sampling import reference_distribution, reference_step  # noqa: E402


@functools.lru_cache(maxsize=None)
def small_model(n_pitch, n_velocity, n_time):
    """A codec with these head sizes (pitches from 60 up) and a tiny model for it."""
    events = make_events([(60, 80, 0.0), (60, 0, 0.5), (60, 90, 0.25), (60, 0, 1.0)])
    codec = EventCodec(n_time_bins=n_time - 1, velocity_bins=n_velocity - 1, pitch_low=60,
                       pitch_high=60 + n_pitch - 1).fit(events)
    return codec, tiny_model(codec)


def fast_step(case):
    """One step of the real Improviser (compiled sampler) from the case's logits and state."""
    codec, model = small_model(*case["sizes"])
    improviser = Improviser(model, codec, case["sampling"])
    improviser.logits[0] = np.concatenate(case["logits"])
    improviser.sounding_since[0] = case["sounding_since"]
    improviser.now_s[0] = case["now_s"]
    improviser.fed = True
    codes = improviser._advance(np.array([case["uniforms"]]))[0].copy()
    return codes, dict(zip(HEADS, np.split(improviser._probs[0].copy(), improviser.splits)))


def reference_given(case, velocity, pitch):
    """The reference's three distributions, given the velocity and pitch the fast path drew."""
    g, sampling, playing = sampling_module, case["sampling"], case["sounding_since"]
    lp_pitch, lp_velocity, lp_time = case["logits"]

    def dist(head, scores, allowed):
        return reference_distribution(scores, allowed, sampling.temperature_of(head),
                                      sampling.top_k, sampling.top_p)
    return {"velocity": dist("velocity", lp_velocity, g.allowed_velocities(
                playing, len(lp_velocity), sampling.max_polyphony)),
            "pitch": dist("pitch", lp_pitch, g.allowed_pitches(playing, velocity)),
            "time": dist("time", lp_time, g.allowed_times(playing, case["now_s"], velocity, pitch,
                                                          len(lp_time)))}


def draw_on_a_boundary(case, probs) -> bool:
    """Whether a uniform lies within 1e-9 of a cumulative probability: there, sums taken in
    another order (numba's loop, numpy's pairwise sum) may round to different classes."""
    return any(np.abs(np.cumsum(probs[head]) - u).min() < 1e-9
               for head, u in zip(HEADS, case["uniforms"]))


def top_p_is_close_to_a_cumulative_mass(case, velocity, pitch) -> bool:
    """Whether top-p falls within 1e-9 of the mass of the most likely classes (the same
    rounding question for the top-p cut)."""
    sampling = case["sampling"]
    if sampling.top_p is None:
        return False
    no_top_p = replace(sampling, top_p=None)
    for head, p in reference_given(dict(case, sampling=no_top_p), velocity, pitch).items():
        mass = np.cumsum(np.sort(p)[::-1])
        if np.abs(mass - sampling.top_p).min() < 1e-9:
            return True
    return False


def distributions_agree(case, check_draws=True):
    """True or False; None where rounding may rightly decide (see above)."""
    codes, fast = fast_step(case)
    velocity, pitch = int(codes[1]), int(codes[0])
    if top_p_is_close_to_a_cumulative_mass(case, velocity, pitch):
        return None
    reference = reference_given(case, velocity, pitch)
    same = all(np.allclose(reference[h], fast[h], rtol=1e-9, atol=1e-12) for h in HEADS)
    if same and check_draws and not draw_on_a_boundary(case, fast):
        ref_codes, ref_probs = reference_step(case["logits"], case["sounding_since"],
                                              case["now_s"], case["sampling"], case["uniforms"])
        same = list(ref_codes) == list(codes) and all(
            np.allclose(ref_probs[h], fast[h], rtol=1e-9, atol=1e-12) for h in HEADS)
    return same


@st.composite
def sampling_cases(draw):
    sizes = (draw(st.integers(2, 9)), draw(st.integers(2, 5)), draw(st.integers(2, 5)))
    scores = st.floats(-6, 6, width=32)
    logits = [np.array(draw(st.lists(scores, min_size=n, max_size=n)), np.float32) for n in sizes]
    now_s = draw(st.sampled_from([0.0, 1.25]))
    # each pitch silent (NaN), started at this very instant, or earlier
    playing = np.array([draw(st.sampled_from([np.nan, now_s, now_s - 0.5]))
                        for _ in range(sizes[0])])
    temperature = st.floats(0.05, 5.0)
    # the limits as numbers (as ``with_limits`` resolves them): no note is held too long here
    # (test_the_reference_ends_a_note_held_too_long_like_the_fast_path), any polyphony limit
    sampling = SamplingConfig(
        temperature=draw(temperature),
        temperature_time=draw(st.one_of(st.none(), temperature)),
        top_k=draw(st.one_of(st.none(), st.integers(1, 10))),
        top_p=draw(st.one_of(st.none(), st.floats(0.01, 1.0))),
        max_note_s=draw(st.sampled_from([0, 5.0])), max_polyphony=draw(st.integers(0, 4)))
    uniforms = [draw(st.floats(0, 1, exclude_max=True)) for _ in range(3)]
    return dict(sizes=sizes, logits=logits, sounding_since=playing, now_s=now_s,
                sampling=sampling, uniforms=uniforms)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=sampling_cases())
def test_reference_sampler_gives_the_fast_paths_full_distributions(case):
    agree = distributions_agree(case)
    assume(agree is not None)
    assert agree


def random_cases(n, seed=0):
    """Seeded cases where hygiene matters: notes started at this instant, offs likely."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        sizes = (int(rng.integers(2, 8)), int(rng.integers(2, 5)), int(rng.integers(2, 5)))
        logits = [rng.normal(0, 2, s).astype(np.float32) for s in sizes]
        logits[1][0] += 2  # velocity class 0 (off) likely
        logits[2][0] += 2  # time class 0 (at once) likely
        playing = np.where(rng.random(sizes[0]) < 0.5, 1.0, np.nan)
        playing[rng.random(sizes[0]) < 0.3] = 0.5
        sampling = SamplingConfig(temperature=float(rng.uniform(0.3, 2)),
                                  top_k=[None, 2, 3][int(rng.integers(3))],
                                  top_p=[None, 0.8][int(rng.integers(2))],
                                  max_note_s=0,  # limits resolved to numbers (0: off)
                                  max_polyphony=[0, 1, 2, 3][int(rng.integers(4))])
        yield dict(sizes=sizes, logits=logits, sounding_since=playing, now_s=1.0,
                   sampling=sampling, uniforms=list(rng.random(3)))


def agreement(cases):
    outcomes = [distributions_agree(case, check_draws=False) for case in cases]
    return [agree for agree in outcomes if agree is not None]


BROKEN_REFERENCES = {
    "no time-class-0 mask": ("allowed_times", lambda playing, now_s, v, p, n: np.ones(n, bool)),
    "offs allowed with nothing sounding": ("allowed_velocities",
                                           lambda playing, n, most=0: np.ones(n, bool)),
    "no polyphony limit": ("allowed_velocities", lambda playing, n, most=0: np.concatenate(
        [[not np.isnan(playing).all()], np.ones(n - 1, bool)])),
    "an on may strike a sounding pitch": (
        "allowed_pitches", lambda playing, v: ~np.isnan(playing) if v == 0 else np.ones(len(playing), bool)),
}


def test_the_seeded_cases_agree_with_the_correct_reference():
    outcomes = agreement(random_cases(300))
    assert len(outcomes) > 250 and all(outcomes)


@pytest.mark.parametrize("broken", sorted(BROKEN_REFERENCES))
def test_a_broken_reference_fails_the_comparison(monkeypatch, broken):
    name, function = BROKEN_REFERENCES[broken]
    monkeypatch.setattr(sampling_module, name, function)
    outcomes = agreement(random_cases(300))
    assert not all(outcomes)


def test_the_reference_takes_logits_or_log_probabilities_alike():
    logits = np.array([2.0, 0.5, -1.0, 0.0])
    log_probs = logits - np.log(np.exp(logits).sum())
    allowed = np.array([True, True, False, True])
    for kw in (dict(), dict(temperature=0.5, top_k=2), dict(top_p=0.7)):
        np.testing.assert_allclose(reference_distribution(logits, allowed, **kw),
                                   reference_distribution(log_probs, allowed, **kw))
    p = reference_distribution(logits, allowed)
    assert p[2] == 0 and p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(p[[0, 1, 3]], np.exp(logits[[0, 1, 3]]) / np.exp(logits[[0, 1, 3]]).sum())


def test_considered_holds_the_models_probabilities_before_the_masks():
    improviser = Improviser(MODEL, CODEC, SamplingConfig(top_k=3), seed=1)
    improviser.prime(PRIMER)
    before = [np.exp(lp) for lp in improviser.log_probs]
    _, probs = improviser.step()
    for head, expected in zip(HEADS, before):
        np.testing.assert_allclose(improviser.considered[head], expected)
        assert (improviser.considered[head] > 0).sum() > 3 >= (probs[head] > 0).sum()


@pytest.mark.parametrize("kw", [dict(temperature=0), dict(temperature=-1), dict(temperature="hot"),
                                dict(temperature_pitch=0.0), dict(top_k=-1), dict(top_k=2.5),
                                dict(top_p=0), dict(top_p=2), dict(max_note_s=-1.0),
                                dict(max_note_s=float("nan")), dict(max_note_s="5"),
                                dict(max_polyphony=-1), dict(max_polyphony=2.5),
                                dict(max_polyphony=True)])
def test_bad_sampling_settings_are_refused_with_one_line_naming_them(kw):
    from midilstm.errors import ParameterError
    with pytest.raises(ParameterError) as error:
        SamplingConfig(**kw)
    message = str(error.value)
    assert "\n" not in message and f"parameter {next(iter(kw))}:" in message
    if kw.get("temperature") == 0:
        assert "top_k 1" in message  # says what to do instead


def test_top_k_0_is_off_in_the_config_as_in_the_parameter_table():
    assert SamplingConfig(top_k=0).top_k is None  # 05's grid and the table say 0 for "all"


def test_the_texture_limits_are_learned_switched_off_or_set():
    assert CODEC.longest_note_s > 0 and CODEC.max_polyphony >= 1
    default = SamplingConfig()
    assert (default.max_note_s, default.max_polyphony) == (None, None)  # None: learned
    learned = default.with_limits(CODEC)
    assert (learned.max_note_s, learned.max_polyphony) == (CODEC.longest_note_s,
                                                           CODEC.max_polyphony)
    assert learned.temperature == default.temperature and default.max_note_s is None  # a copy
    off = SamplingConfig(max_note_s=0, max_polyphony=0).with_limits(CODEC)
    assert (off.max_note_s, off.max_polyphony) == (0, 0)
    mine = SamplingConfig(max_note_s=2.5, max_polyphony=3).with_limits(CODEC)
    assert (mine.max_note_s, mine.max_polyphony) == (2.5, 3)
    # a codec saved before it measured its music: the limits are off
    old = EventCodec.from_dict({k: v for k, v in CODEC.to_dict().items()
                                if k not in ("longest_note_s", "max_polyphony")})
    assert (old.longest_note_s, old.max_polyphony) == (None, None)
    # a codec from before the limits keeps the old rule: 5 s, no polyphony limit
    assert default.with_limits(old).max_note_s == 5.0 and default.with_limits(old).max_polyphony == 0
    improviser = Improviser(MODEL, CODEC)
    assert improviser.sampling == learned  # the improviser resolves them itself
    assert SamplingConfig(**learned.to_dict()) == learned  # what a run records rebuilds it
    with pytest.raises(ValueError, match="with_limits"):
        reference_step([np.zeros(n) for n in CODEC.sizes], improviser.sounding_since[0], 0.0,
                       default, [0.5, 0.5, 0.5])


def test_warm_up_announces_compiling_unless_cached(monkeypatch, capsys):
    monkeypatch.setattr(generate_module, "_WARM", False)
    monkeypatch.setattr(generate_module, "_numba_cache_exists", lambda: False)
    generate_module.warm_up()
    assert "compiling the sampler" in capsys.readouterr().out
    monkeypatch.setattr(generate_module, "_WARM", False)
    monkeypatch.setattr(generate_module, "_numba_cache_exists", lambda: True)
    generate_module.warm_up()
    assert "compiling" not in capsys.readouterr().out
    assert generate_module.warm_up() == 0.0  # once per process


def test_a_model_and_a_codec_that_disagree_are_refused_before_generating():
    other = fitted_codec(EVENTS, n_time_bins=9)  # 10 time classes, the model has 7
    with pytest.raises(ValueError, match=r"^the model predicts \(89, 128, 7\) classes per head "
                                         r"but the codec encodes \(89, 128, 10\): not a pair$"):
        Improviser(MODEL, other)


def test_the_reference_ends_a_note_held_too_long_like_the_fast_path():
    rng = np.random.default_rng(4)
    for case in random_cases(50, seed=4):
        held = rng.random(case["sizes"][0]) < 0.3
        case["sounding_since"][held] = case["now_s"] - 10.0  # held for 10 s
        case["sampling"] = replace(case["sampling"], max_note_s=5.0)
        codes, fast = fast_step(case)
        ref_codes, ref_probs = reference_step(case["logits"], case["sounding_since"],
                                              case["now_s"], case["sampling"], case["uniforms"])
        assert list(ref_codes) == list(codes)
        if held.any():
            assert list(codes) == [int(np.flatnonzero(held)[0]), 0, 0]


def test_many_variations_step_on_one_thread_and_leave_torchs_setting_alone(monkeypatch):
    seen = []
    real = torch.from_numpy

    def spy(array):
        seen.append(torch.get_num_threads())
        return real(array)

    monkeypatch.setattr(torch, "from_numpy", spy)
    torch.set_num_threads(2)
    try:
        gen(n_variations=BLAS_STREAMS, n_events=5)
        assert seen and set(seen) == {1}  # the matrix products ran on one thread
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
