"""The corpus cache cannot be fooled: every case of issue 18's audit, its input built here.

Each test reads real MIDI files (written with mido) through a cache that was tampered with,
then checks that every piece read is the one ``read_midi`` reads from the file itself, and
that nothing outside the cache folder was written, linked or removed."""
import hashlib
import hmac
import json
import multiprocessing
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import off, on, tempo, write_midi_file

from midilstm import cache as cache_module
from midilstm import corpus as corpus_module
from midilstm import parse, smf
from midilstm.cache import Cache, CacheError, valid_key
from midilstm.corpus import read_corpus
from midilstm.errors import MidilstmError
from midilstm.events import EVENT_DTYPE

HEAD = 4 + 1 + 1  # magic and format, kind, key length; then the key, the payload, the tag
READ_MIDI, READ_BYTES = parse.read_midi, smf.read_file_bytes  # the reference's own


def melody(pitches, bpm=120, step=240):
    messages = [tempo(bpm)]
    for p in pitches:
        messages += [on(p, 70), off(p, t=step)]
    return [messages]


@pytest.fixture
def songs(tmp_path):
    """Three distinct pieces and one file that is not MIDI."""
    root = tmp_path / "songs"
    root.mkdir()
    write_midi_file(root / "a.mid", melody([60, 62, 64, 65, 67]))
    write_midi_file(root / "b.mid", melody([72, 71, 69], bpm=80))
    write_midi_file(root / "c.mid", melody(range(40, 80, 3), step=120))
    (root / "junk.mid").write_text("not MIDI")
    return root


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def untouched(tmp_path, cache):
    """Call it at the end of a test: nothing outside ``cache`` changed since the test began, or
    since ``untouched.mark()`` (names, kinds, sizes, modification times and contents under
    tmp_path, links not followed)."""
    def snapshot():
        seen = {}
        for folder, dirs, files in os.walk(tmp_path):
            if os.path.realpath(folder).startswith(os.path.realpath(cache)):
                continue
            for name in dirs + files:
                path = os.path.join(folder, name)
                if os.path.realpath(path) == os.path.realpath(cache) and name in dirs:
                    continue
                info = os.lstat(path)
                content = (Path(path).read_bytes() if stat.S_ISREG(info.st_mode) else
                           os.readlink(path) if stat.S_ISLNK(info.st_mode) else None)
                seen[path] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns, content)
        return seen

    class Untouched:
        def mark(self):  # after a test's own setup outside the cache
            self.before = snapshot()

        def __call__(self):
            assert snapshot() == self.before

    untouched = Untouched()
    untouched.mark()
    return untouched


@pytest.fixture
def count_parses(monkeypatch):
    calls = []
    real = parse.read_midi

    def counting(path, selection=parse.Selection()):
        calls.append(os.path.basename(path))
        return real(path, selection)

    monkeypatch.setattr(parse, "read_midi", counting)
    return calls


@pytest.fixture
def count_hashes(monkeypatch):
    calls = []
    real = smf.read_file_bytes

    def counting(path, *args, **kwargs):
        calls.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(smf, "read_file_bytes", counting)
    return calls


def read(songs, cache, **kwargs):
    return read_corpus(songs, cache_dir=cache, workers=1, progress=False, **kwargs)


def reference(path):
    """``read_midi``'s events for the file, read past whatever a test counts or breaks."""
    counted = smf.read_file_bytes
    smf.read_file_bytes = READ_BYTES
    try:
        return READ_MIDI(path).events
    finally:
        smf.read_file_bytes = counted


def assert_true_pieces(corpus, songs):
    """Every piece is its own file's events, and the pieces are exactly a, b and c."""
    assert sorted(os.path.basename(n) for n in corpus.names) == ["a.mid", "b.mid", "c.mid"]
    for i, name in enumerate(corpus.names):
        np.testing.assert_array_equal(corpus.piece(i), reference(name))
    assert [os.path.basename(p) for p, _ in corpus.bad] == ["junk.mid"]
    assert corpus.duplicates == []


def key_of(path, selection=parse.Selection()):
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return f"{digest}-{corpus_module._selection_key(selection)}"


def entry_path(cache, key, suffix=".entry"):
    return cache / key[:2] / (key + suffix)


