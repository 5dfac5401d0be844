"""The event helpers, on hand-written events."""
import numpy as np

from midilstm.events import (drop_orphan_offs, end_all_notes, events_to_notes, fold_pitches,
                             make_events, notes_to_events)


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
