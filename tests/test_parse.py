"""Reading MIDI files: note pairing, the tempo map, file types, selection, pitch policy, the
report and bad input. Every file is built here with mido; every expectation is worked out by
hand from the musical setup (at 120 bpm and 480 ticks per beat, 480 ticks = a quarter = 0.5 s).
"""
import hashlib
import os
import threading
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import header_only, off, on, program, tempo
from midilstm.errors import MidiInputError
from midilstm.events import events_to_notes
from midilstm.parse import (READER_VERSION, ReadLimits, Selection, open_midi, read_midi,
                            read_midi_files)

WIDE = dict(pitch_low=0, pitch_high=127)  # no folding, for tests about something else


def note_list(parsed):
    """Notes as (start_s, end_s, pitch, velocity), times rounded to the microsecond."""
    return [(round(float(n["start_s"]), 6), round(float(n["end_s"]), 6), int(n["pitch"]),
             int(n["velocity"])) for n in parsed.notes]


def assert_events(events, expected):
    """``expected``: (pitch, velocity, delta_s) triples, compared exactly (deltas to 1e-9 s)."""
    assert [(int(e["pitch"]), int(e["velocity"])) for e in events] == [e[:2] for e in expected]
    np.testing.assert_allclose(events["delta_s"], [e[2] for e in expected], atol=1e-9)


# --- note pairing -------------------------------------------------------------------------------

