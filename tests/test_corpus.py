"""Corpus reading: parallel, cached by content, duplicates read once, bad files listed, compact
memory-mappable arrays. Every file is a real MIDI file written here with mido; each piece is
checked against ``read_midi`` of the same file, one file at a time (the reference path)."""
import os
import shutil

import numpy as np
import pytest

from conftest import off, on, tempo, write_midi_file
from midilstm import corpus as corpus_module
from midilstm import parse, smf
from midilstm.corpus import Corpus, load_corpus, read_corpus
from midilstm.data import is_held_out
from midilstm.errors import MidiInputError
from midilstm.events import EVENT_DTYPE


def melody(pitches, bpm=120, step=240):
    """One track: the pitches one after another, each ``step`` ticks long."""
    messages = [tempo(bpm)]
    for p in pitches:
        messages += [on(p, 70), off(p, t=step)]
    return [messages]


def chords(pitch_rows):
    """Two channels playing at once: a track per row."""
    return [[on(p, 60, channel=c), off(p, t=480, channel=c)] for c, p in enumerate(pitch_rows)]


@pytest.fixture
def folder(tmp_path):
    """Four distinct pieces (one in a subfolder), one byte-identical copy, a truncated file and
    a file that is not MIDI at all."""
    root = tmp_path / "songs"
    (root / "sub").mkdir(parents=True)
    write_midi_file(root / "a.mid", melody([60, 62, 64, 65, 67]))
    write_midi_file(root / "b.mid", melody([72, 71, 69], bpm=80))
    write_midi_file(root / "sub" / "c.mid", chords([48, 55]))
    write_midi_file(root / "d.midi", melody(range(40, 80, 3), step=120))
    shutil.copyfile(root / "a.mid", root / "sub" / "a_copy.mid")
    data = (root / "b.mid").read_bytes()
    (root / "broken.mid").write_bytes(data[:len(data) - 9])  # ends inside its track
    (root / "notes.mid").write_text("these are not MIDI bytes")
    return root


def pieces(corpus: Corpus) -> dict:
    return {name: corpus.piece(i) for i, name in enumerate(corpus.names)}


def entries(cache, kind=b"E"):
    """The cache's result entries holding events (``b"E"``) or a failure reason (``b"B"``)."""
    return sorted(p for p in cache.rglob("*.entry") if p.read_bytes()[4:5] == kind)


@pytest.fixture
def count_parses(monkeypatch):
    """How often ``parse.read_midi`` runs in this process (workers=1 parses in-process)."""
    calls = []
    real = parse.read_midi

    def counting(path, selection=parse.Selection()):
        calls.append(str(path))
        return real(path, selection)

    monkeypatch.setattr(parse, "read_midi", counting)
    return calls


def test_pieces_match_reading_each_file_alone(folder, tmp_path):
    corpus = read_corpus(folder, cache_dir=tmp_path / "cache", workers=1, progress=False)
    expected_names = sorted(str(p) for p in [folder / "a.mid", folder / "b.mid",
                                             folder / "sub" / "c.mid", folder / "d.midi"])
    assert sorted(corpus.names) == expected_names
    for name, events in pieces(corpus).items():
        np.testing.assert_array_equal(events, parse.read_midi(name).events)
    assert corpus.events.dtype == EVENT_DTYPE and corpus.offsets.dtype == np.int64
    assert corpus.offsets[0] == 0 and corpus.offsets[-1] == len(corpus.events)
    assert corpus.lengths().sum() == len(corpus.events)