def index_path(cache):
    [path] = cache.rglob("*.stat")
    return path


def seal(kind, key, payload, secret):
    """An entry laid out as the cache lays them out, tagged with ``secret``."""
    body = (cache_module.MAGIC + cache_module.KINDS[kind] + bytes([len(key)]) + key.encode()
            + payload)
    return body + hmac.digest(secret, body, "sha256")


def real_secret(cache):
    return (cache / "secret").read_bytes()


def events_bytes(path):
    return reference(path).tobytes()


# --- the folder: ours alone, unless declared shared -------------------------------------------

def test_a_new_cache_folder_is_private_and_gets_a_private_secret(songs, tmp_path, monkeypatch,
                                                                 untouched):
    monkeypatch.setenv("MIDILSTM_CACHE", str(tmp_path / "cache"))
    assert_true_pieces(read_corpus(songs, workers=1, progress=False), songs)
    assert stat.S_IMODE(os.stat(tmp_path / "cache").st_mode) == 0o700
    secret = tmp_path / "cache" / "secret"
    assert stat.S_IMODE(secret.lstat().st_mode) == 0o600 and len(secret.read_bytes()) == 32
    for sub in (tmp_path / "cache").iterdir():
        if sub.is_dir():
            assert stat.S_IMODE(sub.stat().st_mode) == 0o700
    untouched()


@pytest.mark.parametrize("mode, who", [(0o770, "its group"), (0o757, "others"),
                                       (0o777, "group and others"), (0o1777, "group and others")])
def test_a_cache_folder_writable_by_others_is_refused_in_one_line(songs, cache, mode, who,
                                                                  untouched):
    cache.mkdir()
    os.chmod(cache, mode)
    with pytest.raises(CacheError) as caught:
        read(songs, cache)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{cache}: refused as a cache")
    assert f"writable by {who}" in message and f"chmod go-w '{cache}'" in message
    assert "MIDILSTM_CACHE" in message and "MIDILSTM_CACHE_SHARED=1" in message
    assert isinstance(caught.value, MidilstmError)
    assert list(cache.iterdir()) == []  # not even a secret was written
    untouched()


def test_a_cache_folder_owned_by_another_user_is_refused(songs, cache, monkeypatch, untouched):
    cache.mkdir(mode=0o700)
    me = os.getuid()
    monkeypatch.setattr(cache_module.os, "getuid", lambda: me + 1)  # the folder is then not ours
    with pytest.raises(CacheError, match=f"belongs to uid {me}, not to you \\(uid {me + 1}\\)"):
        read(songs, cache)
    assert list(cache.iterdir()) == []
    untouched()


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to chown")
def test_a_cache_folder_really_owned_by_another_uid_is_refused(songs, cache, untouched):
    cache.mkdir(mode=0o700)
    os.chown(cache, 65534, 65534)
    with pytest.raises(CacheError, match="belongs to uid 65534"):
        read(songs, cache)
    untouched()


def test_a_shared_cache_is_allowed_when_said_so(songs, cache, monkeypatch, count_parses,
                                                untouched):
    cache.mkdir()
    os.chmod(cache, 0o2775)  # a group's folder, as a course's shared cache would be
    with pytest.raises(CacheError):
        read(songs, cache)
    assert_true_pieces(read(songs, cache, shared=True), songs)
    assert stat.S_IMODE((cache / "secret").stat().st_mode) & 0o777 == 0o640 & ~_umask()
    count_parses.clear()
    monkeypatch.setenv("MIDILSTM_CACHE_SHARED", "1")
    assert_true_pieces(read(songs, cache), songs)  # the environment says so too
    assert count_parses == []  # and the shared entries are used
    monkeypatch.setenv("MIDILSTM_CACHE_SHARED", "0")
    with pytest.raises(CacheError):
        read(songs, cache)
    untouched()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_cache_path_that_is_a_file_or_cannot_be_made_is_one_line(songs, tmp_path, untouched):
    (tmp_path / "plain").write_text("x")
    untouched.mark()
    with pytest.raises(CacheError, match="not a folder"):
        read(songs, tmp_path / "plain")
    with pytest.raises(CacheError, match="cannot create the cache folder"):
        read(songs, tmp_path / "plain" / "cache")
    untouched()


