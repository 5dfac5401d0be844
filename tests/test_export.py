"""Writing MIDI: explicit tempo, PPQ, channel and program; real note-offs; seconds -> ticks
through the tempo; atomic writes; and the round trip read -> write -> read within one tick."""
import math
import os

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midilstm.errors import MidiInputError
from midilstm.events import NOTE_DTYPE, events_to_notes, make_events, notes_to_events
from midilstm.export import events_to_midi, tempo_microseconds, write_midi
from midilstm.music import bundled, expected_hashes
from midilstm.parse import Selection, read_midi

# C4 + E4 together for 0.3 s, then G4 from 0.45 s to 1.05 s.
EVENTS = make_events([(60, 80, 0.0), (64, 90, 0.0), (60, 0, 0.3), (64, 0, 0.0),
                      (67, 100, 0.15), (67, 0, 0.6)])


def absolute(track):
    """(absolute tick, message) for every message of a mido track."""
    now, out = 0, []
    for msg in track:
        now += msg.time
        out.append((now, msg))
    return out


def note_messages(track):
    return [(tick, msg.type, msg.note, msg.velocity, msg.channel) for tick, msg in absolute(track)
            if msg.type in ("note_on", "note_off")]


def test_written_file_has_explicit_tempo_ppq_channel_program(tmp_path):
    # 100 bpm = 600000 us per beat; 960 ticks per beat -> 1600 ticks per second.
    path = write_midi(EVENTS, tmp_path / "out.mid", bpm=100, ppq=960, channel=2, program=40)
    midi = mido.MidiFile(path)
    assert midi.type == 0 and midi.ticks_per_beat == 960 and len(midi.tracks) == 1
    track = midi.tracks[0]
    tempos = [(tick, m.tempo) for tick, m in absolute(track) if m.type == "set_tempo"]
    programs = [(tick, m.channel, m.program) for tick, m in absolute(track)
                if m.type == "program_change"]
    assert tempos == [(0, 600_000)]
    assert programs == [(0, 2, 40)]
    assert note_messages(track) == [
        (0, "note_on", 60, 80, 2), (0, "note_on", 64, 90, 2),
        (480, "note_off", 60, 0, 2), (480, "note_off", 64, 0, 2),  # 0.3 s * 1600
        (720, "note_on", 67, 100, 2), (1680, "note_off", 67, 0, 2)]  # 0.45 s, 1.05 s
    assert track[-1].type == "end_of_track"


@pytest.mark.parametrize("bpm, ppq, ticks_per_s", [
    (120, 480, 960), (60, 96, 96), (90, 960, 1440), (150, 10080, 25200)])
def test_seconds_become_ticks_through_the_tempo(bpm, ppq, ticks_per_s):
    # One note from 1.0 s to 2.5 s: ticks = seconds * ppq * bpm / 60.
    events = make_events([(60, 80, 1.0), (60, 0, 1.5)])
    track = events_to_midi(events, bpm=bpm, ppq=ppq).tracks[0]
    assert note_messages(track) == [(ticks_per_s, "note_on", 60, 80, 0),
                                    (round(2.5 * ticks_per_s), "note_off", 60, 0, 0)]


def test_tempo_is_stored_in_whole_microseconds_and_ticks_follow_it():
    # 90 bpm is 666666.67 us per beat; the file stores 666667, so 1 s = 960 * 1e6 / 666667
    # = 1439.9993 ticks -> 1440.
    track = events_to_midi(make_events([(60, 80, 1.0), (60, 0, 1.0)]), bpm=90, ppq=960).tracks[0]
    assert [m.tempo for m in track if m.type == "set_tempo"] == [666_667]
    assert [tick for tick, *_ in note_messages(track)] == [1440, 2880]


