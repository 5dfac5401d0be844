"""Reading the bytes of a file (``midilstm.smf``, through ``read_midi``): bad input refused in
one line, what the standard allows worked around, the size and note limits, damaged bytes.
Every file is built here, with mido or byte by byte.
"""
import os
import threading
import time

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


# --- hostile files (issue 18): one line each, and cost bounded per file ----------------------

NOTE_BODY = bytes([0x00, 0x90, 0x3C, 0x40, 0x10, 0x80, 0x3C, 0x00])
END = bytes([0x00, 0xFF, 0x2F, 0x00])
T16, T24 = round(16 / 960, 6), round(24 / 960, 6)  # 16 and 24 ticks at 120 bpm, 480 ppq


def _one_line_refusal(path, limits=ReadLimits(), match=None) -> str:
    with pytest.raises(MidiInputError) as err:
        read_midi(path, limits=limits)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert len(message) < len(str(path)) + 400, message  # no 4,000-digit numbers
    if match:
        assert match in message, message
    return message


def test_a_track_count_of_32768_or_more_is_read_unsigned(tmp_path):
    # mido reads the count as signed (-32768: no track at all); the reader reads it as written
    ntrks = 32768
    path = tmp_path / "many.mid"
    path.write_bytes(_header(ntrks=ntrks, type=1) + _track_chunk(NOTE_BODY + END)
                     + _track_chunk(END) * (ntrks - 1))
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, T16, 60, 64)]
    assert len(parsed.report.tracks) == ntrks and parsed.report.tracks[0]["notes"] == 1
    assert len(open_midi(path).tracks) == ntrks
    (tmp_path / "none.mid").write_bytes(_header(ntrks=40000, type=1) + _track_chunk(END) * 40000)
    _one_line_refusal(tmp_path / "none.mid", match="no note events")
    (tmp_path / "lie.mid").write_bytes(_header(ntrks=50000, type=1) + _track_chunk(NOTE_BODY))
    _one_line_refusal(tmp_path / "lie.mid", match="the header claims 50000 tracks but the file "
                                                  "holds 1")


def test_a_delta_of_2100_continuation_bytes_is_one_short_line(tmp_path):
    path = tmp_path / "long delta.mid"
    path.write_bytes(_header() + _track_chunk(b"\x81" * 2100 + b"\x00" + NOTE_BODY[1:] + END))
    _one_line_refusal(path, match="longer than the 4-byte maximum (corrupt delta time)")
    with pytest.raises(MidiInputError, match="4-byte maximum"):
        open_midi(path)


def test_deltas_padded_with_continuation_bytes_stay_cheap_and_are_read_as_mido_reads_them(
        tmp_path):
    # 0x80 bytes add nothing to a delta's value: mido accepts them, so does the reader, and a
    # megabyte of them costs a megabyte's time (mido's bignum arithmetic took minutes)
    padded = b"\x80" * 2**20 + b"\x00"
    path = tmp_path / "padded.mid"
    path.write_bytes(_header() + _track_chunk(padded + NOTE_BODY[1:] + END))
    start = time.perf_counter()
    parsed = read_midi(path)
    assert time.perf_counter() - start < 5
    assert note_list(parsed) == [(0.0, T16, 60, 64)]


def test_a_megabyte_of_long_deltas_is_refused_at_once(tmp_path):
    path = tmp_path / "deltas.mid"
    path.write_bytes(_header() + _track_chunk((b"\x81" * 2100 + b"\x00\x90\x3c\x40") * 500))
    start = time.perf_counter()
    _one_line_refusal(path, match="corrupt delta time")
    assert time.perf_counter() - start < 1