@pytest.mark.parametrize("explicit", [True, False], ids=["note_off", "note_on_velocity_0"])
def test_both_kinds_of_note_off_end_notes(tmp_path, build_midi, explicit):
    path = build_midi(tmp_path, type=0, tracks=[[
        tempo(120), on(60, 80), off(60, t=480, explicit=explicit),
        on(62, 90), off(62, t=960, explicit=explicit)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 80), (0.5, 1.5, 62, 90)]
    # canonical order: at 0.5 s the off of 60 comes before the on of 62
    assert_events(parsed.events, [(60, 80, 0.0), (60, 0, 0.5), (62, 90, 0.0), (62, 0, 1.0)])
    assert parsed.report.fixed["closed_at_end"] == 0
    assert parsed.report.dropped["orphan_note_off"] == 0


def test_note_off_velocity_is_ignored(tmp_path, build_midi):
    """A note_off's release velocity (here 100) must not start a note."""
    path = build_midi(tmp_path, type=0, tracks=[[
        on(60, 80), off(60, t=480, velocity=100), on(62, 70, t=480), off(62, t=480)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 80), (1.0, 1.5, 62, 70)]
    assert parsed.report.fixed["closed_at_end"] == 0


def test_overlapping_same_pitch_pairs_first_in_first_out_then_the_restrike_ends_the_first(
        tmp_path, build_midi):
    # C4 struck at 0 (v100) and again at 0.25 s (v50); offs at 0.5 s and 1.0 s. First in first
    # out gives 0-0.5 and 0.25-1.0; one stream of events cannot hold both on one pitch, so the
    # piano's rule ends the first at the second strike.
    path = build_midi(tmp_path, type=0, tracks=[[
        on(60, 100), on(60, 50, t=240), off(60, t=240), off(60, t=480)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.25, 60, 100), (0.25, 1.0, 60, 50)]
    assert parsed.report.fixed["shortened_by_restrike"] == 1
    assert parsed.report.fixed["merged_same_start"] == 0


def test_notes_struck_together_on_one_pitch_merge_into_the_longest_and_loudest(
        tmp_path, build_midi):
    # Two tracks double C4 from 0: one for 0.5 s at v40, one for 1.0 s at v90 (a unison).
    path = build_midi(tmp_path, tracks=[[on(60, 40), off(60, t=480)],
                                        [on(60, 90), off(60, t=960)], [on(60, 70), off(60, t=240)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 1.0, 60, 90)]
    assert parsed.report.fixed["merged_same_start"] == 2


def test_pairing_is_per_channel(tmp_path, build_midi):
    # Same pitch on two channels: ch0 holds 0..1.0 s, ch1 plays 0.25..0.5 s. Pairing by pitch
    # alone would wrongly give 0..0.5 and 0.25..1.0.
    path = build_midi(tmp_path, type=0, tracks=[[
        on(60, 100, channel=0), on(60, 50, t=240, channel=1), off(60, t=240, channel=1),
        off(60, t=480, channel=0)]])
    assert note_list(read_midi(path, Selection(channels=(0,)))) == [(0.0, 1.0, 60, 100)]
    assert note_list(read_midi(path, Selection(channels=(1,)))) == [(0.25, 0.5, 60, 50)]


def test_pairing_is_per_track_even_on_a_shared_channel(tmp_path, build_midi):
    """Two voices on channel 0 in two tracks, both on C4: track 1 holds it 0-1.0 s, track 2
    plays it 0.25-0.5 s. Pairing per channel across tracks would end track 1's note at 0.5 s
    and give track 2's the rest, moving length from one voice to the other."""
    path = build_midi(tmp_path, tracks=[
        [tempo(120)], [on(60, 70), off(60, t=960)], [on(60, 50, t=240), off(60, t=240)]])
    assert note_list(read_midi(path, Selection(tracks=(1,)))) == [(0.0, 1.0, 60, 70)]
    assert note_list(read_midi(path, Selection(tracks=(2,)))) == [(0.25, 0.5, 60, 50)]
    both = read_midi(path)  # one stream: the restrike at 0.25 s ends track 1's note
    assert note_list(both) == [(0.0, 0.25, 60, 70), (0.25, 0.5, 60, 50)]
    assert both.report.fixed["shortened_by_restrike"] == 1


def test_an_off_in_another_track_does_not_end_a_note(tmp_path, build_midi):
    # Track 1's note has no off in its own track: it is closed at the end of track 1 (1.0 s);
    # track 2's off has nothing to end in its own track.
    path = build_midi(tmp_path, tracks=[
        [tempo(120)], [on(60, 70), mido.MetaMessage("end_of_track", time=960)],
        [off(60, t=480)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 1.0, 60, 70)]
    assert parsed.report.fixed["closed_at_end"] == 1
    assert parsed.report.dropped["orphan_note_off"] == 1


def test_a_grace_note_written_off_then_on_does_not_shift_later_notes(tmp_path, build_midi):
    # C4 at 0-0.5 s; a zero-length grace C4 at 1.0 s written note-off then note-on (the on
    # never gets its own off); then C4 at 1.5-2.0 s and 2.5-3.0 s. First in first out would
    # pair the grace with 2.0 s, the next note with 3.0 s and leave the last one dangling.
    path = build_midi(tmp_path, type=0, tracks=[[
        on(60, 80), off(60, t=480), off(60, t=480), on(60, 30),
        on(60, 81, t=480), off(60, t=480), on(60, 82, t=480), off(60, t=480)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 80), (1.5, 2.0, 60, 81), (2.5, 3.0, 60, 82)]
    assert parsed.report.dropped["zero_length"] == 1
    assert parsed.report.dropped["orphan_note_off"] == 0
    assert parsed.report.fixed["keys_with_dangling_note_on"] == 1
    assert parsed.report.fixed["closed_at_end"] == 0


def test_a_dangling_note_on_lasts_until_its_key_is_struck_again(tmp_path, build_midi):
    # C4 struck at 0 and never released; then C4 0.5-1.0 s and 1.5-2.0 s, each with its off.
    path = build_midi(tmp_path, type=0, tracks=[[
        on(60, 80), on(60, 81, t=480), off(60, t=480), on(60, 82, t=480), off(60, t=480)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 80), (0.5, 1.0, 60, 81), (1.5, 2.0, 60, 82)]
    assert parsed.report.fixed["shortened_by_restrike"] == 1


def test_notes_sounding_at_the_end_are_closed_and_counted(tmp_path, build_midi):
    path = build_midi(tmp_path, type=0, tracks=[[
        on(60, 80), on(64, 70), off(60, t=480),
        mido.MetaMessage("end_of_track", time=480)]])  # the file ends at 1.0 s; 64 never ends
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 80), (0.0, 1.0, 64, 70)]
    assert parsed.report.fixed["closed_at_end"] == 1


def test_orphan_note_offs_are_dropped_and_counted(tmp_path, build_midi):
    path = build_midi(tmp_path, type=0, tracks=[[
        off(62), on(60, 80), off(60, t=480), off(60, t=0), off(67, t=480, explicit=False)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 80)]
    assert parsed.report.dropped["orphan_note_off"] == 3
    assert_events(parsed.events, [(60, 80, 0.0), (60, 0, 0.5)])


def test_zero_length_notes_are_dropped_and_counted(tmp_path, build_midi):
    path = build_midi(tmp_path, type=0, tracks=[[on(60, 80), off(60), on(62, 80), off(62, t=480)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 62, 80)]
    assert parsed.report.dropped["zero_length"] == 1


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


# --- selection ------------------------------------------------------------------------------

@pytest.fixture
def band(tmp_path, build_midi):
    """Track 1: ch0 piano C4 at 0-0.5 s; track 2: ch1 violin (program 40) E4 at 0.5-1.0 s;
    track 3: ch9 drums, bass drum 36 at 0-0.25 s."""
    return build_midi(tmp_path, name="band.mid", tracks=[
        [tempo(120)],
        [on(60, 80), off(60, t=480)],
        [program(40, channel=1), on(64, 90, t=480, channel=1), off(64, t=480, channel=1)],
        [on(36, 100, channel=9), off(36, t=240, channel=9)]])


def pitches(parsed):
    return sorted(parsed.notes["pitch"].tolist())


@pytest.mark.parametrize("selection, kept, dropped", [
    (Selection(), [60, 64], {"drums": 1}),
    (Selection(channels=(0,)), [60], {"drums": 1, "channel_not_selected": 1}),
    (Selection(channels=[1]), [64], {"drums": 1, "channel_not_selected": 1}),
    (Selection(tracks=(2,)), [64], {"drums": 1, "track_not_selected": 1}),
    (Selection(programs=(40,)), [64], {"drums": 1, "program_not_selected": 1}),
    (Selection(programs=(0,)), [60], {"drums": 1, "program_not_selected": 1}),
    (Selection(include_drums=True), [36, 60, 64], {"drums": 0}),
    (Selection(channels=(9,)), [36], {"drums": 0, "channel_not_selected": 2}),
    (Selection(tracks=(1, 3), include_drums=True), [36, 60], {"track_not_selected": 1}),
], ids=["default", "lesson_channel_0", "channel_1", "track_2", "program_40", "program_0",
        "with_drums", "drum_channel_by_name", "tracks_1_3_with_drums"])
def test_selection(band, selection, kept, dropped):
    parsed = read_midi(band, selection)
    assert pitches(parsed) == kept
    for reason, count in dropped.items():
        assert parsed.report.dropped[reason] == count
    assert parsed.report.kept_notes == len(kept)


def test_no_notes_on_channel_0_still_works_by_default(tmp_path, build_midi):
    path = build_midi(tmp_path, tracks=[[tempo(120)], [
        program(71, channel=3), on(70, 80, channel=3), off(70, t=480, channel=3)]])
    assert note_list(read_midi(path)) == [(0.0, 0.5, 70, 80)]
    with pytest.raises(MidiInputError) as err:
        read_midi(path, Selection(channels=(0,)))  # the lesson's choice finds nothing
    assert "channel 3: 1 notes, programs [71]" in str(err.value)


def test_selection_accepts_any_iterable_and_refuses_unknown_policy():
    assert Selection(channels=[0, 1]).channels == (0, 1)
    assert Selection(tracks=3).tracks == (3,)
    with pytest.raises(ValueError):
        Selection(out_of_range="clip")


def test_programs_follow_program_changes_in_time(tmp_path, build_midi):
    # Channel 0 plays piano (0) then, from 0.5 s, flute (73).
    path = build_midi(tmp_path, type=0, tracks=[[
        on(60, 80), off(60, t=480), program(73), on(62, 80), off(62, t=480)]])
    assert pitches(read_midi(path, Selection(programs=(73,)))) == [62]
    assert read_midi(path).report.channels == [
        {"channel": 0, "notes": 2, "drums": False, "programs": [0, 73]}]


# --- out-of-range pitches ------------------------------------------------------------------

def out_of_range_file(tmp_path, build_midi):
    # 12 (C0) and 23 are below 24; 113 and 120 above 112; 60 inside.
    notes = [12, 23, 60, 113, 120]
    messages = [m for p in notes for m in (on(p, 80), off(p, t=480))]
    return build_midi(tmp_path, type=0, tracks=[messages])


def test_fold_moves_pitches_by_octaves(tmp_path, build_midi):
    parsed = read_midi(out_of_range_file(tmp_path, build_midi))  # "fold" is the default
    # 12 -> 24, 23 -> 35, 113 -> 101, 120 -> 108 (pitch classes kept)
    assert parsed.notes["pitch"].tolist() == [24, 35, 60, 101, 108]
    assert parsed.report.fixed["folded_pitch"] == 4
    assert parsed.report.dropped["out_of_range"] == 0


def test_drop_removes_out_of_range_pitches(tmp_path, build_midi):
    parsed = read_midi(out_of_range_file(tmp_path, build_midi), Selection(out_of_range="drop"))
    assert note_list(parsed) == [(1.0, 1.5, 60, 80)]
    assert parsed.report.dropped["out_of_range"] == 4
    assert parsed.report.fixed["folded_pitch"] == 0


def test_fold_to_a_custom_range(tmp_path, build_midi):
    parsed = read_midi(out_of_range_file(tmp_path, build_midi),
                       Selection(pitch_low=48, pitch_high=72))
    assert parsed.notes["pitch"].tolist() == [48, 59, 60, 65, 72]
    assert parsed.report.fixed["folded_pitch"] == 4


# --- the report ----------------------------------------------------------------------------

def test_report_contents(band):
    parsed = read_midi(band)
    report = parsed.report
    assert report.path == str(band)
    assert report.sha256 == hashlib.sha256(band.read_bytes()).hexdigest()
    assert report.midi_type == 1
    assert report.division == "480 ticks per beat"
    assert report.tracks == [
        {"index": 0, "name": "", "notes": 0, "channels": []},
        {"index": 1, "name": "", "notes": 1, "channels": [0]},
        {"index": 2, "name": "", "notes": 1, "channels": [1]},
        {"index": 3, "name": "", "notes": 1, "channels": [9]}]
    assert report.channels == [
        {"channel": 0, "notes": 1, "drums": False, "programs": [0]},
        {"channel": 1, "notes": 1, "drums": False, "programs": [40]},
        {"channel": 9, "notes": 1, "drums": True, "programs": [0]}]
    assert report.tempo_changes == [{"time_s": 0.0, "bpm": 120.0}]
    assert report.duration_s == pytest.approx(1.0)
    assert report.kept_notes == 2  # drums left out
    assert report.n_events == 4
    assert len(parsed.events) == 4
    data = report.to_dict()
    assert data["kept_notes"] == 2 and data["dropped"]["drums"] == 1
    assert "kept 2 notes = 4 events" in report.summary()


def test_report_track_names(tmp_path, build_midi):
    path = build_midi(tmp_path, tracks=[
        [mido.MetaMessage("track_name", name=" Flute "), on(72, 80), off(72, t=480)]])
    assert read_midi(path).report.tracks == [
        {"index": 0, "name": "Flute", "notes": 1, "channels": [0]}]


# --- bad input -------------------------------------------------------------------------------

def _valid_bytes(tmp_path, build_midi):
    return build_midi(tmp_path, name="valid.mid", tracks=[
        [tempo(120)], [on(60, 80), off(60, t=480), on(62, 80), off(62, t=480)]]).read_bytes()


def _track_chunk(body: bytes) -> bytes:
    return b"MTrk" + len(body).to_bytes(4, "big") + body


def _header(ntrks=1, type=0, tpb=480) -> bytes:
    return b"MThd" + (6).to_bytes(4, "big") + bytes([0, type]) + ntrks.to_bytes(2, "big") + \
        tpb.to_bytes(2, "big")


BAD_FILES = {
    "not_midi": (lambda tmp, build: b"Hello, this is a text file.\n", "not a MIDI file"),
    "empty": (lambda tmp, build: b"", "empty"),
    "truncated": (lambda tmp, build: (d := _valid_bytes(tmp, build))[:len(d) // 2], "truncated"),
    "corrupt_bytes": (lambda tmp, build: _header() + _track_chunk(
        bytes([0x00, 0x90, 0xC8, 0x40, 0x00, 0xFF, 0x2F, 0x00])), "corrupt"),  # pitch 200
    "zero_tracks": (lambda tmp, build: header_only(tmp / "zero.bin", ntrks=0).read_bytes(),
                    "zero tracks"),
    "no_notes": (lambda tmp, build: build(tmp, name="nonotes.mid", tracks=[
        [tempo(120), mido.MetaMessage("text", text="just words", time=480)]]).read_bytes(),
        "no note events"),
    "drums_only": (lambda tmp, build: build(tmp, name="drums.mid", tracks=[
        [on(36, 100, channel=9), off(36, t=240, channel=9), on(42, 90, channel=9),
         off(42, t=240, channel=9)]]).read_bytes(), "only drums on channel 10"),
    "tempo_0": (lambda tmp, build: build(tmp, name="tempo0.mid", tracks=[
        [mido.MetaMessage("set_tempo", tempo=0), on(60, 80), off(60, t=480)]]).read_bytes(),
        "illegal tempo 0"),
    "delta_over_4_bytes": (lambda tmp, build: build(tmp, name="long.mid", tracks=[
        [on(60, 80, t=10**9), off(60, t=480)]]).read_bytes(), "corrupt delta time"),
    "huge_vlq": (lambda tmp, build: _header() + _track_chunk(
        bytes([0xFF] * 40 + [0x7F, 0x90, 0x3C, 0x40, 0x00, 0x80, 0x3C, 0x00, 0x00, 0xFF, 0x2F,
                             0x00])), "corrupt delta time"),
    "track_count_lie": (lambda tmp, build: _header(ntrks=65535, type=1) + _track_chunk(
        bytes([0x00, 0xFF, 0x2F, 0x00])) + _track_chunk(bytes([0x00, 0xFF, 0x2F, 0x00])),
        "the header claims 65535 tracks but the file holds 2"),
    "truncated_inside_a_track": (lambda tmp, build: _header() + _track_chunk(
        bytes([0x00, 0x90, 0x3C, 0x40]))[:-2], "truncated: the file ends inside track 0"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_input_raises_one_line_error_naming_the_file(tmp_path, build_midi, kind):
    make, reason = BAD_FILES[kind]
    data = make(tmp_path, build_midi)
    path = tmp_path / "bad input.mid"
    path.write_bytes(data)
    with pytest.raises(MidiInputError) as err:
        read_midi(path)
    message = str(err.value)
    assert message.startswith(str(path) + ": ")
    assert "\n" not in message
    assert reason in message
    assert err.value.path == str(path)


def test_an_invalid_key_signature_is_worked_around_and_reported(tmp_path):
    path = tmp_path / "keys.mid"
    path.write_bytes(_header() + _track_chunk(bytes([
        0x00, 0xFF, 0x59, 0x02, 0x09, 0x00,  # 9 sharps: mido refuses to decode it
        0x00, 0xFF, 0x59, 0x02, 0x02, 0x00,  # D major: valid, left alone
        0x00, 0x90, 0x3C, 0x40, 0x83, 0x60, 0x80, 0x3C, 0x00, 0x00, 0xFF, 0x2F, 0x00])))
    parsed = read_midi(path)
    assert parsed.events.tolist() == [(60, 64, 0.0), (60, 0, 0.5)]  # 480 ticks at 120 bpm
    assert parsed.report.repairs == ["ignored 1 invalid key signature(s)"]
    assert "ignored 1 invalid key signature(s)" in parsed.report.summary()
    assert [m.type for m in open_midi(path).tracks[0]][-3:] == ["note_on", "note_off",
                                                                 "end_of_track"]


def test_missing_file(tmp_path):
    with pytest.raises(MidiInputError, match="no such file"):
        read_midi(tmp_path / "nope.mid")


def test_bad_input_errors_are_value_errors(tmp_path):
    (tmp_path / "x.mid").write_bytes(b"")
    with pytest.raises(ValueError):
        read_midi(tmp_path / "x.mid")


def test_read_midi_files_skips_bad_files_in_a_folder(tmp_path, build_midi):
    folder = tmp_path / "songs"
    (folder / "sub").mkdir(parents=True)
    build_midi(folder, name="a.mid", type=0, tracks=[[on(60, 80), off(60, t=480)]])
    build_midi(folder / "sub", name="b.MIDI", type=0, tracks=[[on(62, 80), off(62, t=480)]])
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00")
    (folder / "empty.midi").write_bytes(b"")
    (folder / "notes.txt").write_text("not music, not a .mid: ignored")
    parsed, errors = read_midi_files(folder)
    assert [p.report.path for p in parsed] == [str(folder / "a.mid"), str(folder / "sub/b.MIDI")]
    assert [p.notes["pitch"].tolist() for p in parsed] == [[60], [62]]
    assert sorted(e.path for e in errors) == [str(folder / "broken.mid"),
                                              str(folder / "empty.midi")]
    assert all(isinstance(e, MidiInputError) for e in errors)


def test_read_midi_files_takes_globs_and_lists(tmp_path, build_midi):
    for name in ("x.mid", "y.mid"):
        build_midi(tmp_path, name=name, type=0, tracks=[[on(60, 80), off(60, t=480)]])
    parsed, errors = read_midi_files(str(tmp_path / "*.mid"))
    assert len(parsed) == 2 and errors == []
    parsed, errors = read_midi_files([tmp_path / "x.mid", tmp_path / "missing.mid"])
    assert len(parsed) == 1 and [e.path for e in errors] == [str(tmp_path / "missing.mid")]


def riff_wrapped(data: bytes) -> bytes:
    """A standard MIDI file inside a RIFF 'RMID' container, as some Windows tools save it."""
    return (b"RIFF" + (len(data) + 12).to_bytes(4, "little") + b"RMIDdata"
            + len(data).to_bytes(4, "little") + data)


def test_riff_wrapped_midi_is_read(tmp_path, simple_file):
    path = tmp_path / "wrapped.rmi"
    path.write_bytes(riff_wrapped(simple_file.read_bytes()))
    assert note_list(read_midi(path)) == [(0.0, 0.5, 60, 80), (0.5, 1.0, 64, 90)]


# --- against an independent reference ----------------------------------------------------------

MESSAGES = st.one_of(
    st.builds(lambda t, n, v, c: on(n, v, t=t, channel=c), st.integers(0, 300),
              st.sampled_from([60, 62, 64]), st.integers(1, 127), st.integers(0, 2)),
    st.builds(lambda t, n, c, x: off(n, t=t, channel=c, explicit=x), st.integers(0, 300),
              st.sampled_from([60, 62, 64]), st.integers(0, 2), st.booleans()),
    st.builds(lambda t, b: tempo(b, t=t), st.integers(0, 300), st.sampled_from([60, 80, 120, 150])),
    st.builds(lambda t: mido.Message("control_change", control=7, value=100, time=t),
              st.integers(0, 300)))


def _track_seconds(midi, index):
    """(seconds, message) for one track of a type 1 file, through mido's own playback of that
    track with every track's tempo changes (mido applies tempos from any track)."""
    solo = mido.MidiFile(type=1, ticks_per_beat=midi.ticks_per_beat)
    for i, track in enumerate(midi.tracks):  # in file order: at one tick the later tempo wins
        if i == index:
            solo.tracks.append(mido.MidiTrack(list(track) + [mido.MetaMessage("marker")]))
            continue
        tick, tempos = 0, []
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                tempos.append(msg.copy(time=tick))
        solo.tracks.append(mido.MidiTrack(
            m.copy(time=m.time - (tempos[j - 1].time if j else 0)) for j, m in enumerate(tempos)))
    now, timed = 0.0, []
    for msg in solo:
        now += msg.time
        timed.append((now, msg))
    return timed


def _key_notes(timed_messages, end):
    """One (channel, pitch) of one track: first in first out if every on gets an off; else an
    off ends every note struck before it, and an orphan off with an on at its instant is that
    on's own off. Notes left sounding end at ``end``."""
    fifo, sounding = [], []
    for now, msg in timed_messages:
        if msg.type == "note_on" and msg.velocity > 0:
            sounding.append((now, msg.velocity))
        elif sounding:
            start, velocity = sounding.pop(0)
            fifo.append((start, now, velocity))
    if not sounding:
        return fifo
    notes, sounding, orphan_at = [], [], None
    for now, msg in timed_messages:
        if msg.type == "note_on" and msg.velocity > 0:
            if now == orphan_at:
                orphan_at = None  # zero length: dropped below
            else:
                sounding.append((now, msg.velocity))
        elif any(start < now for start, _ in sounding):
            notes += [(start, now, v) for start, v in sounding if start < now]
            sounding = [(start, v) for start, v in sounding if start >= now]
        elif sounding:
            sounding.pop(0)
        else:
            orphan_at = now
    return notes + [(start, end, v) for start, v in sounding]


def reference_notes(path):
    """The reading rules, brute force: per (track, channel, pitch) pairing on mido's playback
    in seconds, then the piano's rule on each pitch of the merged stream."""
    midi = mido.MidiFile(path)
    notes = []
    for index in range(len(midi.tracks)):
        timed = _track_seconds(midi, index)
        end = next(now for now, msg in timed if msg.type == "marker")
        keys = {(m.channel, m.note) for _, m in timed if m.type in ("note_on", "note_off")}
        for channel, pitch in keys:
            mine = [(now, m) for now, m in timed if m.type in ("note_on", "note_off")
                    and (m.channel, m.note) == (channel, pitch)]
            notes += [(s, e, pitch, v) for s, e, v in _key_notes(mine, end) if e > s]
    merged = {}
    for s, e, p, v in notes:  # struck at one instant on one pitch: the longest, the loudest
        old = merged.get((s, p), (s, e, p, v))
        merged[(s, p)] = (s, max(e, old[1]), p, max(v, old[3]))
    out = []
    for s, e, p, v in merged.values():
        later = [s2 for s2, _, p2, _ in merged.values() if p2 == p and s < s2 < e]
        out.append((round(s, 6), round(min([e] + later), 6), p, v))
    return sorted(out)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tracks=st.lists(st.lists(MESSAGES, max_size=25), min_size=1, max_size=3))
def test_type_1_files_agree_with_the_rules_worked_out_on_mido_playback(tmp_path, build_midi,
                                                                       tracks):
    # 500 ticks per beat: every tempo here gives whole microseconds per tick, so all times
    # are whole microseconds and rounding to the microsecond compares them exactly
    path = build_midi(tmp_path, tracks=tracks, name="random.mid", ticks_per_beat=500)
    expected = reference_notes(path)
    if not expected:
        with pytest.raises(MidiInputError):
            read_midi(path, Selection(**WIDE))
        return
    parsed = read_midi(path, Selection(**WIDE))
    assert sorted(note_list(parsed)) == expected
    assert events_to_notes(parsed.events)[0].tolist() == parsed.notes.tolist()


def test_pedal_and_other_controllers_are_counted_not_read_as_notes(tmp_path, build_midi):
    pedal = lambda value, t=0: mido.Message("control_change", control=64, value=value, time=t)  # noqa: E731
    path = build_midi(tmp_path, tracks=[[
        pedal(127), on(60, 80), off(60, t=480), pedal(0, t=480),
        mido.Message("pitchwheel", pitch=100, time=0)]])
    parsed = read_midi(path)
    assert parsed.events.tolist() == [(60, 80, 0.0), (60, 0, 0.5)]
    assert parsed.report.ignored_messages == {"control_change": 2, "pitchwheel": 1}
    assert parsed.report.duration_s == 1.0  # the last pedal-up still counts for the length


def test_sustain_pedal_holds_released_keys_until_it_comes_up_or_the_key_is_struck_again(
        tmp_path, build_midi):
    pedal = lambda value, t=0: mido.Message("control_change", control=64, value=value, time=t)  # noqa: E731
    # 480 ppq at 120 bpm: 480 ticks = 0.5 s. Pedal down at 0 s, up at 2 s.
    path = build_midi(tmp_path, tracks=[[
        pedal(127), on(60, 80), on(64, 70), off(60, t=480), off(64, t=0),  # both keys up at 0.5 s
        on(60, 90, t=480), off(60, t=240),  # key 60 struck again at 1.0 s, up at 1.25 s
        pedal(0, t=720),  # pedal up at 2.0 s
        on(67, 60, t=480), off(67, t=480)]])  # after the pedal: 2.5 s .. 3.0 s, unchanged
    plain = read_midi(path).notes[["start_s", "end_s", "pitch"]].tolist()
    assert plain == [(0.0, 0.5, 60), (0.0, 0.5, 64), (1.0, 1.25, 60), (2.5, 3.0, 67)]
    parsed = read_midi(path, Selection(sustain_pedal=True))
    assert parsed.notes[["start_s", "end_s", "pitch"]].tolist() == [
        (0.0, 1.0, 60),  # held until the same key is struck again
        (0.0, 2.0, 64),  # held until the pedal comes up
        (1.0, 2.0, 60),
        (2.5, 3.0, 67)]
    assert parsed.report.fixed["held_by_pedal"] == 3


# --- what the standard allows, and what is refused ------------------------------------------------

def test_unknown_chunks_are_skipped_and_counted(tmp_path, simple_file):
    data = simple_file.read_bytes()
    header, tracks = data[:14], data[14:]
    xf = b"XFIH" + (4).to_bytes(4, "big") + b"\x00\x01\x02\x03"
    path = tmp_path / "yamaha.mid"
    path.write_bytes(header + xf + tracks + b"XFKM" + (0).to_bytes(4, "big"))
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 80), (0.5, 1.0, 64, 90)]
    assert parsed.report.skipped_chunks == {"XFIH": 1, "XFKM": 1}
    assert "skipped chunks: XFIH=1, XFKM=1" in parsed.report.summary()
    assert len(open_midi(path).tracks) == 1


def test_tracks_beyond_the_headers_count_and_trailing_junk_are_skipped(tmp_path, simple_file):
    data = simple_file.read_bytes()  # a header claiming 1 track, and that track
    path = tmp_path / "extra.mid"
    path.write_bytes(data + data[14:] + b"\x00\x01\x02\x03\x04\x05\x06\x07\x08")
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 80), (0.5, 1.0, 64, 90)]
    assert parsed.report.skipped_chunks == {"MTrk beyond the header's count": 1}
    assert parsed.report.repairs == ["ignored 9 bytes after the last chunk"]


def test_open_midi_gives_the_repaired_file_read_midi_reads(tmp_path, simple_file):
    path = tmp_path / "wrapped.rmi"
    path.write_bytes(riff_wrapped(simple_file.read_bytes()))
    midi = open_midi(path)
    now, ons = 0.0, []
    for msg in midi:  # the plain mido loop of notebook 01
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            ons.append((now, msg.note))
    assert ons == [(0.0, 60), (0.5, 64)]
    (tmp_path / "bad.mid").write_bytes(b"MThd")
    with pytest.raises(MidiInputError, match="truncated"):
        open_midi(tmp_path / "bad.mid")


def test_the_report_names_the_reader_version(simple_file):
    assert isinstance(READER_VERSION, int)
    assert read_midi(simple_file).report.to_dict()["reader_version"] == READER_VERSION


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


def test_a_fifo_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "x.mid"
    os.mkfifo(fifo)  # opening it for reading would block until someone writes
    outcome = []

    def read():
        try:
            read_midi(fifo)
        except MidiInputError as err:
            outcome.append(str(err))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # it blocked: unblock it (a writer that closes gives end of file)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
        pytest.fail("read_midi opened the FIFO and waited for a writer")
    assert len(outcome) == 1 and "not a regular file: it is a FIFO" in outcome[0]


def test_a_link_to_a_device_is_refused(tmp_path):
    link = tmp_path / "zero.mid"
    link.symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(MidiInputError, match="not a regular file: it is a device"):
        read_midi(link)
    with pytest.raises(MidiInputError, match="not a regular file: it is a folder"):
        read_midi(tmp_path)


def test_size_and_note_limits_are_clear_and_adjustable(tmp_path, simple_file):
    size = simple_file.stat().st_size
    with pytest.raises(MidiInputError) as err:
        read_midi(simple_file, limits=ReadLimits(max_bytes=size - 1))
    assert f"file too large ({size:,} bytes; the limit is {size - 1:,}" in str(err.value)
    assert len(read_midi(simple_file, limits=ReadLimits(max_bytes=size)).notes) == 2
    with pytest.raises(MidiInputError, match=r"too many notes \(2; the limit is 1"):
        read_midi(simple_file, limits=ReadLimits(max_notes=1))
    assert len(read_midi(simple_file, limits=ReadLimits(max_notes=2)).notes) == 2
    parsed, errors = read_midi_files([simple_file], limits=ReadLimits(max_notes=1))
    assert parsed == [] and "too many notes" in str(errors[0])


# --- the event stream means the notes -----------------------------------------------------------

MUSIC = sorted(Path(__file__).resolve().parent.parent.glob("music/**/*.mid"))


@pytest.mark.parametrize("path", MUSIC, ids=[p.name for p in MUSIC])
def test_bundled_music_events_decode_to_exactly_the_notes(path):
    assert MUSIC, "the bundled music is missing"
    for selection in (Selection(), Selection(include_drums=True, pitch_low=0, pitch_high=127)):
        parsed = read_midi(path, selection)
        decoded, fixes = events_to_notes(parsed.events)
        assert decoded.tolist() == parsed.notes.tolist()  # exact: same floats, same order
        assert fixes == {"orphan_offs": 0, "closed_at_end": 0}
        assert parsed.report.kept_notes == len(parsed.notes)


# --- bad bytes: only MidiInputError, whatever they are ------------------------------------------

@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, 10**6), insert=st.binary(max_size=12))
def test_damaged_bytes_raise_only_midi_input_errors(tmp_path, build_midi, edits, cut, insert):
    good = bytearray(_valid_bytes(tmp_path, build_midi))
    for position, value in edits:
        good[position % len(good)] = value
    at = cut % (len(good) + 1)
    data = bytes(good[:at]) + insert + bytes(good[at:]) if insert else bytes(good[:max(at, 1)])
    path = tmp_path / "damaged.mid"
    path.write_bytes(data)
    try:
        parsed = read_midi(path)
    except MidiInputError as err:
        assert "\n" not in str(err)
        return
    assert events_to_notes(parsed.events)[0].tolist() == parsed.notes.tolist()
