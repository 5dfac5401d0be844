"""Build a corpus of Bach chorales as MIDI files from the music21 package, for corpus training.

What it does
    Converts every four-part chorale that music21 10.5.1 ships as MusicXML (``bach/*.mxl``,
    408 files) to a standard MIDI file in ``corpus/bach/`` (outside git: nothing here is
    committed or redistributed). Lyrics are dropped, each part gets its own MIDI channel
    (as ``make_music.py`` does), the tempo is the one written in each file (music21's default
    of quarter = 120 where there is none), repeats are written out.

    Alongside the MIDI files it writes
    * ``RIGHTS.json``: per file, its music21 corpus path, sha256 of the source and of the MIDI
      file, the rights statements embedded in the source (``<rights>`` and every credit with
      a copyright sign) and the rights of the composition; and the corpus-wide notice;
    * ``SPLIT.json``: which whole pieces are held out for validation
      (``midilstm.data.split_names``: a fixed hash of the file name, so it does not change
      when files are added).

Rights, in short: the compositions are public domain (J. S. Bach, 1685-1750). The encodings
carry "PDF (c)2004 Margaret Greentree www.jsbchorales.net"; music21's ``corpus/license.txt``
says the corpus is "distributed with the permission of the encoders" and that its works are
"licensed for use, though there may be restrictions on commercial use". No open licence
allows redistribution, so the generated files stay on your machine (``corpus/`` is not part
of the repository) and must not be published. See ``music/README.md`` (Bach chorales).

How to run (from the repository root; needs ``pip install music21==10.5.1``, which is not a
dependency of midilstm)
    .venv/bin/python music/make_corpus.py                 # -> corpus/bach/ (about a minute)
    .venv/bin/python music/make_corpus.py --out DIR --jobs 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import music21
from music21 import corpus

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from make_music import write_midi  # noqa: E402  (one MIDI writer for all bundled music)

from midilstm.data import split_names  # noqa: E402
from midilstm.files import write_json_atomic  # noqa: E402

MUSIC21_VERSION = "10.5.1"
COMPOSITION_RIGHTS = "public domain (Johann Sebastian Bach, 1685-1750)"
MAX_PARTS = 9  # channels 1-9 (make_music gives part i channel i; 10 is the drum channel)


def chorale_paths() -> list[Path]:
    """The chorales music21 ships as MusicXML, in a stable order."""
    return sorted(p for p in corpus.getComposer("bach") if p.suffix == ".mxl")


def embedded_rights(source: Path) -> list[str]:
    """The rights statements inside a .mxl: ``<rights>`` and credits with a copyright sign."""
    with zipfile.ZipFile(source) as archive:
        xml = "".join(archive.read(n).decode("utf-8", "replace") for n in archive.namelist()
                      if n.endswith(".xml") and not n.startswith("META-INF"))
    found = re.findall(r"<rights[^>]*>(.*?)</rights>", xml, flags=re.DOTALL)
    found += [c for c in re.findall(r"<credit-words[^>]*>(.*?)</credit-words>", xml,
                                    flags=re.DOTALL)
              if re.search(r"©|&#169;|\(c\)|copyright|permission", c, flags=re.IGNORECASE)]
    return [" ".join(text.split()) for text in found]


def convert(job: tuple[str, str]) -> dict:
    """One chorale to MIDI; returns its RIGHTS.json entry."""
    source, out = Path(job[0]), Path(job[1])
    corpus_root = Path(music21.__file__).resolve().parent / "corpus"
    entry = {"file": out.name, "music21_corpus_path": source.relative_to(corpus_root).as_posix(),
             "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    score = corpus.parse(source, forceSource=True)
    if len(score.parts) > MAX_PARTS:
        return {**entry, "skipped": f"{len(score.parts)} parts: one channel each would reach "
                                    f"the drum channel"}
    for n in score.recurse().notes:
        n.lyrics = []
    write_midi(score, out)  # an absolute path: make_music's writer puts it there
    return {**entry, "midi_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
            "composition": COMPOSITION_RIGHTS, "encoding": embedded_rights(source)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE.parent / "corpus" / "bach")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    if music21.__version__ != MUSIC21_VERSION:
        print(f"warning: music21 {music21.__version__}, not {MUSIC21_VERSION}: the files may "
              f"differ from the documented ones", file=sys.stderr)
    out = args.out.resolve()
    jobs = [(str(p), str(out / f"{p.stem.replace('.', '_')}.mid")) for p in chorale_paths()]
    with ProcessPoolExecutor(args.jobs) as pool:
        entries = list(pool.map(convert, jobs, chunksize=8))
    skipped = [e for e in entries if "skipped" in e]
    entries = [e for e in entries if "skipped" not in e]
    notice = (Path(music21.__file__).resolve().parent / "corpus" / "license.txt").read_text()
    write_json_atomic(out / "RIGHTS.json", {
        "source": f"music21 {music21.__version__} corpus, bach/*.mxl",
        "corpus_notice": " ".join(" ".join(line for line in notice.splitlines()
                                           if not line.startswith("#")).split()),
        "redistribution": "not allowed: no open licence for the encodings; keep local",
        "files": entries, "skipped": skipped})
    names = [e["file"] for e in entries]
    train, val = split_names(names, args.val_fraction)
    held = [names[i] for i in val]
    write_json_atomic(out / "SPLIT.json", {"val_fraction": args.val_fraction, "val": held,
                                           "train": [names[i] for i in train]})
    print(f"wrote {len(entries)} MIDI files, RIGHTS.json and SPLIT.json ({len(held)} held out) "
          f"to {out}; skipped {len(skipped)} (see RIGHTS.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
