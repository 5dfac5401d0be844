"""Reading MIDI files: note pairing, the tempo map, file types, selection, pitch policy, the
report and bad input. Every file is built here with mido; every expectation is worked out by
hand from the musical setup (at 120 bpm and 480 ticks per beat, 480 ticks = a quarter = 0.5 s).
"""
import hashlib

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import header_only, off, on, program, tempo
from midilstm.errors import MidiInputError
from midilstm.parse import Selection, read_midi, read_midi_files

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


def test_overlapping_same_pitch_pairs_first_in_first_out(tmp_path, build_midi):
    # C4 struck at 0 (v100) and again at 0.25 s (v50); offs at 0.5 s and 1.0 s.
    path = build_midi(tmp_path, type=0, tracks=[[
        on(60, 100), on(60, 50, t=240), off(60, t=240), off(60, t=480)]])
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, 0.5, 60, 100), (0.25, 1.0, 60, 50)]
    assert parsed.report.fixed["overlapping_same_pitch"] == 1


def test_pairing_is_per_channel(tmp_path, build_midi):
    # Same pitch on two channels: ch0 holds 0..1.0 s, ch1 plays 0.25..0.5 s. Pairing by pitch
    # alone would wrongly give 0..0.5 and 0.25..1.0.
    path = build_midi(tmp_path, type=0, tracks=[[
        on(60, 100, channel=0), on(60, 50, t=240, channel=1), off(60, t=240, channel=1),
        off(60, t=480, channel=0)]])
    assert note_list(read_midi(path)) == [(0.0, 1.0, 60, 100), (0.25, 0.5, 60, 50)]


def test_pairing_across_tracks_of_a_type_1_file(tmp_path, build_midi):
    """Type 1 tracks play at once: an off in another track on the same channel ends the note."""
    path = build_midi(tmp_path, tracks=[[tempo(120)], [on(60, 70)], [off(60, t=960)]])
    assert note_list(read_midi(path)) == [(0.0, 1.0, 60, 70)]


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
    "absurd_tempo": (lambda tmp, build: build(tmp, name="fast.mid", tracks=[
        [mido.MetaMessage("set_tempo", tempo=1), on(60, 80), off(60, t=480)]]).read_bytes(),
        "absurd tempo"),
    "absurd_delta": (lambda tmp, build: build(tmp, name="long.mid", tracks=[
        [on(60, 80, t=10**9), off(60, t=480)]]).read_bytes(), "absurd delta times"),
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


def test_riff_wrapped_midi_is_read(tmp_path, simple_file):
    data = simple_file.read_bytes()
    riff = b"RIFF" + (len(data) + 12).to_bytes(4, "little") + b"RMIDdata" + \
        len(data).to_bytes(4, "little") + data
    path = tmp_path / "wrapped.rmi"
    path.write_bytes(riff)
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


def reference_notes(path):
    """Notes the plain way: mido's merged playback in seconds, FIFO per (channel, pitch)."""
    now, sounding, notes = 0.0, {}, []
    for msg in mido.MidiFile(path):
        now += msg.time
        if msg.type in ("note_on", "note_off"):
            queue = sounding.setdefault((msg.channel, msg.note), [])
            if msg.type == "note_on" and msg.velocity > 0:
                queue.append((now, msg.velocity))
            elif queue:
                start, velocity = queue.pop(0)
                notes.append((start, now, msg.note, velocity))
    notes += [(start, now, pitch, velocity) for (_, pitch), queue in sounding.items()
              for start, velocity in queue]
    return sorted((round(s, 6), round(e, 6), p, v) for s, e, p, v in notes if e > s)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tracks=st.lists(st.lists(MESSAGES, max_size=25), min_size=1, max_size=3))
def test_type_1_files_agree_with_mido_playback(tmp_path, build_midi, tracks):
    # 500 ticks per beat: every tempo here gives whole microseconds per tick, so all times
    # are whole microseconds and rounding to the microsecond compares them exactly
    path = build_midi(tmp_path, tracks=tracks, name="random.mid", ticks_per_beat=500)
    expected = reference_notes(path)
    if not expected:
        with pytest.raises(MidiInputError):
            read_midi(path, Selection(**WIDE))
        return
    assert sorted(note_list(read_midi(path, Selection(**WIDE)))) == expected


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
