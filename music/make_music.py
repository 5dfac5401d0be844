"""Export the bundled example music from the music21 corpus to MIDI.

What it does
    Parses public-domain compositions from the corpus that ships with music21
    and writes them as standard MIDI files into this ``music/`` folder:

    * ``weber_clarinet_concertino_allegro.mid`` - the default training piece:
      the closing Allegro (bars 147-241) of Weber's Clarinet Concertino, Op. 26.
      Encoding: public domain (Oliver Seely, 1998).
    * ``josquin/*.mid`` - a small corpus: eight polyphonic pieces by Josquin
      des Prez (c. 1450-1521).  Encoding: Copyright (C) 1999 Laura E. Conrad,
      GNU General Public License version 2 or later, so these MIDI files are
      under GPL-2.0-or-later too.  The script copies the unmodified ABC
      sources into ``sources/josquin/`` and the licence text into
      ``sources/josquin/COPYING`` so that the source goes with the files.

    Each MIDI file is type 1: a conductor track holding one tempo (set_tempo),
    then one track per part, each part on its own MIDI channel.  Repeats are
    written out and lyrics are dropped.  Finally ``SHA256SUMS`` is rewritten
    (it lists the MIDI files only).  See ``README.md`` for sources and rights.

How to run (from the repository root)
    python music/make_music.py

Output is deterministic: running it again gives byte-identical files with
the same music21 version (10.5.1 was used; another version may change the
bytes, and then SHA256SUMS changes too).
"""
import hashlib
import shutil
from pathlib import Path

import music21
from music21 import corpus, duration, harmony, instrument, midi, tempo

HERE = Path(__file__).resolve().parent
GPL2_TEXT = Path("/usr/share/common-licenses/GPL-2")  # fallback below if absent

# Tempo written in the Weber score (Allegro, dotted quarter = 100).
WEBER_TEMPO = tempo.MetronomeMark("Allegro", 100, referent=duration.Duration(1.5))
# The Josquin sources give no tempo; all eight get half note = 80 (quarter = 160).
JOSQUIN_TEMPO = tempo.MetronomeMark(number=80, referent=duration.Duration(2.0))

# (output file relative to music/, music21 corpus path, bar range or None, tempo)
PIECES = [
    ("weber_clarinet_concertino_allegro.mid", "weber/concertino_clarinet.mxl",
     (147, 241), WEBER_TEMPO),
]

JOSQUIN_NOTICE = ("Encoding Copyright (C) 1999 Laura E. Conrad. GNU GPL version 2 or later; "
                  "ABC source and licence in music/sources/josquin/")

# Josquin: (output file relative to music/, music21 corpus path,
#           {part index: octave shift in semitones})
# Each ABC file holds one tune (X:) per voice; music21 reads it as an Opus and
# Opus.mergeScores() joins the voices into one Score.
# The one octave fix: the Altus of "Per illud ave" is marked "K:G mix treble8"
# with "%%MIDI transpose -12" (an octave-treble clef, sounding an octave lower),
# which music21 10.5.1 reads as a plain treble clef.
JOSQUIN = [
    ("josquin/adieu_mes_amours.mid", "josquin/adieuMesAmours.abc", {}),
    ("josquin/fortuna_dun_gran_tempo.mid", "josquin/fortunaDunGranTempo.abc", {}),
    ("josquin/la_deploration_de_ockeghem.mid",
     "josquin/laDeplorationDeLaMorteDeJohannesOckeghem.abc", {}),
    ("josquin/la_plus_des_plus.mid", "josquin/laPlusDesPlus.abc", {}),
    ("josquin/mille_regrets.mid", "josquin/milleRegrets.abc", {}),
    ("josquin/o_venus_bant.mid", "josquin/oVenusBant.abc", {}),
    ("josquin/per_illud_ave.mid", "josquin/4vPerIlludAveProlatum.abc", {1: -12}),
    ("josquin/petite_camusette.mid", "josquin/petiteCamusette.abc", {}),
]


