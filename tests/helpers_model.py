"""Small synthetic music and tiny models for the model / data / train / generate / checkpoint tests.

Everything is built in memory: an 8-event repeating pattern (a fully predictable piece) and a
seeded random walk (a piece with no exact repetition), both with every note ended.
"""
from __future__ import annotations

import numpy as np
import pytest

from midilstm.codec import EventCodec
from midilstm.events import make_events
from midilstm.lstm import NoteLSTM
from midilstm.model import ModelConfig

# One bar of a broken chord: (pitch, velocity, delta_s); every note is ended, two chord-like
# zero deltas, four distinct time classes. Repeating it gives a piece a model can learn exactly.
PATTERN = [(60, 80, 0.25), (60, 0, 0.25), (64, 90, 0.0), (64, 0, 0.5),
           (67, 70, 0.125), (67, 0, 0.25), (72, 100, 0.0), (72, 0, 1.0)]

HIDDEN = 16


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine torch's spinning worker
    threads make them many times slower. Import this fixture into a test module to use it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pattern_events(repeats: int = 40) -> np.ndarray:
    return make_events(PATTERN * repeats)


def random_walk_events(n_notes: int = 200, seed: int = 0) -> np.ndarray:
    """A melody whose pitch takes random steps in 48..84; each note is an on and an off."""
    rng = np.random.default_rng(seed)
    pitch = 48 + np.cumsum(rng.integers(-3, 4, n_notes)) % 37
    triples = []
    for p in pitch.tolist():
        triples.append((p, int(rng.integers(40, 110)), float(rng.choice([0.0, 0.1, 0.2, 0.4]))))
        triples.append((p, 0, float(rng.choice([0.1, 0.2, 0.3, 0.6]))))
    return make_events(triples)


def fitted_codec(events, n_time_bins: int = 4, **kw) -> EventCodec:
    return EventCodec(n_time_bins=n_time_bins, **kw).fit(events)


def tiny_config(codec: EventCodec, **kw) -> ModelConfig:
    kw.setdefault("hidden_size", HIDDEN)
    return ModelConfig(sizes=codec.sizes, **kw)


def tiny_model(codec: EventCodec, seed: int = 0, **kw) -> NoteLSTM:
    """An untrained tiny model with seeded weights, in eval mode."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NoteLSTM(tiny_config(codec, **kw))
    return model.eval()


def walk_notes(events: np.ndarray):
    """Replay events; returns (orphan offs, still sounding at the end, note durations in s).

    A note-off must end a sounding note of its pitch (FIFO), and every note must end."""
    sounding: dict[int, list] = {}
    now, orphans, durations = 0.0, 0, []
    for pitch, velocity, delta in zip(events["pitch"].tolist(), events["velocity"].tolist(),
                                      events["delta_s"].tolist()):
        now += delta
        if velocity > 0:
            sounding.setdefault(pitch, []).append(now)
        elif sounding.get(pitch):
            durations.append(now - sounding[pitch].pop(0))
        else:
            orphans += 1
    open_notes = sum(len(v) for v in sounding.values())
    return orphans, open_notes, durations