def test_every_note_gets_a_note_off_and_lasts_at_least_a_tick():
    # 62 is never ended (closed at the last event), 64 lasts 0 s, and an orphan off for 70.
    events = make_events([(70, 0, 0.0), (60, 80, 0.0), (60, 0, 0.5), (64, 70, 0.0),
                          (64, 0, 0.0), (62, 90, 0.0)])
    track = events_to_midi(events).tracks[0]  # 120 bpm, 480 ppq: 960 ticks per second
    assert note_messages(track) == [
        (0, "note_on", 60, 80, 0), (480, "note_off", 60, 0, 0), (480, "note_on", 62, 90, 0),
        (480, "note_on", 64, 70, 0), (481, "note_off", 62, 0, 0), (481, "note_off", 64, 0, 0)]


def test_offs_come_before_ons_at_the_same_tick():
    # C4 re-struck the instant it ends.
    events = make_events([(60, 80, 0.0), (60, 0, 0.5), (60, 81, 0.0), (60, 0, 0.5)])
    track = events_to_midi(events).tracks[0]
    assert note_messages(track) == [(0, "note_on", 60, 80, 0), (480, "note_off", 60, 0, 0),
                                    (480, "note_on", 60, 81, 0), (960, "note_off", 60, 0, 0)]


def test_drum_channel_gets_no_program_change():
    midi = events_to_midi(EVENTS, channel=9, program=5)
    assert not any(m.type == "program_change" for m in midi.tracks[0])
    assert {m.channel for m in midi.tracks[0] if m.type.startswith("note")} == {9}


@pytest.mark.parametrize("options", [dict(channel=16), dict(channel=-1), dict(program=128)])
def test_bad_channel_or_program(options):
    with pytest.raises(ValueError):
        events_to_midi(EVENTS, **options)


def test_write_creates_folders_and_returns_the_path(tmp_path):
    path = tmp_path / "a" / "b" / "out.mid"
    assert write_midi(EVENTS, path) == path
    assert path.read_bytes()[:4] == b"MThd"


