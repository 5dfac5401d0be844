"""Pairing note-ons with note-offs (``midilstm.pairing``, through ``read_midi``): first in first
out per (track, channel, pitch), dangling note-ons, orphan offs, the sustain pedal; and random
files against the same rules worked out by brute force on mido's playback. At 120 bpm and 480
ticks per beat, 480 ticks = a quarter = 0.5 s.
"""
import mido
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import off, on, tempo
from helpers_parse import WIDE, assert_events, note_list
from midilstm.errors import MidiInputError
from midilstm.events import events_to_notes
from midilstm.parse import Selection, read_midi


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
    track with every track's tempo changes (mido applies tempos from any track).

    Seconds are rounded to the microsecond here, once: playback sums float deltas, so one tick
    reached along two tracks' paths can differ in the last bit (1.661 against
    1.6610000000000003), and the rules below compare instants exactly (struck together,
    struck before). Every time in these files is a whole microsecond, so rounding is exact."""
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
        timed.append((round(now, 6), msg))
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
        out.append((s, min([e] + later), p, v))
    return sorted(out)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tracks=st.lists(st.lists(MESSAGES, max_size=25), min_size=1, max_size=3))
# tick 857 reached along both tracks' playback paths, after a tempo change: 1.6610000000000003
# s against 1.661 s, one instant (the reference once kept a 3e-16 s note there)
@example(tracks=[[tempo(60, t=53), on(60, 1, t=300), on(60, 1, t=300), on(60, 1, t=43),
                  on(60, 1, t=161), tempo(60, t=1)],
                 [on(60, 1, t=22), on(60, 1, t=55), on(60, 1, t=102), on(60, 1, t=127),
                  on(60, 1, t=156), on(60, 1, t=197), on(60, 1, t=198), tempo(60, t=1)]])
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


def test_notes_struck_at_one_tick_in_two_tracks_are_struck_together(tmp_path, build_midi):
    """One tick is one instant, whichever track it is reached in: seconds come from the tick
    through the tempo map, not from summing each track's deltas. Here C4 is struck at tick 857
    in both tracks (after a tempo change to 60 bpm at tick 53; 500 ticks per beat): one note,
    the longest at the loudest velocity. Summed along track 1's deltas tick 857 is
    1.6610000000000003 s, along track 2's 1.661 s; the two must not read as a restrike."""
    path = build_midi(tmp_path, ticks_per_beat=500, tracks=[
        [tempo(60, t=53), on(62, 90, t=300), off(62, t=300), on(62, 90, t=43), off(62, t=161),
         on(60, 80), off(60, t=1)],
        [on(60, 70, t=857), off(60, t=1)]])
    parsed = read_midi(path, Selection(**WIDE))
    expected = [(0.653, 1.253, 62, 90), (1.339, 1.661, 62, 90), (1.661, 1.663, 60, 80)]
    assert note_list(parsed) == expected
    assert parsed.report.fixed["merged_same_start"] == 1
    assert reference_notes(path) == expected  # the brute-force reference agrees


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


# --- pairing in linear time: the worst cases the read limits allow ------------------------------

def _old_pair_flush(ticks, velocities):
    """``pairing._pair_flush`` as it was (it rescanned every sounding note per note-off): the
    reference the linear one must agree with."""
    sounding, pairs, orphans, orphan_tick = [], [], 0, None
    for tick, velocity in zip(ticks, velocities):
        if velocity > 0:
            if tick == orphan_tick:
                pairs.append((tick, tick, velocity))
                orphans, orphan_tick = orphans - 1, None
            else:
                sounding.append((tick, velocity))
            continue
        earlier = [(start, v) for start, v in sounding if start < tick]
        if earlier:
            pairs += [(start, tick, v) for start, v in earlier]
            sounding = sounding[len(earlier):]
        elif sounding:
            start, v = sounding.pop(0)
            pairs.append((start, tick, v))
        else:
            orphans, orphan_tick = orphans + 1, tick
    return pairs, sounding, orphans


def _old_programs_at(program_changes, start, track, channel, per_track):
    """``pairing._programs_at`` as it was (every change compared with every track in type 2)."""
    import numpy as np
    program = np.zeros(len(start), np.int64)
    for ch in np.unique(channel):
        changes = [(tick, trk, prog) for tick, trk, _, c, prog in program_changes if c == ch]
        if not changes:
            continue
        ticks = np.array([c[0] for c in changes])
        progs = np.array([c[2] for c in changes])
        sel = channel == ch
        if per_track:
            for trk in np.unique(track[sel]):
                mine = np.array([c[1] == trk for c in changes])
                if mine.any():
                    s = sel & (track == trk)
                    i = np.searchsorted(ticks[mine], start[s], side="right") - 1
                    program[s] = np.where(i >= 0, progs[mine][np.maximum(i, 0)], 0)
            continue
        i = np.searchsorted(ticks, start[sel], side="right") - 1
        program[sel] = np.where(i >= 0, progs[np.maximum(i, 0)], 0)
    return program


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0, 0, 1, 64, 127])),
                      max_size=40))
