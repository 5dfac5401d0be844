"""The fast reader (``midilstm.fast_reader``) against ``read_midi``, file by file, exactly.

For every file and selection: either ``read_midi_fast`` returns ``None`` (the caller reads the
file with ``read_midi``) or its events and notes are ``np.array_equal`` to ``read_midi``'s, and
``read_midi`` does not refuse the file. Files: every real file the project has (``music/``,
and the Bach corpus when ``corpus/bach`` has been built), crafted files for each rule
(overlaps, note-on velocity 0, the pedal, tempo changes, tracks, channels, drums, programs,
grace notes, notes never ended, type 0 and 2, SMPTE) and for what the readers take differently
(which must fall back), and random files.
"""
import struct
from pathlib import Path

import mido
import numpy as np
import pytest
from conftest import off, on, program, tempo, write_midi_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midilstm import fast_reader
from midilstm.errors import MidiInputError
from midilstm.fast_reader import read_midi_fast
from midilstm.parse import Selection, read_midi
from midilstm.smf import ReadLimits

pytest.importorskip("symusic")
if not fast_reader.symusic_available():
    pytest.skip("the fast path needs symusic and numba", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
MUSIC = sorted(ROOT.glob("music/**/*.mid"))
BACH = sorted((ROOT / "corpus" / "bach").glob("*.mid"))
SELECTIONS = {
    "default": Selection(),
    "everything": Selection(include_drums=True, pitch_low=0, pitch_high=127),
    "channel 0": Selection(channels=(0,)),
    "channels 1, 9": Selection(channels=(1, 9)),
    "tracks 1, 2": Selection(tracks=(1, 2)),
    "program 0": Selection(programs=(0,)),
    "programs 40, 41": Selection(programs=(40, 41), include_drums=True),
    "pedal": Selection(sustain_pedal=True, include_drums=True),
    "drop 55..70": Selection(out_of_range="drop", pitch_low=55, pitch_high=70),
    "fold 60..71": Selection(pitch_low=60, pitch_high=71),
}


def compare(path, selection, limits=None):
    """``"fast"`` (read fast, equal to read_midi) or ``"fell back"``; fails on any difference."""
    limits = limits or ReadLimits()
    fast = read_midi_fast(path, selection, limits=limits)
    try:
        slow = read_midi(path, selection, limits=limits)
    except MidiInputError as err:
        assert fast is None, f"read_midi refuses {path} ({err}), the fast reader read it"
        return "fell back"
    if fast is None:
        return "fell back"
    assert np.array_equal(fast.events, slow.events), f"{path}: events differ"
    assert np.array_equal(fast.notes, slow.notes), f"{path}: notes differ"
    assert fast.events.dtype == slow.events.dtype and fast.notes.dtype == slow.notes.dtype
    return "fast"


# --- the real files ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SELECTIONS))
@pytest.mark.parametrize("path", MUSIC, ids=[p.name for p in MUSIC])
def test_bundled_music_is_read_fast_and_exactly(path, name):
    outcome = compare(path, SELECTIONS[name])
    if name in ("default", "everything", "pedal", "drop 55..70", "fold 60..71"):
        assert outcome == "fast"  # the bundled music holds nothing the fast path must refuse


@pytest.mark.skipif(not BACH, reason="corpus/bach is not built (music/make_corpus.py)")
@pytest.mark.parametrize("name", ["default", "everything", "channel 0", "program 0", "pedal"])
def test_the_bach_corpus_is_read_fast_and_exactly(name):
    outcomes = [compare(path, SELECTIONS[name]) for path in BACH]
    assert outcomes.count("fast") >= 0.95 * len(BACH)


# --- crafted files: each rule -----------------------------------------------------------------

def cc(control, value, t=0, channel=0):
    return mido.Message("control_change", control=control, value=value, time=t, channel=channel)


CRAFTED = {
    "overlapping one pitch in a track": [[tempo(120), on(60, 80), on(60, 90, t=240),
                                          off(60, t=240), off(60, t=240), on(60, 70, t=10),
                                          on(60, 71), off(60, t=100), off(60)]],
    "one pitch overlapping across tracks": [[tempo(100)], [on(64, 50), off(64, t=960)],
                                            [on(64, 90, t=480), off(64, t=960)]],
    "note_on velocity 0": [[on(60, 80), off(60, t=480, explicit=False), on(62, 81),
                            off(62, t=480, explicit=False)]],
    "pedal": [[cc(64, 127), on(60, 80), off(60, t=100), on(62, 80, t=100), off(62, t=100),
               on(60, 70, t=100), cc(64, 0, t=300), off(60, t=10), cc(64, 100, t=10),
               on(67, 60), off(67, t=50), cc(64, 20, t=500)]],
    "pedal in another track": [[cc(64, 127, t=0), cc(64, 0, t=2000)],
                               [on(60, 80), off(60, t=100), on(64, 80, t=3000),
                                off(64, t=100)]],
    "tempo changes in several tracks": [[tempo(120), tempo(60, t=960), tempo(150, t=960)],
                                        [tempo(80, t=500), on(60, 80, t=100), off(60, t=2000),
                                         on(61, 80), off(61, t=777)]],
    "two tempos at one tick": [[tempo(120), tempo(60, t=480), tempo(150)],
                               [on(60, 80), off(60, t=960), on(62, 80), off(62, t=960)]],
    "tracks sharing a channel, drums": [
        [tempo(120)], [program(40), on(60, 90), off(60, t=960), on(64, 80), off(64, t=480)],
        [on(60, 70, t=240), off(60, t=240), on(67, 50), on(67, 55, t=120), off(67, t=120),
         off(67, t=240)],
        [on(42, 100, channel=9), off(42, t=120, channel=9), on(36, 90, t=360, channel=9),
         off(36, t=120, channel=9)]],
    "channels in one track (type 0 style)": [[
        tempo(96), program(20, channel=1), on(60, 80), on(48, 70, channel=1),
        on(42, 99, channel=9), off(42, t=100, channel=9), off(60, t=300),
        off(48, t=100, channel=1), on(72, 60, channel=3), off(72, t=500, channel=3)]],
    "program changes within a track": [[
        program(40), on(60, 80), off(60, t=480), program(41), on(62, 80), off(62, t=480),
        on(64, 80), program(40), off(64, t=480), on(65, 80), off(65, t=480),
        on(67, 80, channel=2), program(5, channel=2), off(67, t=100, channel=2)]],
    "program set in a conductor track": [[program(41, t=480), program(43, channel=1)],
                                         [on(60, 80), off(60, t=960), on(62, 80),
                                          off(62, t=960)],
                                         [on(50, 80, channel=1), off(50, t=960, channel=1)]],
    "program change at a note's tick, after it": [[on(60, 80), program(30), off(60, t=480),
                                                   on(62, 80), off(62, t=480)]],
    "grace note (off, then on, at one tick)": [[
        tempo(120), on(60, 80), off(60, t=480), off(60, t=480), on(60, 30), on(60, 81, t=480),
        off(60, t=480), on(60, 82, t=480), off(60, t=480), on(62, 70), off(62, t=240)]],
    "a note never ended": [[on(60, 80), on(64, 70, t=100), off(64, t=100), on(60, 90, t=50),
                            off(60, t=100)], [on(50, 60, t=10), off(50, t=20), on(52, 60)]],
    "orphan note-offs": [[off(60, t=10), on(60, 80, t=10), off(60, t=100), off(60),
                          off(61, t=5)]],
    "zero-length notes": [[on(60, 80), off(60), on(62, 80, t=10), off(62, t=100)]],
    "notes out of every range": [[on(5, 80), off(5, t=100), on(126, 80), off(126, t=100),
                                  on(60, 80), off(60, t=100)]],
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_files_are_read_fast_and_exactly(tmp_path, name):
    path = write_midi_file(tmp_path / "crafted.mid", CRAFTED[name],
                           type=0 if len(CRAFTED[name]) == 1 else 1)
    outcomes = {label: compare(path, selection) for label, selection in SELECTIONS.items()}
    assert outcomes["everything"] == "fast"
    assert outcomes["pedal"] == "fast"
    if name != "two tempos at one tick":
        assert set(outcomes.values()) <= {"fast", "fell back"}


def test_type_2_and_smpte_are_read_fast(tmp_path):
    tracks = [[tempo(120), on(60, 80), off(60, t=480)], [tempo(60), on(62, 80), off(62, t=480)]]
    path = write_midi_file(tmp_path / "type2.mid", tracks, type=2)
    assert compare(path, SELECTIONS["everything"]) == "fast"
    smpte = write_midi_file(tmp_path / "smpte.mid", tracks, type=1, ticks_per_beat=480)
    data = bytearray(smpte.read_bytes())
    data[12:14] = struct.pack(">bB", -25, 40)  # 25 fps x 40 ticks per frame
    smpte.write_bytes(bytes(data))
    assert compare(smpte, SELECTIONS["everything"]) == "fast"


# --- crafted files: what the readers take differently falls back ------------------------------

def track_chunk(body: bytes) -> bytes:
    return b"MTrk" + struct.pack(">I", len(body)) + body


def raw_file(path, *bodies, type=1, tpb=480) -> Path:
    header = b"MThd" + struct.pack(">IHHH", 6, type, len(bodies), tpb)
    path.write_bytes(header + b"".join(track_chunk(b) for b in bodies))
    return path


NOTES = b"\x00\x90\x3c\x50\x83\x60\x80\x3c\x00"  # C4 for 480 ticks
EOT = b"\x00\xff\x2f\x00"
ODD = {
    "messages after an end of track": NOTES + EOT + b"\x00\x90\x40\x50\x10\x80\x40\x00" + EOT,
    "a meta type mido does not know": NOTES + b"\x83\x60\xff\x60\x01\x00" + NOTES + EOT,
    "a system message": NOTES + b"\x00\xf8" + NOTES + EOT,
    "running status after sysex": NOTES + b"\x00\xf0\x02\x01\xf7\x00\x01" + NOTES + EOT,
    "a data byte over 127": b"\x00\x90\x3c\xd0\x10\x80\x3c\x00" + EOT,
    "truncated message": NOTES + b"\x00\x90\x3c",
    "tempo of 2 bytes": b"\x00\xff\x51\x02\x07\xa1" + NOTES + EOT,
    "tempo 0": b"\x00\xff\x51\x03\x00\x00\x00" + NOTES + EOT,
    "a smpte offset": b"\x00\xff\x54\x05\x60\x00\x00\x00\x00" + NOTES + EOT,
    "time signature of 2 bytes": b"\x00\xff\x58\x02\x04\x02" + NOTES + EOT,
    "only drums": b"\x00\x99\x24\x50\x10\x89\x24\x00" + EOT,
}


@pytest.mark.parametrize("name", list(ODD))
def test_what_the_readers_take_differently_falls_back(tmp_path, name):
    path = raw_file(tmp_path / "odd.mid", ODD[name])
    assert read_midi_fast(path) is None
    assert compare(path, Selection()) == "fell back"


def test_fine_bytes_around_the_odd_ones_are_read_fast(tmp_path):
    sysex = b"\x00\xf0\x03\x7e\x01\xf7"
    named = b"\x00\xff\x03\x04Alto\x00\xff\x58\x04\x04\x02\x18\x08\x00\xff\x59\x02\xfe\x00"
    path = raw_file(tmp_path / "fine.mid", named + sysex + NOTES + b"\x00\x3e\x40\x10\x3e\x00"
                    + EOT)  # running status after a note-off: a note-on, then its off
    assert compare(path, SELECTIONS["everything"]) == "fast"
    riff = tmp_path / "riff.rmi"
    smf = path.read_bytes()
    riff.write_bytes(b"RIFF" + struct.pack("<I", len(smf) + 12) + b"RMIDdata"
                     + struct.pack("<I", len(smf)) + smf)
    assert compare(riff, SELECTIONS["everything"]) == "fast"
    junk = tmp_path / "chunks.mid"  # an unknown chunk and padding at the end: skipped, as here
    junk.write_bytes(smf[:14] + b"XFIH" + struct.pack(">I", 3) + b"abc" + smf[14:] + b"\x00" * 7)
    assert compare(junk, SELECTIONS["everything"]) == "fast"


def test_limits_are_read_midi_s_to_refuse(tmp_path):
    path = raw_file(tmp_path / "limits.mid", NOTES * 5 + EOT)
    assert compare(path, Selection(), ReadLimits(max_notes=4)) == "fell back"
    assert compare(path, Selection(), ReadLimits(max_messages=10)) == "fell back"
    assert compare(path, Selection(), ReadLimits(max_bytes=20)) == "fell back"
    assert compare(path, Selection(), ReadLimits(max_notes=5, max_messages=11)) == "fast"


def test_without_symusic_it_always_falls_back(monkeypatch, simple_file):
    monkeypatch.setattr(fast_reader, "_symusic_module", False)
    assert read_midi_fast(simple_file) is None
    assert read_midi_fast(simple_file, why=True) == (None, "no_symusic")
    assert not fast_reader.symusic_available()


def test_why_names_the_reason(tmp_path, simple_file):
    assert read_midi_fast(simple_file, why=True)[1] is None
    path = raw_file(tmp_path / "odd.mid", ODD["a system message"])
    assert read_midi_fast(path, why=True) == (None, fast_reader.ODD)
    assert read_midi_fast(tmp_path / "missing.mid", why=True) == (None, fast_reader.CORRUPT)


# --- random files -----------------------------------------------------------------------------

def random_file(path, tracks, type, tempos, pedal_track):
    """Tracks of notes (start, length, channel, pitch, velocity, program) in ticks, each note
    preceded by its program change; tempo changes and pedal changes in track 0."""
    built = [[tempo(bpm, t=gap) for gap, bpm in tempos]]
    if pedal_track:
        now = 0
        for tick, value in sorted(pedal_track):
            built[0].append(cc(64, value, t=tick - now, channel=0))
            now = tick
    for notes in tracks:
        messages = sorted([(s, 2, ch, p, v, prog) for s, _, ch, p, v, prog in notes]
                          + [(s, 1, ch, 0, 0, prog) for s, _, ch, _, _, prog in notes]
                          + [(s + n, 0, ch, p, 0, 0) for s, n, ch, p, _, _ in notes])
        now, track = 0, []
        for tick, kind, channel, pitch, velocity, prog in messages:
            message = (on(pitch, velocity, channel=channel) if kind == 2 else
                       program(prog, channel=channel) if kind == 1 else
                       off(pitch, channel=channel, explicit=pitch % 2 == 0))
            track.append(message.copy(time=tick - now))
            now = tick
        built.append(track)
    if type == 0:
        built = [list(mido.merge_tracks([mido.MidiTrack(t) for t in built]))]
    return write_midi_file(path, built, type=type, ticks_per_beat=240)


NOTE = st.tuples(st.integers(0, 1500), st.integers(0, 400), st.sampled_from([0, 1, 9]),
                 st.sampled_from([59, 60, 62, 64, 100]), st.integers(1, 127),
                 st.sampled_from([0, 0, 40]))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tracks=st.lists(st.lists(NOTE, min_size=1, max_size=10), min_size=1, max_size=4),
       type=st.sampled_from([0, 1, 1, 2]),
       tempos=st.lists(st.tuples(st.integers(0, 900), st.sampled_from([60, 80, 120, 150])),
                       max_size=3),
       pedal=st.lists(st.tuples(st.integers(0, 1500), st.sampled_from([0, 127])), max_size=4),
       dangle=st.booleans())
def test_random_files_are_read_fast_and_exactly(tmp_path, tracks, type, tempos, pedal, dangle):
    path = random_file(tmp_path / "random.mid", tracks, type, tempos, pedal)
    if dangle:  # cut the last note-off of the file: a note-on never ended
        midi = mido.MidiFile(path)
        last = [m for m in midi.tracks[-1] if m.type in ("note_on", "note_off")][-1]
        if last.type == "note_off" or last.velocity == 0:
            midi.tracks[-1].remove(last)
            midi.save(path)
    outcomes = [compare(path, selection) for selection in SELECTIONS.values()]
    if compare(path, SELECTIONS["everything"]) == "fell back":
        with pytest.raises(MidiInputError):  # only where read_midi refuses it (no notes)
            read_midi(path, SELECTIONS["everything"])
    assert set(outcomes) <= {"fast", "fell back"}


# --- how the fast path is built: what must hold for it to stay fast ---------------------------

def test_a_file_past_the_quicksort_size_is_read_exactly(tmp_path):
    """Above ``QUICKSORT_MAX`` notes the compiled rules sort with mergesort: the same notes."""
    from midilstm.fast_rules import QUICKSORT_MAX

    rng = np.random.default_rng(7)
    tracks = [[tempo(120)]]
    for channel in range(3):
        messages, tick = [], 0
        for _ in range(QUICKSORT_MAX // 2 + 200):  # struck again, at once, overlapping
            pitch = int(rng.integers(40, 80))
            gap, length = int(rng.choice([0, 0, 30, 120])), int(rng.choice([10, 60, 480]))
            messages += [(tick + gap, 1, pitch, int(rng.integers(1, 128))),
                         (tick + gap + length, 0, pitch, 0)]
            tick += gap
        messages.sort(key=lambda m: (m[0], m[1]))
        track, last = [], 0
        for at, is_on, pitch, velocity in messages:
            track.append(on(pitch, velocity, t=at - last, channel=channel) if is_on
                         else off(pitch, t=at - last, channel=channel))
            last = at
        tracks.append(track)
    path = write_midi_file(tmp_path / "many.mid", tracks)
    assert len(read_midi(path).notes) > QUICKSORT_MAX
    for name in ("default", "everything", "channel 0", "fold 60..71"):
        assert compare(path, SELECTIONS[name]) == "fast"


def test_symusic_notes_from_its_state_are_those_of_numpy(monkeypatch):
    """The notes are read from symusic's note lists' state where its layout was checked; the
    way through ``numpy()`` (for another symusic) gives the same events."""
    from midilstm import fast_tracks

    assert fast_tracks.state_layout_ok()  # the installed symusic: else every read is slower
    monkeypatch.setattr(fast_tracks, "state_layout_ok", lambda: False)
    for path in MUSIC:
        assert compare(path, SELECTIONS["everything"]) == "fast"


def test_the_compiled_kernels_are_loaded_from_numbas_cache():
    """numba's cache keys a function by the pickle of its closure's cells, which differs in
    every process: a kernel with a closure is compiled again (4-17 s) in every process."""
    from midilstm import fast_rules, fast_scan

    read_midi_fast(MUSIC[0])
    kernels = [fast_rules._load_rules(), fast_scan._nb_scan, fast_scan._nb_grow]
    kernels += [getattr(fast_rules, name) for name in dir(fast_rules) if name.startswith("_nb_")]
    assert len(kernels) == 9
    for kernel in kernels:
        assert kernel.py_func.__closure__ is None, kernel