@pytest.mark.parametrize("failure", ["replace", "save"])
def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch, failure):
    path = tmp_path / "piece.mid"
    write_midi(EVENTS[:2], path)
    old = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    if failure == "replace":
        monkeypatch.setattr(os, "replace", boom)
    else:
        monkeypatch.setattr(mido.MidiFile, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_midi(EVENTS, path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["piece.mid"]  # no temp file left


# --- round trip ------------------------------------------------------------------------------

def tick_s(bpm, ppq):
    return 60.0 / bpm / ppq


@st.composite
def note_sets(draw):
    """Notes that never overlap on the same pitch: random starts, durations, velocities."""
    pitches = draw(st.lists(st.integers(24, 112), min_size=1, max_size=6, unique=True))
    rows = []
    for pitch in pitches:
        t = draw(st.floats(0, 3))
        for _ in range(draw(st.integers(1, 6))):
            duration = draw(st.floats(0.02, 2))
            rows.append((t, t + duration, pitch, draw(st.integers(1, 127))))
            t += duration + draw(st.one_of(st.just(0.0), st.floats(0, 2)))
    notes = np.array(rows, dtype=NOTE_DTYPE)
    return notes[np.lexsort((notes["pitch"], notes["start_s"]))]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(notes=note_sets(), bpm=st.sampled_from([60, 90, 100, 120, 150]),
       ppq=st.sampled_from([96, 480, 960]))
def test_round_trip_property(tmp_path, notes, bpm, ppq):
    path = write_midi(notes_to_events(notes), tmp_path / "rt.mid", bpm=bpm, ppq=ppq)
    back = read_midi(path).notes
    assert len(back) == len(notes)
    order = lambda n: np.lexsort((n["start_s"], n["pitch"]))  # noqa: E731
    a, b = notes[order(notes)], back[order(back)]
    assert a["pitch"].tolist() == b["pitch"].tolist()
    assert a["velocity"].tolist() == b["velocity"].tolist()
    tolerance = tick_s(bpm, ppq) + 1e-9
    assert np.abs(a["start_s"] - b["start_s"]).max() <= tolerance
    assert np.abs(a["end_s"] - b["end_s"]).max() <= tolerance


def compare_events(original, again, tolerance):
    """Same events, each at most ``tolerance`` apart: matched per (pitch, on/off) in time order."""
    def table(events):
        times = np.cumsum(events["delta_s"])
        order = np.lexsort((times, events["velocity"] > 0, events["pitch"]))
        return events["pitch"][order], events["velocity"][order], times[order]

    p1, v1, t1 = table(original)
    p2, v2, t2 = table(again)
    assert len(p1) == len(p2)
    assert p1.tolist() == p2.tolist()
    assert v1.tolist() == v2.tolist()
    assert np.abs(t1 - t2).max() <= tolerance


@pytest.mark.parametrize("name", sorted(expected_hashes()))
def test_round_trip_of_every_bundled_file(tmp_path, name):
    [path] = bundled(name)
    parsed = read_midi(path)
    out = write_midi(parsed.events, tmp_path / "again.mid")  # 120 bpm, 480 ppq
    again = read_midi(out)
    compare_events(parsed.events, again.events, tick_s(120, 480) + 1e-9)
    assert again.report.kept_notes == parsed.report.kept_notes
    assert again.report.dropped["orphan_note_off"] == 0
    assert again.report.fixed["closed_at_end"] == 0
    assert again.report.duration_s == pytest.approx(np.sum(parsed.events["delta_s"]),
                                                    abs=tick_s(120, 480))


def test_round_trip_at_another_tempo_and_resolution(tmp_path):
    parsed = read_midi(bundled()[0], Selection(channels=(0,)))
    again = read_midi(write_midi(parsed.events, tmp_path / "x.mid", bpm=73, ppq=96))
    # 73 bpm is 821918 us per beat (whole microseconds): one tick = 0.821918 / 96 s
    compare_events(parsed.events, again.events, 0.821918 / 96 + 1e-9)


def test_written_file_is_refused_when_unreadable(tmp_path):
    """Sanity check of the test above: a truncated written file is an error, not a pass."""
    path = write_midi(EVENTS, tmp_path / "x.mid")
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(MidiInputError):
        read_midi(path)


# --- the writing steps, one by one ---------------------------------------------------------------
def test_the_steps_chained_by_hand_give_events_to_midi():
    from midilstm.events import events_to_notes
    from midilstm.export import (header_messages, note_messages, note_switches,
                                 seconds_to_ticks, tempo_microseconds, to_delta_ticks)
    bpm, ppq = 100, 960
    notes, _ = events_to_notes(EVENTS)
    assert tempo_microseconds(bpm) == 600_000
    assert seconds_to_ticks(notes["start_s"], bpm, ppq).tolist() == [0, 0, 720]  # 1600 / s
    switches = note_switches(notes, bpm, ppq)
    assert switches["tick"].tolist() == [0, 0, 480, 480, 720, 1680]
    assert switches["on"].tolist() == [True, True, False, False, True, False]
    assert to_delta_ticks(switches["tick"]).tolist() == [0, 0, 480, 0, 240, 960]
    track = mido.MidiTrack(header_messages(bpm, channel=2, program=40)
                           + note_messages(switches, channel=2)
                           + [mido.MetaMessage("end_of_track", time=0)])
    by_hand = mido.MidiFile(type=0, ticks_per_beat=ppq, tracks=[track])
    expected = events_to_midi(EVENTS, bpm=bpm, ppq=ppq, channel=2, program=40)
    assert by_hand.tracks[0] == expected.tracks[0]
    assert by_hand.ticks_per_beat == expected.ticks_per_beat


def test_seconds_to_ticks_rounds_absolute_times():
    from midilstm.export import seconds_to_ticks
    # 120 bpm, 480 ppq: 960 ticks per second; 1/3 s = 320 ticks, 0.0005 s rounds to 0
    assert seconds_to_ticks([0.0, 1 / 3, 0.0005, 0.0006, 2.0], 120, 480).tolist() == [0, 320, 0, 1, 1920]


@pytest.mark.parametrize("options", [dict(bpm=0), dict(bpm=-5), dict(ppq=0), dict(bpm=math.inf),
                                     dict(bpm=math.nan), dict(channel=True), dict(ppq=96.5)])
def test_bad_tempo_or_resolution(options):
    from midilstm.errors import ParameterError
    with pytest.raises(ParameterError, match=f"parameter {next(iter(options))}"):
        events_to_midi(EVENTS, **options)


# --- two notes stay two notes: no two strikes of one pitch share a tick ---------------------------
def restrikes(tick: float, n: int = 40, seed: int = 0) -> np.ndarray:
    """Notes of a few pitches, each struck again less than a tick after a note (``tick`` s):
    a short note restruck (an on at the same tick), two strikes at one instant, a note
    restruck while it sounds, and a legato repeat whose off and next on share a tick."""
    rng = np.random.default_rng(seed)
    rows, t = [], 0.0
    for i in range(n):
        pitch = int(rng.choice([60, 62, 64]))
        gap = float(rng.uniform(0.05, 0.95)) * tick  # the second strike, less than a tick later
        kind = i % 4
        if kind == 0:  # a note shorter than the gap, then the restrike
            rows += [(t, t + gap / 2, pitch, 80), (t + gap, t + 0.3, pitch, 90)]
        elif kind == 1:  # two strikes at one instant (a generated stream can hold them)
            rows += [(t, t + 0.2, pitch, 70), (t, t + 0.25, pitch, 71)]
        elif kind == 2:  # restruck while it sounds: the first ends at the restrike
            rows += [(t, t + gap, pitch, 60), (t + gap, t + 0.4, pitch, 61)]
        else:  # legato: the next strike just after the end, within the same tick
            rows += [(t, t + 0.2, pitch, 50), (t + 0.2 + gap / 4, t + 0.5, pitch, 51)]
        t += 0.6 + float(rng.uniform(0, 0.1))
    notes = np.array(rows, dtype=NOTE_DTYPE)
    return notes[np.lexsort((notes["pitch"], notes["start_s"]))]


def by_pitch_then_start(notes):
    return notes[np.lexsort((np.arange(len(notes)), notes["start_s"], notes["pitch"]))]


@pytest.mark.parametrize("bpm, ppq", [(120, 480), (120, 24), (73, 96)])
def test_notes_of_one_pitch_less_than_a_tick_apart_stay_notes(tmp_path, bpm, ppq):
    """An audit lost 16 of 2,492 notes of a real file this way: two strikes of one pitch less
    than a tick apart were written at one tick and read back as one note."""
    tick = tempo_microseconds(bpm) / 1e6 / ppq  # seconds per tick, as the file stores the tempo
    notes = restrikes(tick, seed=ppq)
    events = notes_to_events(notes)
    assert len(events_to_notes(events)[0]) == len(notes) == 80
    # strikes of one pitch that round to one tick: each was merged into another when read back
    shared = len(notes) - len(set(zip(notes["pitch"].tolist(),
                                      np.rint(notes["start_s"] / tick).tolist())))
    assert shared >= 20
    back = read_midi(write_midi(events, tmp_path / "x.mid", bpm=bpm, ppq=ppq)).notes
    assert len(back) == len(notes)  # before: len(notes) - shared
    a, b = by_pitch_then_start(notes), by_pitch_then_start(back)
    assert a["pitch"].tolist() == b["pitch"].tolist()
    assert a["velocity"].tolist() == b["velocity"].tolist()
    # each onset moved by at most one tick from its own tick (half a tick of rounding besides),
    # and only the strikes that shared a tick moved
    moved = np.rint(b["start_s"] / tick) - np.rint(a["start_s"] / tick)
    assert set(moved.tolist()) <= {0.0, 1.0} and moved.sum() == shared
    assert np.abs(b["start_s"] - a["start_s"]).max() <= 1.5 * tick + 1e-9
    first = np.r_[True, a["pitch"][1:] != a["pitch"][:-1]]
    assert not moved[first].any()  # only a later strike moves
    # an independent reader: mido's raw messages, strikes counted per pitch, and per pitch every
    # strike ended before the next (no note-off of one note after the next note-on)
    track = mido.MidiFile(tmp_path / "x.mid").tracks[0]
    on = {}
    for tick_, msg in absolute(track):
        if msg.type not in ("note_on", "note_off"):
            continue
        key = msg.note
        starts = msg.type == "note_on" and msg.velocity > 0
        assert on.get(key, False) != starts, (tick_, msg)  # on, off, on, off... per pitch
        on[key] = starts
    strikes = {int(p): int((notes["pitch"] == p).sum()) for p in np.unique(notes["pitch"])}
    assert {p: sum(1 for m in track if m.type == "note_on" and m.velocity > 0 and m.note == p)
            for p in strikes} == strikes
    onset_ticks = [(t, m.note) for t, m in absolute(track) if m.type == "note_on" and m.velocity]
    assert len(set(onset_ticks)) == len(onset_ticks)  # no two strikes of a pitch at one tick


def test_note_ticks_move_the_later_strike_a_tick():
    from midilstm.export import note_ticks
    # 120 bpm, 480 ppq: 960 ticks a second. Pitch 60: struck at 0 and 0.3 ms (both tick 0),
    # then three strikes within one tick at 1 s; pitch 62: off and on at one tick (kept).
    notes = np.array([(0.0, 0.0001, 60, 80), (0.0003, 0.5, 60, 81),
                      (0.5, 0.7, 62, 70), (0.7001, 0.9, 62, 71),
                      (1.0, 1.2, 60, 90), (1.0, 1.2, 60, 91), (1.0002, 1.2, 60, 92)],
                     dtype=NOTE_DTYPE)
    start, end = note_ticks(notes)
    assert start.tolist() == [0, 1, 480, 672, 960, 961, 962]
    # at least a tick long; a note sounding when its pitch is struck again ends there
    assert end.tolist() == [1, 480, 672, 864, 961, 962, 1152]
    track = events_to_midi(notes_to_events(notes)).tracks[0]
    assert len(read_midi_bytes(track).notes) == len(notes)


def read_midi_bytes(track, ppq=480):
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "x.mid")
        mido.MidiFile(type=0, ticks_per_beat=ppq, tracks=[track]).save(path)
        return read_midi(path)


@st.composite
def dense_notes(draw):
    """Any notes on a few pitches, struck close together: same instants, sub-tick gaps,
    overlaps, very short notes; as many strikes of a pitch as the stream holds."""
    rows = draw(st.lists(st.tuples(st.floats(0, 0.2), st.floats(0, 0.3), st.sampled_from([60, 61]),
                                   st.integers(1, 127)), min_size=1, max_size=30))
    notes = np.array([(t, t + d, p, v) for t, d, p, v in rows], dtype=NOTE_DTYPE)
    return notes[np.lexsort((notes["pitch"], notes["start_s"]))]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(notes=dense_notes(), ppq=st.sampled_from([24, 480]))
def test_every_strike_is_written_and_read_back(tmp_path, notes, ppq):
    events = notes_to_events(notes)
    strikes = [int(p) for p in events["pitch"][events["velocity"] > 0]]
    midi = events_to_midi(events, ppq=ppq)
    raw = [m.note for m in midi.tracks[0] if m.type == "note_on" and m.velocity > 0]
    assert sorted(raw) == sorted(strikes)  # mido's own messages: one note-on per strike
    midi.save(tmp_path / "x.mid")
    back = read_midi(tmp_path / "x.mid").notes
    assert sorted(back["pitch"].tolist()) == sorted(strikes)  # and the reader's notes