def test_too_many_messages_are_refused_before_the_rest_is_read(tmp_path):
    # 2 MB of control changes (3 bytes each with running status): reading stops at the limit
    path = tmp_path / "cc.mid"
    body = NOTE_BODY + b"\x00\xb0\x07\x40" + b"\x00\x07\x40" * 700_000 + END
    path.write_bytes(_header() + _track_chunk(body))
    start = time.perf_counter()
    message = _one_line_refusal(path, ReadLimits(max_messages=10_000), "too many messages")
    assert "the limit is 10,000" in message and "max_messages" in message
    assert time.perf_counter() - start < 1
    assert read_midi(path, limits=ReadLimits(max_messages=700_004)).report.ignored_messages == {
        "control_change": 700_001}
    # the count is over the whole file, track after track
    two = tmp_path / "two.mid"
    two.write_bytes(_header(ntrks=2, type=1) + _track_chunk(NOTE_BODY + END) * 2)
    assert len(read_midi(two, limits=ReadLimits(max_messages=6)).notes) == 1
    _one_line_refusal(two, ReadLimits(max_messages=5), "too many messages (over 5 by track 1")


def test_too_many_notes_stop_reading_at_the_track_that_passes_the_limit(tmp_path):
    path = tmp_path / "notes.mid"
    path.write_bytes(_header(ntrks=3, type=1) + _track_chunk(NOTE_BODY * 3 + END) * 3)
    _one_line_refusal(path, ReadLimits(max_notes=4), "too many notes (6 by track 1; the limit "
                                                     "is 4")
    _one_line_refusal(path, ReadLimits(max_notes=8), "too many notes (9; the limit is 8")


def test_the_default_limits_bound_the_cost_of_a_file():
    limits = ReadLimits()
    # measured in bench/README.md ("The reader against hostile files"): at these limits every
    # crafted worst case reads within about 10 s and 1 GB
    assert limits.max_bytes == 16 * 2**20
    assert limits.max_messages == 1_000_000 and limits.max_notes == 500_000


@pytest.mark.parametrize("kind, body, reason", [
    ("sysex", b"\x00\xf0\x8f\xff\xff\x7f" + b"\x01" * 50, "longer than 1,000,000 bytes"),
    ("meta", b"\x00\xff\x01\x8f\xff\xff\x7f" + b"a" * 50, "longer than 1,000,000 bytes"),
    ("sysex_past_its_track", b"\x00\xf0\x82\x00" + b"\x01" * 50, "claims 256 bytes; its track "
                                                                 "has 50 left"),
    ("meta_past_its_track", b"\x00\xff\x01\x82\x00" + b"a" * 50, "claims 256 bytes"),
    ("endless_length", b"\x00\xff\x01" + b"\xff" * 3000, "longer than 1,000,000 bytes"),
    ("high_byte_in_sysex", b"\x00\xf0\x03\x01\x90\xf7", "data byte must be in range 0..127"),
    ("running_status_without_status", b"\x00\x3c\x40", "running status without a status byte"),
    ("running_status_after_a_clock", b"\x00\xf8\x00\x3c", "clock takes no data byte"),
    ("undefined_status", b"\x00\xf4", "undefined status byte 0xf4"),
    ("short_tempo", b"\x00\xff\x51\x02\x07\xa1", "set_tempo with 2 data bytes"),
    ("short_time_signature", b"\x00\xff\x58\x02\x04\x02", "time_signature of 2 bytes"),
    ("note_past_its_track", b"\x00\x90\x3c", "ends inside message 2"),
])
def test_hostile_messages_are_refused_in_one_line(tmp_path, kind, body, reason):
    path = tmp_path / f"{kind}.mid"
    first = kind == "running_status_without_status"  # before any status byte
    path.write_bytes(_header() + _track_chunk(body + NOTE_BODY if first else NOTE_BODY + body))
    _one_line_refusal(path, match=reason)
    with pytest.raises(MidiInputError):
        open_midi(path)


def test_huge_sysex_and_meta_messages_cost_little(tmp_path):
    # 16 sysex messages and 16 texts of 999,999 bytes (mido's maximum): sliced, not decoded
    sysex = b"\x00\xf0\xbd\x84\x3f" + b"\x01" * 999_998 + b"\xf7"
    text = b"\x00\xff\x01\xbd\x84\x3f" + b"a" * 999_999
    path = tmp_path / "big.mid"
    path.write_bytes(_header() + _track_chunk(NOTE_BODY + (sysex + text) * 8 + END))
    start = time.perf_counter()
    parsed = read_midi(path)
    assert time.perf_counter() - start < 2
    assert parsed.report.ignored_messages == {"sysex": 8}