def test_the_linear_flush_pairs_as_the_old_one(steps):
    from midilstm.pairing import _pair_flush
    ticks, now = [], 0
    for delta, _ in steps:
        now += delta
        ticks.append(now)
    velocities = [v for _, v in steps]
    assert _pair_flush(ticks, velocities) == _old_pair_flush(ticks, velocities)


@settings(max_examples=200, deadline=None)
@given(changes=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 5), st.integers(0, 9),
                                  st.integers(0, 2), st.integers(0, 127)), max_size=30),
       notes=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 5), st.integers(0, 2)),
                      min_size=1, max_size=30),
       per_track=st.booleans())
def test_the_grouped_programs_are_the_old_ones(changes, notes, per_track):
    import numpy as np

    from midilstm.pairing import _programs_at
    start, track, channel = (np.array(column, np.int64) for column in zip(*notes))
    changes = sorted(changes)
    assert _programs_at(changes, start, track, channel, per_track).tolist() == \
        _old_programs_at(changes, start, track, channel, per_track).tolist()


def _smf_bytes(tracks, type):
    import struct
    chunks = b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)
    return b"MThd" + struct.pack(">IHHh", 6, type, len(tracks), 480) + chunks


def _one_key_struck(n):
    """C4 struck ``n`` times at tick 0 and released ``n - 1`` times there (one dangling note-on,
    so the key is paired by the flush rule), then struck once more a beat later."""
    return b"\x00\x90\x3c\x40" * n + b"\x00\x80\x3c\x00" * (n - 1) \
        + b"\x83\x60\x90\x3c\x40\x83\x60\x80\x3c\x00\x00\xff\x2f\x00"


def _type_2_tracks(n):
    """A type 2 file of ``n`` tracks on channel 0, each a program change (``i % 128``) and a
    note: the old lookup compared each of the ``n`` changes with each of the ``n`` tracks."""
    return [bytes([0, 0xC0, i % 128, 0x00, 0x90, 0x3C + i % 7, 0x40, 0x83, 0x60, 0x80,
                   0x3C + i % 7, 0x00, 0x00, 0xFF, 0x2F, 0x00]) for i in range(n)]


def test_one_key_struck_20000_times_at_one_tick_reads_in_linear_time(tmp_path, monkeypatch):
    # The old flush rescanned every sounding note per note-off: 21k strikes took 5.4 s.
    import time

    from midilstm import pairing
    small = tmp_path / "small.mid"
    small.write_bytes(_smf_bytes([_one_key_struck(300)], type=0))
    got = read_midi(small)
    monkeypatch.setattr(pairing, "_pair_flush", _old_pair_flush)
    want = read_midi(small)
    monkeypatch.undo()
    assert got.notes.tolist() == want.notes.tolist() and got.report == want.report
    big = tmp_path / "big.mid"
    big.write_bytes(_smf_bytes([_one_key_struck(20_000)], type=0))
    began = time.perf_counter()
    parsed = read_midi(big)
    assert time.perf_counter() - began < 2.0
    assert parsed.report.fixed["keys_with_dangling_note_on"] == 1


def test_5000_tracks_of_a_type_2_file_read_in_linear_time(tmp_path, monkeypatch):
    # The old program lookup compared every program change with every track (and the
    # seconds every note with every track): 10,485 tracks took 14.3 s, 5,000 ~3 s.
    import time

    from midilstm import pairing
    small = tmp_path / "small.mid"
    small.write_bytes(_smf_bytes(_type_2_tracks(300), type=2))
    every = Selection(include_drums=True)
    selections = [every] + [Selection(programs=p, include_drums=True) for p in (0, 5, 77, 127)]
    got = [read_midi(small, selection) for selection in selections]
    monkeypatch.setattr(pairing, "_programs_at", _old_programs_at)
    want = [read_midi(small, selection) for selection in selections]
    monkeypatch.undo()
    for a, b in zip(got, want):
        assert a.notes.tolist() == b.notes.tolist() and a.report == b.report
    # each track's own change (program i % 128) selects its notes, and only them
    assert [len(parsed.notes) for parsed in got] == [300, 3, 3, 2, 2]
    big = tmp_path / "big.mid"
    big.write_bytes(_smf_bytes(_type_2_tracks(5_000), type=2))
    began = time.perf_counter()
    read_midi(big, every)
    assert time.perf_counter() - began < 2.0
