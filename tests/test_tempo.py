"""Time (``midilstm.tempo``, through ``read_midi``): the tempo map from any track, file types
0, 1 and 2, SMPTE divisions, extreme tempos and very long files. At 120 bpm and 480 ticks per
beat, 480 ticks = a quarter = 0.5 s; every expectation is worked out by hand.
"""
import mido
import pytest

from conftest import off, on, tempo
from helpers_parse import assert_events, note_list
from midilstm.parse import read_midi


# --- time ----------------------------------------------------------------------------------------

def test_tempo_in_another_track_of_a_type_1_file(tmp_path, build_midi):
    # The only set_tempo (60 bpm: a beat lasts 1 s) sits in the last track.
    path = build_midi(tmp_path, tracks=[
        [mido.MetaMessage("track_name", name="conductor")],
        [on(60, 80), off(60, t=480), on(62, 80), off(62, t=480)],
        [tempo(60)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 1.0, 60, 80), (1.0, 2.0, 62, 80)]
    assert parsed.report.tempo_changes == [{"time_s": 0.0, "bpm": 60.0}]
    assert parsed.report.duration_s == pytest.approx(2.0)


def test_tempo_change_after_the_first_note(tmp_path, build_midi):
    # 120 bpm for the first beat (0.5 s), then 60 bpm (1 s per beat).
    path = build_midi(tmp_path, tracks=[
        [tempo(120), tempo(60, t=480)],
        [on(60, 80), off(60, t=480), on(62, 80), off(62, t=480), on(64, 80, t=240),
         off(64, t=240)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 80), (0.5, 1.5, 62, 80), (2.0, 2.5, 64, 80)]
    assert parsed.report.tempo_changes == [{"time_s": 0.0, "bpm": 120.0},
                                           {"time_s": 0.5, "bpm": 60.0}]
    assert_events(parsed.events, [(60, 80, 0.0), (60, 0, 0.5), (62, 80, 0.0), (62, 0, 1.0),
                                  (64, 80, 0.5), (64, 0, 0.5)])


def test_default_tempo_is_120_bpm(tmp_path, build_midi):
    path = build_midi(tmp_path, type=0, ticks_per_beat=96, tracks=[[on(60, 80), off(60, t=96)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 80)]
    assert parsed.report.tempo_changes == []


def test_time_counts_every_message(tmp_path, build_midi):
    """A control change 480 ticks in delays the first note by 0.5 s (the lesson counts it too)."""
    path = build_midi(tmp_path, type=0, tracks=[[
        tempo(120), mido.Message("control_change", control=64, value=127, time=480),
        mido.MetaMessage("text", text="hello", time=240), on(60, 80), off(60, t=480)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.75, 1.25, 60, 80)]
    assert_events(parsed.events, [(60, 80, 0.75), (60, 0, 0.5)])


def test_type_0_file(tmp_path, build_midi):
    path = build_midi(tmp_path, type=0, ticks_per_beat=96, tracks=[[
        tempo(100), on(60, 80), on(64, 81), off(60, t=96), off(64), on(67, 82, t=48),
        off(67, t=48)]])
    parsed = read_midi(path)  # 100 bpm: a beat of 96 ticks is 0.6 s
    assert parsed.report.midi_type == 0
    assert note_list(parsed) == [(0.0, 0.6, 60, 80), (0.0, 0.6, 64, 81), (0.9, 1.2, 67, 82)]
    assert_events(parsed.events, [(60, 80, 0.0), (64, 81, 0.0), (60, 0, 0.6), (64, 0, 0.0),
                                  (67, 82, 0.3), (67, 0, 0.3)])


def test_type_2_tracks_play_one_after_another(tmp_path, build_midi):
    # Sequence 0 at 120 bpm lasts 2 beats = 1.0 s (its end_of_track comes a beat after the note);
    # sequence 1 at 60 bpm starts then, its note lasting one beat = 1 s.
    path = build_midi(tmp_path, type=2, tracks=[
        [tempo(120), on(60, 80), off(60, t=480), mido.MetaMessage("end_of_track", time=480)],
        [tempo(60), on(62, 90), off(62, t=480)]])
    parsed = read_midi(path)
    assert parsed.report.midi_type == 2
    assert note_list(parsed) == [(0.0, 0.5, 60, 80), (1.0, 2.0, 62, 90)]
    assert parsed.report.tempo_changes == [{"time_s": 0.0, "bpm": 120.0},
                                           {"time_s": 1.0, "bpm": 60.0}]
    assert parsed.report.duration_s == pytest.approx(2.0)


def test_type_2_pairs_notes_within_each_sequence(tmp_path, build_midi):
    """A note left sounding in sequence 0 is closed at that sequence's end, not by sequence 1."""
    path = build_midi(tmp_path, type=2, tracks=[
        [on(60, 80), mido.MetaMessage("end_of_track", time=480)],
        [off(60), on(62, 90), off(62, t=480)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 80), (0.5, 1.0, 62, 90)]
    assert parsed.report.fixed["closed_at_end"] == 1
    assert parsed.report.dropped["orphan_note_off"] == 1


def test_smpte_division(tmp_path, build_midi):
    # 25 frames per second x 40 ticks per frame = 1000 ticks per second: a tick is 1 ms.
    # Division word: high byte -25 (0xE7), low byte 40 (0x28) = 0xE728 = -6360 signed.
    path = build_midi(tmp_path, type=0, ticks_per_beat=-6360, tracks=[[
        tempo(60),  # SMPTE time ignores the tempo
        on(60, 80, t=1000), off(60, t=500), on(62, 80, t=250), off(62, t=1250)]])
    parsed = read_midi(path)
    assert parsed.report.division == "SMPTE 25 fps x 40 ticks per frame"
    assert note_list(parsed) == [(1.0, 1.5, 60, 80), (1.75, 3.0, 62, 80)]
    assert parsed.report.duration_s == pytest.approx(3.0)


def test_a_tempo_of_one_microsecond_per_beat_is_read_with_a_warning(tmp_path, build_midi):
    # 1 us per beat at 480 ticks per beat: a note of 480 ticks lasts 1 us.
    path = build_midi(tmp_path, type=0, tracks=[[
        mido.MetaMessage("set_tempo", tempo=1), on(60, 80), off(60, t=480),
        tempo(120), on(62, 80), off(62, t=480)]])
    parsed = read_midi(path)
    assert parsed.notes[["start_s", "end_s", "pitch"]].tolist() == [
        (0.0, pytest.approx(1e-6), 60), (pytest.approx(1e-6), pytest.approx(0.500001), 62)]
    assert len(parsed.report.warnings) == 1
    assert "extreme tempo 1 us per beat" in parsed.report.warnings[0]
    assert "warning: extreme tempo" in parsed.report.summary()


def test_a_file_lasting_days_is_read(tmp_path, build_midi):
    # The largest legal delta (4 bytes: 0x0FFFFFFF ticks) at 120 bpm is ~77.7 hours.
    path = build_midi(tmp_path, type=0, tracks=[[
        on(60, 80), off(60, t=480), on(62, 80, t=0x0FFFFFFF), off(62, t=480)]])
    parsed = read_midi(path)
    assert parsed.notes["start_s"][1] == pytest.approx(0.5 + 0x0FFFFFFF / 960)
    assert parsed.report.duration_s > 77 * 3600
