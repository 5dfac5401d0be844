"""read_midi against two independent readers, pretty_midi and symusic (test-only dependencies).

Same rules on both sides: every note kept (drums included, no pitch folding), and the
independent reader's notes, less zero-length ones, go through the piano's rule that one stream
of (pitch, velocity, delta) events needs (``events.strike_again``, checked against a brute-force
definition in test_events.py). So what is compared is pairing and timing. Where the rules
differ, the tests say so and account for every note concerned:

* symusic keeps times in seconds as float32 (about 4 us off at 100 s): compared relatively.
* pretty_midi reads tempo changes from track 0 only (the fixtures keep them there), drops notes
  never ended (the fixtures end theirs), and ends *every* sounding note of a key at its next
  off where we pair first in first out (the fixtures for it keep each track's notes of one key
  apart; symusic, first in first out too, gets the overlaps).
* A note-off then note-on of one key at one tick with nothing sounding is a grace note (music21
  writes zero-length notes so): we read it as zero-length and drop it; pretty_midi lets that
  note-on sound until the key is struck again; symusic pairs it first in first out, shifting
  every later note of the key (the cascade). Such notes are named and excluded below.
"""
import warnings
from collections import defaultdict
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import off, on, program, tempo, write_midi_file
from midilstm.events import NOTE_DTYPE, strike_again
from midilstm.parse import Selection, read_midi

pretty_midi = pytest.importorskip("pretty_midi")
symusic = pytest.importorskip("symusic")

EVERYTHING = Selection(include_drums=True, pitch_low=0, pitch_high=127)
MUSIC = sorted(Path(__file__).resolve().parent.parent.glob("music/**/*.mid"))


def _canonical(rows) -> np.ndarray:
    notes = np.array(rows, dtype=NOTE_DTYPE)
    notes = notes[notes["end_s"] > notes["start_s"]]
    return strike_again(notes)[0]