def test_duplicates_read_once_and_bad_files_listed(folder, tmp_path, count_parses):
    corpus = read_corpus(folder, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert corpus.duplicates == [(str(folder / "sub" / "a_copy.mid"), str(folder / "a.mid"))]
    assert str(folder / "sub" / "a_copy.mid") not in count_parses
    assert len(count_parses) == 6  # 4 pieces + 2 bad files, the copy not at all
    bad = dict(corpus.bad)
    assert set(bad) == {str(folder / "broken.mid"), str(folder / "notes.mid")}
    assert "truncated" in bad[str(folder / "broken.mid")]
    assert "not a MIDI file" in bad[str(folder / "notes.mid")]
    assert corpus.stats == {"files": 7, "parsed": 6, "cached": 0, "duplicates": 1, "bad": 2,
                            "pieces": 4}


def test_warm_cache_parses_nothing_and_gives_the_same_corpus(folder, tmp_path, count_parses):
    cold = read_corpus(folder, cache_dir=tmp_path / "cache", workers=1, progress=False)
    count_parses.clear()
    warm = read_corpus(folder, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert count_parses == []
    assert warm.stats["parsed"] == 0 and warm.stats["cached"] == 6
    assert warm.names == cold.names and warm.bad == cold.bad
    np.testing.assert_array_equal(warm.events, cold.events)
    np.testing.assert_array_equal(warm.offsets, cold.offsets)


def test_cache_misses_when_content_selection_or_reader_change(folder, tmp_path, count_parses,
                                                              monkeypatch):
    cache = tmp_path / "cache"
    read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    write_midi_file(folder / "b.mid", melody([50, 52]))  # new content, same name
    count_parses.clear()
    changed = read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    assert count_parses == [str(folder / "b.mid")]
    np.testing.assert_array_equal(pieces(changed)[str(folder / "b.mid")]["pitch"],
                                  [50, 50, 52, 52])

    count_parses.clear()
    read_corpus(folder, parse.Selection(channels=(0,)), cache_dir=cache, workers=1,
                progress=False)
    assert len(count_parses) == 6

    monkeypatch.setattr(parse, "READER_VERSION", 10**6, raising=False)
    count_parses.clear()
    read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    assert len(count_parses) == 6


def test_corrupt_cache_entry_is_a_miss(folder, tmp_path, count_parses):
    cache = tmp_path / "cache"
    read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    assert len(entries(cache)) == 4 and len(entries(cache, b"B")) == 2
    for entry in entries(cache):
        entry.write_bytes(b"garbage")  # 7 bytes: not a whole number of events
    count_parses.clear()
    again = read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    assert len(count_parses) == 4  # the pieces again; the two bad files' reasons were intact
    for name, events in pieces(again).items():
        np.testing.assert_array_equal(events, parse.read_midi(name).events)


def test_a_flipped_byte_in_a_cache_entry_is_caught_by_its_checksum(folder, tmp_path, count_parses):
    cache = tmp_path / "cache"
    read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    events = entries(cache)
    data = bytearray(events[0].read_bytes())
    data[len(data) // 2] ^= 0x01  # same length, so only the checksum can tell
    events[0].write_bytes(bytes(data))
    count_parses.clear()
    again = read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    assert len(count_parses) == 1
    for name, events in pieces(again).items():
        np.testing.assert_array_equal(events, parse.read_midi(name).events)


def test_two_workers_cold_and_warm_equal_one_worker(folder, tmp_path):
    one = read_corpus(folder, cache_dir=None, workers=1, progress=False)
    corpus_module.CHUNK_FILES, chunk = 2, corpus_module.CHUNK_FILES  # several tasks, 2 procs
    try:
        cold = read_corpus(folder, cache_dir=tmp_path / "c2", workers=2, progress=False)
        warm = read_corpus(folder, cache_dir=tmp_path / "c2", workers=2, progress=False)
    finally:
        corpus_module.CHUNK_FILES = chunk
    assert cold.stats["parsed"] == 6 and warm.stats["parsed"] == 0
    for other in (cold, warm):
        assert other.names == one.names and other.bad == one.bad
        assert other.duplicates == one.duplicates
        np.testing.assert_array_equal(other.events, one.events)
        np.testing.assert_array_equal(other.offsets, one.offsets)


def test_sources_as_glob_and_list(folder, tmp_path):
    by_glob = read_corpus(str(folder / "*.mid"), cache_dir=None, workers=1, progress=False)
    assert sorted(by_glob.names) == [str(folder / "a.mid"), str(folder / "b.mid")]
    by_list = read_corpus([folder / "b.mid", folder / "sub" / "c.mid", folder / "missing.mid"],
                          cache_dir=None, workers=1, progress=False)
    assert by_list.names == [str(folder / "b.mid"), str(folder / "sub" / "c.mid")]
    assert by_list.bad[0][0] == str(folder / "missing.mid")


def test_save_and_load_memory_mapped(folder, tmp_path):
    corpus = read_corpus(folder, cache_dir=None, workers=1, progress=False)
    corpus.save(tmp_path / "saved")
    loaded = load_corpus(tmp_path / "saved")
    assert isinstance(loaded.events, np.memmap) and not loaded.events.flags.writeable
    np.testing.assert_array_equal(loaded.events, corpus.events)
    np.testing.assert_array_equal(loaded.offsets, corpus.offsets)
    assert loaded.names == corpus.names and loaded.bad == corpus.bad
    assert loaded.duplicates == corpus.duplicates
    part = loaded.subset([2, 0])
    assert part.names == [corpus.names[2], corpus.names[0]]
    np.testing.assert_array_equal(part.piece(1), corpus.piece(0))


def test_load_refuses_what_is_not_a_corpus(tmp_path):
    with pytest.raises(MidiInputError, match="not a corpus"):
        load_corpus(tmp_path)
    (tmp_path / "corpus.json").write_text("{")
    with pytest.raises(MidiInputError, match="unreadable corpus manifest"):
        load_corpus(tmp_path)


def test_held_out_by_name_only():
    names = [f"dir{i % 7}/piece_{i}.mid" for i in range(4000)]
    held = [n for n in names if is_held_out(n, 0.1)]
    assert 0.08 < len(held) / len(names) < 0.12
    assert is_held_out("x/piece_3.mid") == is_held_out("y/z/piece_3.mid")  # the folder is no part
    assert not any(is_held_out(n, 0.0) for n in names)


def test_a_reader_failure_is_listed_not_fatal_and_not_cached(folder, tmp_path, monkeypatch):
    real = parse.read_midi

    def failing_on_b(path, selection=parse.Selection()):
        if str(path).endswith("b.mid"):
            raise AssertionError("a bug in the reader")
        return real(path, selection)

    monkeypatch.setattr(parse, "read_midi", failing_on_b)
    cache = tmp_path / "cache"
    corpus = read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    assert dict(corpus.bad)[str(folder / "b.mid")] == (
        "reader failed (AssertionError: a bug in the reader); please report it")
    assert len(corpus) == 3
    monkeypatch.setattr(parse, "read_midi", real)  # the bug fixed: b.mid is read this time
    again = read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    assert again.stats["parsed"] == 1 and str(folder / "b.mid") in again.names


def test_workers_must_be_positive(folder):
    from midilstm.errors import ParameterError

    with pytest.raises(ParameterError, match="parameter workers: must be >= 1, not 0"):
        read_corpus(folder, cache_dir=None, workers=0, progress=False)


def test_a_fifo_in_the_folder_is_listed_as_bad_not_read(tmp_path):
    import os
    import threading

    root = tmp_path / "songs"
    root.mkdir()
    os.mkfifo(root / "x.mid")  # hashing it with a plain read would block forever
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(
        read_corpus(root, cache_dir=None, workers=1, progress=False)), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # it blocked: unblock it (a writer that closes gives end of file)
        with open(root / "x.mid", "wb"):
            pass
        reader.join(10)
    assert outcome and outcome[0].bad == [(str(root / "x.mid"),
                                           "not a regular file: it is a FIFO (named pipe)")]


# --- which files changed: remembered by file status, as git's index does -----------------------

@pytest.fixture
def count_hashes(monkeypatch):
    """The files whose bytes are read (to hash them; on a cold read the parser reads too)."""
    calls = []
    real = smf.read_file_bytes

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(smf, "read_file_bytes", counting)
    return calls


def test_unchanged_files_are_not_hashed_again(folder, tmp_path, count_hashes, monkeypatch):
    monkeypatch.setattr(corpus_module, "SETTLED_NS", 0)  # the files were written long ago
    cache = tmp_path / "cache"
    first = read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    count_hashes.clear()
    again = read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    assert count_hashes == []  # nothing read: not even the bad files (their reasons are cached)
    assert again.names == first.names and again.duplicates == first.duplicates
    assert again.bad == first.bad and len(again.bad) == 2
    np.testing.assert_array_equal(again.events, first.events)


def test_a_file_rewritten_with_the_same_size_and_time_is_hashed_again(folder, tmp_path,
                                                                      count_hashes, monkeypatch):
    monkeypatch.setattr(corpus_module, "SETTLED_NS", 0)
    cache = tmp_path / "cache"
    read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    target = folder / "b.mid"
    before = target.stat()
    data = target.read_bytes()
    changed = data.replace(bytes([0x90, 72]), bytes([0x90, 73])).replace(
        bytes([0x80, 72]), bytes([0x80, 73]))  # the first pitch 72 -> 73: same size
    assert changed != data and len(changed) == len(data)
    target.write_bytes(changed)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # hide it from mtime
    count_hashes.clear()
    after = read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    assert str(target) in count_hashes  # its change time moved: no tool can set that back
    assert pieces(after)[str(target)]["pitch"][0] == 73


def test_files_changed_just_before_hashing_are_hashed_again(folder, tmp_path, count_hashes):
    cache = tmp_path / "cache"
    read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    count_hashes.clear()
    read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    assert len(count_hashes) == 7  # written moments ago: a coarse clock could hide a 2nd write
    # (all 7 are hashes: every piece came from the cache)


def test_a_damaged_index_means_hashing_every_file(folder, tmp_path, count_hashes, monkeypatch):
    monkeypatch.setattr(corpus_module, "SETTLED_NS", 0)
    cache = tmp_path / "cache"
    first = read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    indexes = list(cache.rglob("*.stat"))
    assert len(indexes) == 1
    indexes[0].write_bytes(b"{not json")
    count_hashes.clear()
    again = read_corpus(folder, cache_dir=cache, workers=1, progress=False)
    assert len(count_hashes) == 7
    np.testing.assert_array_equal(again.events, first.events)


# --- fast=True: the fast reader first (symusic, numba), the same corpus byte for byte -----------

def _saved(corpus, folder) -> dict:
    corpus.save(folder)
    return {name: (folder / name).read_bytes() for name in ("events.npy", "offsets.npy")}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_fast_read_is_the_mido_read_byte_for_byte(folder, tmp_path, monkeypatch, workers):
    pytest.importorskip("symusic")
    pytest.importorskip("numba")
    monkeypatch.setattr(corpus_module, "CHUNK_FILES", 2)  # 2 workers: several tasks, a pool
    mido = read_corpus(folder, cache_dir=None, workers=workers, progress=False)
    fast = read_corpus(folder, cache_dir=tmp_path / "cache", workers=workers, progress=False,
                       fast=True)
    assert _saved(fast, tmp_path / "fast") == _saved(mido, tmp_path / "mido")
    assert (fast.names, fast.bad, fast.duplicates) == (mido.names, mido.bad, mido.duplicates)
    assert "read_fast" not in mido.stats  # the default: stats as before
    read_fast = fast.stats.pop("read_fast")
    assert fast.stats == mido.stats
    assert read_fast == 4  # the four pieces; the two bad files fell back to read_midi
    # the same cache entries: a mido read from the fast read's cache parses nothing
    warm = read_corpus(folder, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert warm.stats["parsed"] == 0 and warm.stats["cached"] == 6
    assert _saved(warm, tmp_path / "warm") == _saved(mido, tmp_path / "mido")


def test_fast_reads_each_file_read_fast_without_mido(folder, tmp_path, count_parses):
    pytest.importorskip("symusic")
    pytest.importorskip("numba")
    corpus = read_corpus(folder, cache_dir=None, workers=1, progress=False, fast=True)
    assert corpus.stats["read_fast"] == 4
    assert sorted(count_parses) == [str(folder / "broken.mid"), str(folder / "notes.mid")]


def test_fast_without_the_fast_reader_says_so_once_and_reads_with_mido(folder, tmp_path,
                                                                       monkeypatch):
    from midilstm import fast_reader

    monkeypatch.setattr(fast_reader, "symusic_available", lambda: False)
    monkeypatch.setattr(fast_reader, "read_midi_fast",
                        lambda *a, **k: pytest.fail("read fast without its reader"))
    mido = read_corpus(folder, cache_dir=None, workers=1, progress=False)
    with pytest.warns(RuntimeWarning, match="pip install symusic") as said:
        fast = read_corpus(folder, cache_dir=None, workers=1, progress=False, fast=True)
    assert len(said) == 1 and fast.stats == {**mido.stats, "read_fast": 0}
    assert fast.events.tobytes() == mido.events.tobytes()