def test_a_symlinked_or_bad_secret_is_refused(songs, cache, tmp_path, untouched):
    read(songs, cache)
    (tmp_path / "chosen").write_bytes(b"k" * 32)
    (cache / "secret").unlink()
    (cache / "secret").symlink_to(tmp_path / "chosen")  # a key the forger knows
    untouched.mark()
    with pytest.raises(CacheError, match="secret is a symbolic link"):
        read(songs, cache)
    (cache / "secret").unlink()
    (cache / "secret").write_bytes(b"short")
    with pytest.raises(CacheError, match="not a cache secret"):
        read(songs, cache)
    untouched()


# --- entries: bound to their key by a keyed checksum ------------------------------------------

def test_an_entry_linked_to_another_files_entry_gives_the_true_piece(songs, cache, tmp_path,
                                                                     count_parses, untouched):
    read(songs, cache)
    a, b = entry_path(cache, key_of(songs / "a.mid")), entry_path(cache, key_of(songs / "b.mid"))
    b_bytes = b.read_bytes()
    a.unlink()
    a.symlink_to(b)  # a's entry now "is" b's events, checksum and all
    count_parses.clear()
    corpus = read(songs, cache)
    assert_true_pieces(corpus, songs)
    assert count_parses == ["a.mid"]  # the link was refused, a read again
    assert not a.is_symlink() and b.read_bytes() == b_bytes  # replaced, and b untouched
    untouched()


def test_an_entry_linked_outside_the_cache_is_neither_read_nor_written(songs, cache, tmp_path,
                                                                       untouched):
    read(songs, cache)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    a = entry_path(cache, key_of(songs / "a.mid"))
    a.unlink()
    a.symlink_to(victim)
    untouched.mark()  # the victim is outside the cache: compared from here on
    assert_true_pieces(read(songs, cache), songs)
    assert victim.read_bytes() == b"precious" and not a.is_symlink()
    untouched()


def test_an_entry_moved_out_and_linked_back_is_refused(songs, cache, tmp_path, count_parses,
                                                      untouched):
    """The linked entry is a's own, valid in every byte: only refusing the link keeps the
    cache from reading a file outside itself (which whoever owns it could change later)."""
    read(songs, cache)
    a = entry_path(cache, key_of(songs / "a.mid"))
    outside = tmp_path / "outside.entry"
    a.rename(outside)
    a.symlink_to(outside)
    untouched.mark()
    count_parses.clear()
    assert_true_pieces(read(songs, cache), songs)
    assert count_parses == ["a.mid"] and not a.is_symlink()
    untouched()


def test_an_entry_copied_from_another_key_is_a_miss(songs, cache, count_parses, untouched):
    read(songs, cache)
    a, b = entry_path(cache, key_of(songs / "a.mid")), entry_path(cache, key_of(songs / "b.mid"))
    a.write_bytes(b.read_bytes())  # a valid entry, signed with the real secret, for b's key
    count_parses.clear()
    assert_true_pieces(read(songs, cache), songs)
    assert count_parses == ["a.mid"]
    untouched()


def test_forged_entries_with_recomputed_checksums_are_misses(songs, cache, count_parses,
                                                             untouched):
    read(songs, cache)
    key = key_of(songs / "a.mid")
    wrong = events_bytes(songs / "b.mid")
    forgeries = [
        # the old format's check: payload then its blake2b digest
        wrong + hashlib.blake2b(wrong, digest_size=16).digest(),
        # the new layout, a's own key, tagged under a secret the forger made up
        seal("events", key, wrong, os.urandom(32)),
        seal("events", key, wrong, b"\0" * 32),
    ]
    body = seal("events", key, wrong, b"")[:-32]
    forgeries.append(body + hashlib.sha256(body).digest())  # an unkeyed sha256 as the tag
    for forged in forgeries:
        entry_path(cache, key).write_bytes(forged)
        count_parses.clear()
        assert_true_pieces(read(songs, cache), songs)
        assert count_parses == ["a.mid"]
    untouched()


