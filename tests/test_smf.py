"""Reading the bytes of a file (``midilstm.smf``, through ``read_midi``): bad input refused in
one line, what the standard allows worked around, the size and note limits, damaged bytes.
Every file is built here, with mido or byte by byte.
"""
import os
import threading

import mido
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import header_only, off, on, tempo
from helpers_parse import note_list
from midilstm.errors import MidiInputError
from midilstm.events import events_to_notes
from midilstm.parse import open_midi, read_midi, read_midi_files
from midilstm.smf import ReadLimits


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


def riff_wrapped(data: bytes) -> bytes:
    """A standard MIDI file inside a RIFF 'RMID' container, as some Windows tools save it."""
    return (b"RIFF" + (len(data) + 12).to_bytes(4, "little") + b"RMIDdata"
            + len(data).to_bytes(4, "little") + data)


def test_riff_wrapped_midi_is_read(tmp_path, simple_file):
    path = tmp_path / "wrapped.rmi"
    path.write_bytes(riff_wrapped(simple_file.read_bytes()))
    assert note_list(read_midi(path)) == [(0.0, 0.5, 60, 80), (0.5, 1.0, 64, 90)]


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