def test_running_status_tricks_read_as_mido_reads_them(tmp_path):
    # a meta keeps the running status; a sysex's running status drops the data byte (mido);
    # a meta of unknown type loses its delta time (mido); system messages set running status
    body = (b"\x00\x90\x3c\x40" b"\x00\xff\x01\x00" b"\x10\x3c\x00"  # note off by running status
            b"\x00\xf0\x01\xf7" b"\x00\x05\x01\xf7"  # a sysex, then one by running status
            b"\x00\x90\x3e\x40" b"\x20\xff\x60\x00" b"\x08\x3e\x00"  # unknown meta 0x60
            b"\x00\xf1\x10" b"\x00\x20" + END)  # quarter frame twice
    path = tmp_path / "tricks.mid"
    path.write_bytes(_header() + _track_chunk(body))
    parsed = read_midi(path)
    assert note_list(parsed) == [(0.0, T16, 60, 64), (T16, T24, 62, 64)]
    assert parsed.report.ignored_messages == {"quarter_frame": 2, "sysex": 2}
    ticks, now = [], 0
    for msg in open_midi(path).tracks[0]:
        now += msg.time
        if msg.type in ("note_on", "note_off"):
            ticks.append(now)
    assert ticks == [0, 16, 16, 24]


def test_out_of_memory_is_said_as_such(tmp_path, simple_file, monkeypatch):
    from midilstm import smf

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(smf, "_decode", no_memory)
    message = _one_line_refusal(simple_file, match="out of memory")
    assert "corrupt" not in message
    monkeypatch.undo()
    from midilstm import parse
    monkeypatch.setattr(parse, "pair_notes", no_memory)
    _one_line_refusal(simple_file, match="out of memory while reading the file")


def test_error_lines_cut_long_numbers():
    from midilstm.parse import reader_failed
    from midilstm.smf import short_text

    assert short_text("x " + "7" * 4200 + " y") == "x 777777777777...(4200 digits) y"
    assert short_text("12345 and 2**64 = 18446744073709551616") == \
        "12345 and 2**64 = 18446744073709551616"
    err = reader_failed("f.mid", ValueError("bad " + "9" * 4200))
    assert str(err).startswith("f.mid: reader failed (ValueError: bad 999999999999...(4200 "
                               "digits)); please report it")


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, 10**6), insert=st.binary(max_size=12))
def test_the_decoder_reads_what_mido_reads(tmp_path, build_midi, edits, cut, insert):
    # Damaged bytes: where the reader accepts a file, mido's own track reader (open_midi) gives
    # the same note messages at the same ticks, the same tempos and the same track names.
    from midilstm.smf import load_file, to_mido

    good = bytearray(_valid_bytes(tmp_path, build_midi))
    for position, value in edits:
        good[position % len(good)] = value
    at = cut % (len(good) + 1)
    path = tmp_path / "damaged.mid"
    path.write_bytes(bytes(good[:at]) + insert + bytes(good[at:]))
    try:
        loaded = load_file(path, ReadLimits())
    except MidiInputError:
        return
    notes, tempos = [], []
    for t, track in enumerate(to_mido(loaded).tracks):
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type in ("note_on", "note_off"):
                notes.append((tick, t, msg.channel, msg.note,
                              msg.velocity if msg.type == "note_on" else 0))
            elif msg.type == "set_tempo":
                tempos.append((tick, t, msg.tempo))
        assert track.name == loaded.midi.tracks[t].name
    scan = loaded.scan
    assert notes == list(zip(scan.note_tick.tolist(), scan.note_track.tolist(),
                             scan.note_channel.tolist(), scan.note_pitch.tolist(),
                             scan.note_velocity.tolist()))
    assert tempos == scan.tempos
