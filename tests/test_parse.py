"""Reading MIDI files into one stream (``midilstm.parse``): selection, pitch policy, the report,
folders and globs, and the event stream meaning exactly the notes. Every file is built here
with mido; every expectation is worked out by hand from the musical setup (at 120 bpm and 480
ticks per beat, 480 ticks = a quarter = 0.5 s).
"""
import hashlib
from pathlib import Path

import mido
import numpy as np
import pytest

from conftest import off, on, program, tempo
from helpers_parse import note_list
from midilstm.errors import MidiInputError, ParameterError
from midilstm.events import events_to_notes, fold_pitches
from midilstm.parse import READER_VERSION, Selection, read_midi, read_midi_files


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


# --- checking a Selection ------------------------------------------------------------------

def test_selection_stores_any_iterable_of_whole_numbers_as_python_ints():
    selection = Selection(channels=[0, 1], tracks=3, programs=range(2),
                          pitch_low=np.int64(0), pitch_high=np.uint8(127))
    assert (selection.channels, selection.tracks, selection.programs) == ((0, 1), (3,), (0, 1))
    from_numpy = Selection(channels=np.array([9, 0]))
    assert from_numpy.channels == (9, 0)
    assert all(type(v) is int for v in from_numpy.channels + (selection.pitch_low,))
    assert repr(selection) == repr(Selection(channels=(0, 1), tracks=(3,), programs=(0, 1),
                                             pitch_low=0, pitch_high=127))  # caches key on it


BAD_SELECTIONS = [  # (fields, the field named, what the message says)
    (dict(channels=[16]), "channels", "list of integers in 0..15 or None, got [16]"),
    (dict(channels=[-1]), "channels", "integers in 0..15"),
    (dict(channels="0"), "channels", "got '0'"),
    (dict(channels=[0.0]), "channels", "got [0.0]"),
    (dict(channels=[True]), "channels", "got [True]"),
    (dict(channels=np.array(3)), "channels", "got array(3)"),
    (dict(channels=[]), "channels", "must be a non-empty list"),
    (dict(channels=[1, 1]), "channels", "lists a channel twice: [1, 1]"),
    (dict(tracks=-1), "tracks", "whole numbers in 0..65534 (0-based), not -1"),
    (dict(tracks=()), "tracks", "at least one track"),
    (dict(programs=[128]), "programs", "whole numbers in 0..127 (0-based), not [128]"),
    (dict(programs=1.5), "programs", "not 1.5"),
    (dict(include_drums=1), "include_drums", "must be true or false, got 1"),
    (dict(sustain_pedal="yes"), "sustain_pedal", "must be true or false, got 'yes'"),
    (dict(out_of_range="clip"), "out_of_range", "must be one of 'fold', 'drop', got 'clip'"),
    (dict(pitch_low=-1), "pitch_low", "a whole number in 0..127, not -1"),
    (dict(pitch_high=128), "pitch_high", "a whole number in 0..127, not 128"),
    (dict(pitch_high=100.0), "pitch_high", "not 100.0"),
    (dict(pitch_low=72, pitch_high=48), "pitch_low",
     "72 is above pitch_high 48: the range pitch_low..pitch_high would hold no pitch"),
    (dict(pitch_low=60, pitch_high=70), "out_of_range",
     "'fold' needs a range of at least 12 pitches (one octave), but pitch_low..pitch_high is "
     "60..70: widen it or use 'drop'"),
]


@pytest.mark.parametrize("fields, name, reason", BAD_SELECTIONS,
                         ids=[f"{n}:{i}" for i, (_, n, _) in enumerate(BAD_SELECTIONS)])
def test_a_bad_selection_field_is_refused_in_one_line_naming_it(fields, name, reason):
    with pytest.raises(ParameterError) as err:
        Selection(**fields)
    message = str(err.value)
    assert err.value.name == name
    assert message.startswith(f"parameter {name}: ") and "\n" not in message
    assert reason in message
    assert isinstance(err.value, ValueError)  # what callers caught before


def test_fold_needs_an_octave_and_a_one_octave_range_holds_every_pitch(tmp_path, build_midi):
    # Why a narrower range is refused: B (59) has no place in 60..70, so folding leaves it out.
    assert fold_pitches(np.array([59]), 60, 70).tolist() == [71]
    path = out_of_range_file(tmp_path, build_midi)  # pitches 12, 23, 60, 113, 120 in turn
    folded = read_midi(path, Selection(pitch_low=60, pitch_high=71))
    assert folded.notes["pitch"].tolist() == [60, 71, 60, 65, 60]
    assert folded.report.fixed["folded_pitch"] == 4
    dropped = read_midi(path, Selection(pitch_low=60, pitch_high=70, out_of_range="drop"))
    assert dropped.notes["pitch"].tolist() == [60]
    assert dropped.report.dropped["out_of_range"] == 4


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


def test_the_report_names_the_reader_version(simple_file):
    assert isinstance(READER_VERSION, int)
    assert read_midi(simple_file).report.to_dict()["reader_version"] == READER_VERSION


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


# --- a folder read goes on past any file's failure (issue 18) -------------------------------

def test_a_folder_read_goes_on_past_any_files_failure(tmp_path, build_midi, monkeypatch):
    from midilstm import parse

    folder = tmp_path / "songs"
    folder.mkdir()
    header = b"MThd" + (6).to_bytes(4, "big") + bytes([0, 1]) + (40000).to_bytes(2, "big") + \
        (480).to_bytes(2, "big")
    end = b"MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"
    (folder / "a_tracks.mid").write_bytes(header + end * 40000)  # 40,000 tracks, no note
    delta = b"\x81" * 2100 + b"\x00\x90\x3c\x40"
    (folder / "b_delta.mid").write_bytes(
        header[:10] + (1).to_bytes(2, "big") + header[12:]
        + b"MTrk" + len(delta).to_bytes(4, "big") + delta)
    for pitch, name in ((60, "c_good"), (61, "e_bug"), (62, "f_memory"), (63, "g_good")):
        build_midi(folder, name=f"{name}.mid", tracks=[[on(pitch, 80), off(pitch, t=480)]])
    real = parse.pair_notes

    def pairing(midi, scan, seconds_of, sustain_pedal=False):  # a reader bug, for two files
        pitch = scan.note_pitch[0] if len(scan.note_pitch) else None
        if pitch == 61:
            raise KeyError("x" * 50 + "7" * 4200)  # a 4,200-digit number in the error
        if pitch == 62:
            raise MemoryError()
        return real(midi, scan, seconds_of, sustain_pedal)

    monkeypatch.setattr(parse, "pair_notes", pairing)
    parsed, errors = read_midi_files(folder)
    assert [Path(p.report.path).name for p in parsed] == ["c_good.mid", "g_good.mid"]
    assert [Path(e.path).name for e in errors] == ["a_tracks.mid", "b_delta.mid", "e_bug.mid",
                                                   "f_memory.mid"]
    reasons = [e.reason for e in errors]
    assert reasons[0] == "no note events in the file"
    assert "corrupt delta time" in reasons[1]
    assert reasons[2].startswith("reader failed (KeyError: ") and "(4200 digits)" in reasons[2]
    assert reasons[3].startswith("out of memory while reading the file")
    for err in errors:
        assert isinstance(err, MidiInputError) and "\n" not in str(err)
        assert str(err).startswith(err.path + ": ") and len(str(err)) < len(err.path) + 400
