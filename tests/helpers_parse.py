"""What the reading tests share: notes and events as plain tuples, compared exactly."""
import numpy as np

WIDE = dict(pitch_low=0, pitch_high=127)  # no folding, for tests about something else


def note_list(parsed):
    """Notes as (start_s, end_s, pitch, velocity), times rounded to the microsecond."""
    return [(round(float(n["start_s"]), 6), round(float(n["end_s"]), 6), int(n["pitch"]),
             int(n["velocity"])) for n in parsed.notes]


def assert_events(events, expected):
    """``expected``: (pitch, velocity, delta_s) triples, compared exactly (deltas to 1e-9 s)."""
    assert [(int(e["pitch"]), int(e["velocity"])) for e in events] == [e[:2] for e in expected]
    np.testing.assert_allclose(events["delta_s"], [e[2] for e in expected], atol=1e-9)
