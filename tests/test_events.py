"""The event helpers, on hand-written events."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from midilstm.events import (NOTE_DTYPE, drop_orphan_offs, end_all_notes, events_to_notes,
                             fold_pitches, make_events, notes_to_events, strike_again)


def test_orphan_offs_are_dropped_and_their_time_moves_to_the_next_event():
    events = make_events([(60, 0, 0.5), (62, 90, 0.25), (64, 0, 0.1), (62, 0, 1.0)])
    kept = drop_orphan_offs(events)
    assert kept[["pitch", "velocity"]].tolist() == [(62, 90), (62, 0)]
    np.testing.assert_allclose(kept["delta_s"], [0.75, 1.1])  # 0.5 + 0.25, then 0.1 + 1.0


def test_end_all_notes_closes_each_open_note_once_after_a_gap():
    events = make_events([(60, 90, 0.0), (64, 90, 0.0), (60, 90, 0.5), (60, 0, 0.5)])
    closed = end_all_notes(events, gap_s=0.25)
    assert closed[4:].tolist() == [(60, 0, 0.25), (64, 0, 0.0)]


def test_notes_round_trip_through_events_with_offs_before_ons():
    events = make_events([(60, 90, 0.0), (60, 0, 0.5), (60, 80, 0.0), (60, 0, 0.5)])
    notes, fixes = events_to_notes(events)
    assert notes.tolist() == [(0.0, 0.5, 60, 90), (0.5, 1.0, 60, 80)]
    assert fixes == {"orphan_offs": 0, "closed_at_end": 0}
    assert notes_to_events(notes).tolist() == events.tolist()


def test_fold_keeps_the_pitch_class():
    assert fold_pitches(np.array([12, 23, 24, 112, 113, 127]), 24, 112).tolist() == [
        24, 35, 24, 112, 101, 103]


# --- the piano's rule: one pitch, one sounding note ---------------------------------------------

def notes_of(rows):
    return np.array(rows, dtype=NOTE_DTYPE)


def test_a_restrike_ends_the_sounding_note():
    # 60 held 0-2 s, struck again at 1 s (to 1.5 s); 64 overlaps nothing.
    notes, counts = strike_again(notes_of([(0.0, 2.0, 60, 90), (1.0, 1.5, 60, 70),
                                           (0.5, 3.0, 64, 80)]))
    assert notes.tolist() == [(0.0, 1.0, 60, 90), (0.5, 3.0, 64, 80), (1.0, 1.5, 60, 70)]
    assert counts == {"merged_same_start": 0, "shortened_by_restrike": 1}


def test_notes_struck_together_merge_into_the_longest_at_the_loudest_velocity():
    notes, counts = strike_again(notes_of([(0.0, 0.5, 60, 100), (0.0, 2.0, 60, 40),
                                           (0.0, 1.0, 60, 70), (1.0, 1.5, 60, 50)]))
    assert notes.tolist() == [(0.0, 1.0, 60, 100), (1.0, 1.5, 60, 50)]
    assert counts == {"merged_same_start": 2, "shortened_by_restrike": 1}


def test_notes_that_touch_are_left_alone():
    rows = [(0.0, 0.5, 60, 90), (0.5, 1.0, 60, 80), (1.0, 1.5, 60, 70)]
    notes, counts = strike_again(notes_of(rows))
    assert notes.tolist() == rows
    assert counts == {"merged_same_start": 0, "shortened_by_restrike": 0}


def brute_force_events_to_notes(events):
    """The definition, one event at a time: first in first out per pitch."""
    now, sounding, notes, orphans = 0.0, {}, [], 0
    for pitch, velocity, delta in events.tolist():
        now += delta
        if velocity > 0:
            sounding.setdefault(pitch, []).append((now, velocity, len(notes) + len(sounding)))
        elif sounding.get(pitch):
            start, v, _ = sounding[pitch].pop(0)
            notes.append((start, now, pitch, v))
        else:
            orphans += 1
    still = [(s, now, p, v) for p, queue in sounding.items() for s, v, _ in queue]
    return sorted(notes + still, key=lambda n: (n[0], n[2])), orphans, len(still)


EVENTS = st.lists(st.tuples(st.sampled_from([60, 61, 62]), st.sampled_from([0, 0, 40, 90]),
                            st.sampled_from([0.0, 0.0, 0.25, 0.5])), max_size=40)


@settings(max_examples=300, deadline=None)
@given(triples=EVENTS)
def test_events_to_notes_is_first_in_first_out_per_pitch(triples):
    events = make_events(triples)
    notes, fixes = events_to_notes(events)
    expected, orphans, closed = brute_force_events_to_notes(events)
    assert notes.tolist() == expected
    assert fixes == {"orphan_offs": orphans, "closed_at_end": closed}


@settings(max_examples=300, deadline=None)
@given(triples=EVENTS)
def test_the_stream_of_struck_again_notes_decodes_to_them_exactly(triples):
    """What read_midi relies on: after the piano's rule, notes -> events -> notes is exact."""
    notes, _ = events_to_notes(make_events(triples))
    notes = notes[notes["end_s"] > notes["start_s"]]
    if len(notes) == 0:
        return
    canonical, _ = strike_again(notes)
    decoded, fixes = events_to_notes(notes_to_events(canonical))
    assert fixes == {"orphan_offs": 0, "closed_at_end": 0}
    assert decoded[["pitch", "velocity"]].tolist() == canonical[["pitch", "velocity"]].tolist()
    np.testing.assert_allclose(decoded["start_s"], canonical["start_s"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(decoded["end_s"], canonical["end_s"], rtol=0, atol=1e-9)