def write_midi(score, out_name, notice=None):
    mf = midi.translate.music21ObjectToMidiFile(score)
    if notice is not None:  # a copyright meta event at the start of the conductor track
        conductor = mf.tracks[0]
        event = midi.MidiEvent(conductor, type=midi.MetaEvents.COPYRIGHT_NOTICE)
        event.data = notice.encode("ascii")
        conductor.events[0:0] = [midi.DeltaTime(conductor, time=0), event]
    # music21 shares a channel between parts with the same instrument (e.g. the
    # voices of a chanson); give track i (after the conductor) channel i.
    assert len(mf.tracks) - 1 <= 9, "would reach the drum channel 10"
    for i, track in enumerate(mf.tracks[1:], start=1):
        for event in track.events:
            if event.isChannelEvent():
                event.channel = i  # music21 channels are 1-based

    out = HERE / out_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(mf.writestr())
    return out


def export(out_name, corpus_path, bars, mark):
    # forceSource: bypass music21's pickle cache; sounding pitch: the clarinet is in B-flat
    score = corpus.parse(corpus_path, forceSource=True).toSoundingPitch()
    if bars is not None:
        score = score.measures(*bars)
    # Exactly one tempo, at the start (drops the encoders' playback-only marks).
    for old in list(score.recurse().getElementsByClass(tempo.MetronomeMark)):
        old.activeSite.remove(old)
    score.parts[0].getElementsByClass("Measure").first().insert(0, mark.__deepcopy__())
    for n in score.recurse().notes:
        n.lyrics = []
    return write_midi(score, out_name)


def export_josquin(out_name, corpus_path, octave_fix):
    opus = corpus.parse(corpus_path, forceSource=True)
    # Voice names from each tune's second T: line; the first voice of some has none.
    names = [(sc.metadata.alternativeTitle or "Superius").split(" (")[0]
             for sc in opus.scores]
    score = opus.mergeScores()
    for part, name in zip(score.parts, names):
        part.partName = name
        voice = instrument.Instrument(name)  # MIDI track name; program 0
        voice.midiProgram = 0
        part.insert(0, voice)
    for index, semitones in octave_fix.items():
        score.parts[index].transpose(semitones, inPlace=True)
    # The quoted rehearsal letters ("A", "B", ...) are read as chord symbols,
    # which the MIDI export would play as chords: remove them.
    for h in list(score.recurse().getElementsByClass(harmony.Harmony)):
        h.activeSite.remove(h)
    for old in list(score.recurse().getElementsByClass(tempo.MetronomeMark)):
        old.activeSite.remove(old)
    score.parts[0].getElementsByClass("Measure").first().insert(0, JOSQUIN_TEMPO.__deepcopy__())
    for n in score.recurse().notes:
        n.lyrics = []
    return write_midi(score, out_name, notice=JOSQUIN_NOTICE)


def copy_josquin_sources():
    """GPL: ship the unmodified ABC sources and the licence with the MIDI files."""
    dest = HERE / "sources" / "josquin"
    dest.mkdir(parents=True, exist_ok=True)
    corpus_dir = Path(music21.__file__).resolve().parent / "corpus"
    for _, corpus_path, _ in JOSQUIN:
        shutil.copyfile(corpus_dir / corpus_path, dest / Path(corpus_path).name)
    if GPL2_TEXT.exists():
        shutil.copyfile(GPL2_TEXT, dest / "COPYING")
    elif not (dest / "COPYING").exists():
        raise FileNotFoundError(f"need the GPL-2 text: {GPL2_TEXT} or {dest / 'COPYING'}")


def main():
    lines = []
    jobs = [(export, (o, c, b, m)) for o, c, b, m in PIECES]
    jobs += [(export_josquin, (o, c, fix)) for o, c, fix in JOSQUIN]
    for func, args in jobs:
        out_name, corpus_path = args[0], args[1]
        out = func(*args)
        lines.append(f"{hashlib.sha256(out.read_bytes()).hexdigest()}  {out_name}\n")
        print(f"wrote {out_name}  (from {corpus_path})")
    copy_josquin_sources()
    print("copied the Josquin ABC sources and COPYING to sources/josquin/")
    (HERE / "SHA256SUMS").write_text("".join(lines))
    print("wrote SHA256SUMS")


if __name__ == "__main__":
    main()