def pretty_midi_notes(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "tempo events found on non-zero tracks"
        midi = pretty_midi.PrettyMIDI(str(path))
    return midi, _canonical([(n.start, n.end, n.pitch, n.velocity)
                             for i in midi.instruments for n in i.notes])


def symusic_notes(path):
    score = symusic.Score(str(path), ttype="second")
    return _canonical([(n.start, n.end, n.pitch, n.velocity)
                       for t in score.tracks for n in t.notes])


def rows(notes):
    return sorted((int(n["pitch"]), float(n["start_s"]), float(n["end_s"]), int(n["velocity"]))
                  for n in notes)


def assert_same_notes(ours, theirs, rtol=0.0):
    """Same count, pitches and velocities; onsets and offsets within 1e-9 s (plus ``rtol``)."""
    a, b = rows(ours), rows(theirs)
    assert len(a) == len(b), f"{len(a)} notes here, {len(b)} there"
    assert [(p, v) for p, _, _, v in a] == [(p, v) for p, _, _, v in b]
    np.testing.assert_allclose([r[1:3] for r in a], [r[1:3] for r in b], rtol=rtol, atol=1e-9)


FLOAT32 = 2e-7  # symusic keeps times in seconds as float32: relative error up to ~1.2e-7


def key_messages(path):
    """Each (track, channel, pitch)'s note messages as (tick, is_on), with mido alone."""
    keys = defaultdict(list)
    for t, track in enumerate(mido.MidiFile(path).tracks):
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type in ("note_on", "note_off"):
                is_on = msg.type == "note_on" and msg.velocity > 0
                keys[(t, msg.channel, msg.note)].append((tick, is_on))
    return keys


def grace_notes(path):
    """(tick, pitch) of every note-on written right after an off of its key, at its tick,
    with nothing of the key sounding."""
    found = set()
    for (_, _, pitch), messages in key_messages(path).items():
        sounding, orphan_tick = 0, None
        for tick, is_on in messages:
            if is_on and tick == orphan_tick:
                found.add((tick, pitch))
            elif is_on:
                sounding += 1
            elif sounding:
                sounding -= 1
            else:
                orphan_tick = tick
    return found


def pitches_with_dangling_note_ons(path):
    """Pitches where first-in-first-out pairing leaves a note-on of some key without an off."""
    dangling = set()
    for (_, _, pitch), messages in key_messages(path).items():
        sounding = 0
        for _, is_on in messages:
            sounding = sounding + 1 if is_on else max(sounding - 1, 0)
        if sounding:
            dangling.add(pitch)
    return dangling


# --- the bundled music ------------------------------------------------------------------------

@pytest.mark.parametrize("path", MUSIC, ids=[p.name for p in MUSIC])
def test_bundled_music_agrees_with_pretty_midi_except_for_grace_notes(path):
    ours = read_midi(path, EVERYTHING).notes
    midi, theirs = pretty_midi_notes(path)
    graces = {(round(midi.tick_to_time(tick), 9), pitch) for tick, pitch in grace_notes(path)}
    ours_set = {tuple(r) for r in np.round(np.array(rows(ours)), 9).tolist()}
    theirs_set = {tuple(r) for r in np.round(np.array(rows(theirs)), 9).tolist()}
    assert ours_set <= theirs_set  # every note we read, pretty_midi reads the same
    extra = theirs_set - ours_set  # pretty_midi's only extra notes: grace notes made to sound
    assert {(start, int(pitch)) for pitch, start, _, _ in extra} <= graces
    assert len(extra) <= len(graces)


@pytest.mark.parametrize("path", MUSIC, ids=[p.name for p in MUSIC])
def test_bundled_music_agrees_with_symusic_where_no_note_on_dangles(path):
    ours = read_midi(path, EVERYTHING).notes
    theirs = symusic_notes(path)
    dangling = pitches_with_dangling_note_ons(path)  # symusic cascades there; we do not
    keep = lambda notes: notes[~np.isin(notes["pitch"], list(dangling))]  # noqa: E731
    assert len(keep(ours)) >= 0.8 * len(ours)  # most of every file is compared
    assert_same_notes(keep(ours), keep(theirs), FLOAT32)


def test_the_grace_note_is_the_only_difference_on_its_pitch(tmp_path):
    """The cascade, built by hand: FIFO readers (symusic) shift every later note of the pitch."""
    path = write_midi_file(tmp_path / "grace.mid", type=0, tracks=[[
        tempo(120), on(60, 80), off(60, t=480), off(60, t=480), on(60, 30),
        on(60, 81, t=480), off(60, t=480), on(60, 82, t=480), off(60, t=480)]])
    ours = read_midi(path, EVERYTHING).notes
    assert rows(ours) == [(60, 0.0, 0.5, 80), (60, 1.5, 2.0, 81), (60, 2.5, 3.0, 82)]
    # symusic: the grace note pairs with 2.0 s, the next note with 3.0 s and the last one
    # is left without an off, so it is lost (then the piano's rule cuts the grace note at 1.5 s)
    assert rows(symusic_notes(path)) == [
        (60, 0.0, 0.5, 80), (60, 1.0, 1.5, 30), (60, 1.5, 3.0, 81)]
    _, theirs = pretty_midi_notes(path)  # the grace note sounds until the next strike
    assert rows(theirs) == [(60, 0.0, 0.5, 80), (60, 1.0, 1.5, 30), (60, 1.5, 2.0, 81),
                            (60, 2.5, 3.0, 82)]


# --- multi-track fixtures ---------------------------------------------------------------------

def quartet(path, overlap_within_a_track):
    """Four tracks sharing channel 0 (as notation programs export string quartets), a drum
    track, program changes and tempo changes in track 0. Voices 1 and 2 double pitches, so
    notes of one pitch overlap across tracks."""
    voice1 = [program(40), on(60, 90), off(60, t=960), on(64, 80), off(64, t=480)]
    voice2 = [on(60, 70, t=240), off(60, t=240), on(64, 60, t=240), off(64, t=960)]
    if overlap_within_a_track:  # one track strikes 67 again while it sounds
        voice2 += [on(67, 50), on(67, 55, t=120), off(67, t=120), off(67, t=240)]
    voice3 = [on(48, 64), off(48, t=1920), on(48, 64), off(48, t=480)]
    voice4 = [on(36, 64, t=480), off(36, t=480), program(42), on(36, 70), off(36, t=960)]
    drums = [on(42, 100, channel=9), off(42, t=120, channel=9), on(42, 90, t=360, channel=9),
             off(42, t=120, channel=9)]
    return write_midi_file(path, tracks=[[tempo(120), tempo(60, t=960), tempo(150, t=960)],
                                         voice1, voice2, voice3, voice4, drums])


def test_a_quartet_on_one_channel_agrees_with_pretty_midi(tmp_path):
    path = quartet(tmp_path / "quartet.mid", overlap_within_a_track=False)
    assert_same_notes(read_midi(path, EVERYTHING).notes, pretty_midi_notes(path)[1])


def test_a_quartet_on_one_channel_agrees_with_symusic(tmp_path):
    path = quartet(tmp_path / "quartet.mid", overlap_within_a_track=True)
    assert_same_notes(read_midi(path, EVERYTHING).notes, symusic_notes(path), FLOAT32)


def random_file(tmp_path, tracks, type, tempos, name="random.mid"):
    """Tracks given as notes (start, length, channel, pitch, velocity) in ticks, ended by
    their offs (offs before ons at one tick); tempo changes in track 0."""
    built = [[tempo(bpm, t=gap) for gap, bpm in tempos]]
    for notes in tracks:
        messages = sorted([(s, 1, ch, p, v) for s, _, ch, p, v in notes]
                          + [(s + n, 0, ch, p, 0) for s, n, ch, p, _ in notes])
        now, track = 0, []
        for tick, is_on, channel, pitch, velocity in messages:
            message = on(pitch, velocity, channel=channel) if is_on else off(pitch, channel=channel)
            track.append(message.copy(time=tick - now))
            now = tick
        built.append(track)
    if type == 0:  # the tempo track and the one voice track, merged
        built = [list(mido.merge_tracks([mido.MidiTrack(t) for t in built]))]
    return write_midi_file(tmp_path / name, tracks=built, type=type, ticks_per_beat=500)


NOTES = st.tuples(st.integers(0, 2000), st.integers(1, 600), st.sampled_from([0, 1, 9]),
                  st.sampled_from([60, 62, 64]), st.integers(1, 127))
TEMPOS = st.lists(st.tuples(st.integers(0, 1500), st.sampled_from([60, 80, 120, 150])),
                  max_size=3)


def apart(notes):
    """Only notes that do not overlap an earlier kept note of their (channel, pitch)."""
    kept, busy_until = [], {}
    for note in sorted(notes):
        start, length, channel, pitch, _ = note
        if start >= busy_until.get((channel, pitch), 0):
            kept.append(note)
            busy_until[(channel, pitch)] = start + length
    return kept


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tracks=st.lists(st.lists(NOTES, min_size=1, max_size=12), min_size=1, max_size=4),
       type=st.sampled_from([0, 1]), tempos=TEMPOS)
def test_random_multi_track_files_agree_with_symusic(tmp_path, tracks, type, tempos):
    if type == 0:  # one track holding every voice: notes of one key overlap in it
        tracks = [sum(tracks, [])]
    path = random_file(tmp_path, tracks, type, tempos)
    assert_same_notes(read_midi(path, EVERYTHING).notes, symusic_notes(path), FLOAT32)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tracks=st.lists(st.lists(NOTES, min_size=1, max_size=12), min_size=1, max_size=4),
       tempos=TEMPOS)
def test_random_multi_track_files_agree_with_pretty_midi(tmp_path, tracks, tempos):
    path = random_file(tmp_path, [apart(t) for t in tracks], 1, tempos)
    assert_same_notes(read_midi(path, EVERYTHING).notes, pretty_midi_notes(path)[1])