def test_a_forged_bad_entry_does_not_skip_a_good_file(songs, cache, count_parses, untouched):
    read(songs, cache)
    key = key_of(songs / "b.mid")
    reason = b"not a MIDI file (no 'MThd' header)"
    for forged in (seal("bad", key, reason, os.urandom(32)),
                   reason + hashlib.blake2b(reason, digest_size=16).digest()):
        entry_path(cache, key).write_bytes(forged)
        for old_name in (".bad", ".events"):  # where the old format kept them
            entry_path(cache, key, old_name).write_bytes(forged)
        count_parses.clear()
        corpus = read(songs, cache)
        assert_true_pieces(corpus, songs)
        assert str(songs / "b.mid") not in dict(corpus.bad) and count_parses == ["b.mid"]
    # the bad file's real reason, copied onto the good file's key, is refused as well
    junk = entry_path(cache, key_of(songs / "junk.mid")).read_bytes()
    entry_path(cache, key).write_bytes(junk)
    assert_true_pieces(read(songs, cache), songs)
    untouched()


def test_flipped_bits_anywhere_in_an_entry_are_misses(songs, cache, count_parses, untouched):
    read(songs, cache)
    entry = entry_path(cache, key_of(songs / "c.mid"))
    data = entry.read_bytes()
    for position in (0, 4, 5, HEAD + 3, len(data) // 2, len(data) - 1):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        entry.write_bytes(bytes(flipped))
        count_parses.clear()
        assert_true_pieces(read(songs, cache), songs)
        assert count_parses == ["c.mid"]
    entry.write_bytes(data[:-1])  # torn
    assert_true_pieces(read(songs, cache), songs)
    untouched()


def test_a_fifo_planted_as_an_entry_does_not_block(songs, cache, untouched):
    read(songs, cache)
    entry = entry_path(cache, key_of(songs / "a.mid"))
    entry.unlink()
    os.mkfifo(entry)
    assert_true_pieces(read(songs, cache), songs)
    assert stat.S_ISREG(entry.lstat().st_mode)
    untouched()


def test_a_subfolder_linked_outside_the_cache_is_not_written_through(songs, cache, tmp_path,
                                                                     count_parses, untouched):
    read(songs, cache)
    key = key_of(songs / "a.mid")
    elsewhere = tmp_path / "elsewhere"
    (cache / key[:2]).rename(elsewhere)  # its entries, valid ones, now outside the cache
    (cache / key[:2]).symlink_to(elsewhere)
    before = sorted(os.listdir(elsewhere))
    untouched.mark()
    count_parses.clear()
    assert_true_pieces(read(songs, cache), songs)
    assert "a.mid" in count_parses  # not read through the link
    assert sorted(os.listdir(elsewhere)) == before  # nor written through it
    assert (cache / key[:2]).is_dir() and not (cache / key[:2]).is_symlink()
    untouched()


def test_entries_of_the_previous_format_are_misses_not_errors(songs, cache, count_parses,
                                                              untouched):
    """A cache folder as version 3 left it: ``.events``/``.bad`` with a blake2b tail, a JSON
    ``.stat.json`` index, no secret."""
    cache.mkdir(mode=0o755)
    old_version = hashlib.sha256(
        f"3|{parse.READER_VERSION}|{parse.Selection()!r}".encode()).hexdigest()[:16]
    for name in ("a.mid", "b.mid", "c.mid"):
        key = key_of(songs / name).split("-")[0] + "-" + old_version
        payload = events_bytes(songs / "c.mid")  # every one c's events: wrong for a and b
        entry_path(cache, key, ".events").parent.mkdir(exist_ok=True)
        entry_path(cache, key, ".events").write_bytes(
            payload + hashlib.blake2b(payload, digest_size=16).digest())
    (cache / "00").mkdir(exist_ok=True)
    (cache / "00" / ("0" * 32 + ".stat.json")).write_text("{}")
    assert_true_pieces(read(songs, cache), songs)
    assert sorted(count_parses) == ["a.mid", "b.mid", "c.mid", "junk.mid"]
    untouched()


def test_keys_that_are_not_hex_of_the_right_length_name_no_file(cache, tmp_path, untouched):
    opened = Cache(cache)
    bad_keys = ["../x", "../" * 30 + "x", "/etc/passwd", "a" * 63 + "/-" + "b" * 16,
                "A" * 64 + "-" + "b" * 16, "a" * 64 + "-" + "b" * 15, "", None, 5,
                "a" * 64 + "-" + "b" * 16 + "\n"]
    for key in bad_keys:
        assert not valid_key("events", key)
        assert opened.get(key) is None
        assert opened.put(key, np.zeros(3, EVENT_DTYPE)) is False
        assert opened.read_index(key) is None and opened.write_index(key, b"{}") is False
    opened.close()
    assert sorted(p.name for p in cache.iterdir()) == ["secret"]
    untouched()


# --- the index of file statuses: a bad entry is a miss, never a traceback or a path -----------

@pytest.fixture
def settled(monkeypatch):
    """Files count as written long ago, so the index remembers them."""
    monkeypatch.setattr(corpus_module, "SETTLED_NS", 0)


def rewrite_index(cache, edit, secret=None, shared=False):
    """Replace the index's payload by ``edit(payload as an object)``, tagged with ``secret``
    (``None``: the cache's own, as a user of a shared cache, who can read it, could)."""
    path = index_path(cache)
    blob = path.read_bytes()
    key = path.name[:-len(".stat")]
    payload = json.loads(blob[HEAD + len(key):-32])
    new = edit(payload)
    data = new if isinstance(new, bytes) else json.dumps(new).encode()
    path.write_bytes(seal("index", key, data, real_secret(cache) if secret is None else secret))


@pytest.mark.parametrize("shared", [False, True])
def test_an_edited_stat_digest_does_not_drop_a_piece_as_a_duplicate(songs, cache, settled,
                                                                    count_hashes, shared,
                                                                    untouched):
    if shared:
        cache.mkdir()
        os.chmod(cache, 0o775)
    read(songs, cache, shared=shared)
    a, b = str(songs / "a.mid"), str(songs / "b.mid")

    def b_is_a(index):
        index[b][1] = index[a][1]
        return index

    # by someone without the secret: the index fails its tag, every file is hashed again
    blob = bytearray(index_path(cache).read_bytes())
    at = blob.index(b.encode())
    old = json.loads(blob[HEAD + 32:-32])[b][1].encode()
    start = blob.index(old, at)
    blob[start:start + 64] = json.loads(blob[HEAD + 32:-32])[a][1].encode()
    index_path(cache).write_bytes(bytes(blob))
    count_hashes.clear()
    assert_true_pieces(read(songs, cache, shared=shared), songs)
    assert len(count_hashes) == 4
    if shared:  # by a user of the shared cache, who can sign it: the duplicate is checked
        rewrite_index(cache, b_is_a)
        count_hashes.clear()
        assert_true_pieces(read(songs, cache, shared=True), songs)
        assert sorted(count_hashes) == ["a.mid", "b.mid"]  # only the would-be duplicates
    untouched()


@pytest.mark.parametrize("entry", [5, {}, [None, None], [None, "0" * 64], [[], ""], "x", None,
                                   [[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 5], 7], [[1.5] * 5, "0" * 64],
                                   [[True] * 5, "0" * 64], [[1, 2, 3, 4, 5], "0" * 64, 1]])
def test_a_bad_index_entry_is_a_miss_not_a_traceback(songs, cache, settled, count_hashes, entry,
                                                     untouched):
    read(songs, cache)
    a = str(songs / "a.mid")

    def spoil(index):
        index[a] = entry
        return index

    rewrite_index(cache, spoil)  # even signed with the real secret
    count_hashes.clear()
    assert_true_pieces(read(songs, cache), songs)
    assert count_hashes == ["a.mid"]
    untouched()


@pytest.mark.parametrize("payload", [b"5", b"null", b"[1, 2]", b'"x"', b"{", b"\xff\xfe",
                                     b"[" * 100_000 + b"]" * 100_000])
def test_an_index_that_is_not_a_mapping_means_hashing_every_file(songs, cache, settled,
                                                                 count_hashes, payload,
                                                                 untouched):
    read(songs, cache)
    rewrite_index(cache, lambda index: payload)
    count_hashes.clear()
    assert_true_pieces(read(songs, cache), songs)
    assert len(count_hashes) == 4
    untouched()


@pytest.mark.parametrize("digest", ["../x", "../../../x", "/tmp/x", "../" * 21 + "x",
                                    "a" * 62 + "/x", "A" * 64])
def test_a_digest_holding_a_path_writes_nothing_outside_the_cache(songs, cache, tmp_path,
                                                                  settled, count_parses, digest,
                                                                  untouched):
    read(songs, cache)
    a = str(songs / "a.mid")

    def point_outside(index):
        index[a][1] = digest
        return index

    rewrite_index(cache, point_outside)  # signed: only the digest's own check stands in the way
    count_parses.clear()
    assert_true_pieces(read(songs, cache), songs)
    for path in cache.rglob("*"):
        assert os.path.realpath(path).startswith(os.path.realpath(cache) + os.sep)
        assert ".." not in path.relative_to(cache).parts
    names = {p.name for p in cache.rglob("*")}
    assert not any("x" == n or n.startswith("x-") or "/" in n for n in names)
    blob = index_path(cache).read_bytes()  # the index forgets the digest, remembers the truth
    remembered = json.loads(blob[HEAD + 32:-32])
    assert remembered[a][1] == hashlib.sha256((songs / "a.mid").read_bytes()).hexdigest()
    untouched()


# --- one file's failure, whatever it is, is that file's one-line reason -----------------------

@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyError("k"), MemoryError(),
                                   RecursionError("deep"), OSError(5, "Input/output error"),
                                   ValueError("x" * 10_000)])
