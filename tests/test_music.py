"""The bundled music: every file is listed in SHA256SUMS and checked before use."""
import hashlib
import shutil
from pathlib import Path

import pytest

from midilstm.errors import MidiInputError
from midilstm.music import CORPUS, DEFAULT_PIECE, MUSIC_DIR, bundled, default_piece, expected_hashes
from midilstm.parse import read_midi


def test_every_bundled_midi_file_is_listed_and_matches():
    hashes = expected_hashes()
    on_disk = sorted(p.relative_to(MUSIC_DIR).as_posix() for p in MUSIC_DIR.rglob("*.mid"))
    assert sorted(hashes) == on_disk
    for name, digest in hashes.items():
        assert hashlib.sha256((MUSIC_DIR / name).read_bytes()).hexdigest() == digest


def test_default_piece_is_verified_and_readable():
    assert bundled() == [MUSIC_DIR / DEFAULT_PIECE] == [default_piece()]
    parsed = read_midi(default_piece())
    assert parsed.report.kept_notes > 1000


def test_corpus_folder():
    paths = bundled(CORPUS)
    assert len(paths) >= 2
    assert paths == sorted(MUSIC_DIR / n for n in expected_hashes() if n.startswith(CORPUS + "/"))


def test_unknown_name():
    with pytest.raises(KeyError):
        bundled("no_such_piece.mid")


@pytest.fixture
def music_copy(tmp_path):
    copy = tmp_path / "music"
    shutil.copytree(MUSIC_DIR, copy, ignore=shutil.ignore_patterns("sources"))
    return copy


def test_untouched_copy_verifies(music_copy):
    assert bundled(DEFAULT_PIECE, music_dir=music_copy) == [music_copy / DEFAULT_PIECE]


def test_tampered_copy_is_refused(music_copy):
    path = music_copy / DEFAULT_PIECE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit in the middle
    path.write_bytes(bytes(data))
    with pytest.raises(MidiInputError) as err:
        bundled(DEFAULT_PIECE, music_dir=music_copy)
    assert str(err.value).startswith(str(path) + ": ") and "sha256" in str(err.value)


def test_missing_file_is_refused(music_copy):
    victim = next(n for n in expected_hashes(music_copy) if n.startswith(CORPUS + "/"))
    (music_copy / victim).unlink()
    with pytest.raises(MidiInputError, match="missing"):
        bundled(CORPUS, music_dir=music_copy)


def test_expected_hashes_accepts_sha256sum_binary_marker(tmp_path):
    (tmp_path / "SHA256SUMS").write_text("ab" * 32 + " *x.mid\n\n" + "cd" * 32 + "  d/y.mid\n")
    assert expected_hashes(Path(tmp_path)) == {"x.mid": "ab" * 32, "d/y.mid": "cd" * 32}


def test_bundled_names_are_short_in_the_checkout_and_whole_elsewhere(tmp_path, monkeypatch):
    from midilstm.music import resolve

    monkeypatch.chdir(MUSIC_DIR.parent)
    assert resolve("default") == [Path("music") / DEFAULT_PIECE]
    monkeypatch.chdir(MUSIC_DIR.parent / "notebooks")
    assert resolve("default") == [Path("..") / "music" / DEFAULT_PIECE]
    monkeypatch.chdir(tmp_path)
    assert resolve("default") == [MUSIC_DIR / DEFAULT_PIECE]  # never ../../.. climbing out


def test_a_missing_music_folder_says_so_in_one_line(tmp_path):
    with pytest.raises(MidiInputError) as err:
        expected_hashes(tmp_path)
    assert str(err.value) == f"{tmp_path / 'SHA256SUMS'}: the bundled music is missing: " \
                             "reinstall midilstm, or run from a checkout that has music/"