def test_any_failure_hashing_or_parsing_one_file_is_its_one_line_reason(songs, cache,
                                                                        monkeypatch, error,
                                                                        untouched):
    real_bytes, real_read = smf.read_file_bytes, parse.read_midi

    def failing_bytes(path, *args, **kwargs):
        if str(path).endswith("a.mid"):
            raise error
        return real_bytes(path, *args, **kwargs)

    def failing_read(path, selection=parse.Selection()):
        if str(path).endswith("b.mid"):
            raise error
        return real_read(path, selection)

    monkeypatch.setattr(smf, "read_file_bytes", failing_bytes)
    monkeypatch.setattr(parse, "read_midi", failing_read)
    corpus = read(songs, cache)
    bad = dict(corpus.bad)
    assert sorted(os.path.basename(n) for n in corpus.names) == ["c.mid"]
    for name in ("a.mid", "b.mid"):
        reason = bad[str(songs / name)]
        assert type(error).__name__ in reason and "\n" not in reason and len(reason) < 400
    untouched()


def test_a_cache_that_cannot_be_written_is_read_without_storing(songs, cache, monkeypatch,
                                                               count_parses, untouched):
    read(songs, cache)
    for entry in cache.rglob("*.entry"):
        entry.unlink()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module.os, "replace", full)
    count_parses.clear()
    assert_true_pieces(read(songs, cache), songs)
    assert len(count_parses) == 4 and not list(cache.rglob("*.entry"))
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]  # no leftovers
    untouched()


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork",
                    reason="the worker must inherit the patched reader")
def test_a_worker_that_dies_costs_only_its_file(songs, cache, monkeypatch, untouched):
    for i in range(6):
        write_midi_file(songs / f"more{i}.mid", melody([50 + i, 52 + i]))
    real = parse.read_midi

    def dying_on_b(path, selection=parse.Selection()):
        if str(path).endswith("b.mid"):
            os._exit(3)  # as the kernel's OOM killer would end it
        return real(path, selection)

    monkeypatch.setattr(parse, "read_midi", dying_on_b)
    monkeypatch.setattr(corpus_module, "CHUNK_FILES", 2)
    untouched.mark()
    corpus = read_corpus(songs, cache_dir=cache, workers=2, progress=False)
    bad = dict(corpus.bad)
    assert set(bad) == {str(songs / "b.mid"), str(songs / "junk.mid")}
    assert "worker process ended" in bad[str(songs / "b.mid")]
    assert len(corpus) == 8  # a, c and the six others
    for i, name in enumerate(corpus.names):
        np.testing.assert_array_equal(corpus.piece(i), real(name).events)
    untouched()
