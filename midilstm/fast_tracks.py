"""The fast reader's notes (``midilstm.fast_reader``): symusic's tracks matched to the scan.

``symusic_notes`` checks that symusic's tracks are the keys the scan (``fast_scan``) found, one
for one, and gives their notes, in ticks, as one array of ``NOTE_LAYOUT`` (the way symusic
stores a note) with each note's MIDI track and channel; the keys with a note-on never ended
get ``pairing``'s own notes (``_pair_flush``), not symusic's. ``columns_of`` turns them into
``pairing.pair_notes``'s columns for the numpy steps; the compiled rules read them as they are.

The notes are read from each note list's pickled state (``__getstate__``: a 4-byte count,
then the notes as symusic stores them, 12 bytes each), joined into one buffer for one
``np.frombuffer``. symusic's ``numpy()`` costs 5-15 us a track and concatenating structured
arrays about as much; the states cost under 0.5 us. The layout is symusic's, not a documented
format, so it is checked once per process against ``numpy()`` on a crafted file
(``state_layout_ok``), and each state's size and count against the track's note count; where
either fails, ``numpy()`` gives the notes.
"""
from __future__ import annotations

import functools
import struct
from itertools import chain

import numpy as np

from .pairing import _pair_flush

# one note as symusic stores it (and as its note list's state holds it, after a 4-byte count)
NOTE_LAYOUT = np.dtype({"names": ["time", "duration", "pitch", "velocity"],
                        "formats": ["<i4", "<i4", "i1", "i1"], "offsets": [0, 4, 8, 9],
                        "itemsize": 12})


def symusic_notes(score, keys: np.ndarray, dangling: np.ndarray, end_ticks: np.ndarray):
    """``(notes, track, channel)``: symusic's notes (``NOTE_LAYOUT``, read-only) and each
    note's MIDI track and channel (int64), or ``None`` if its tracks do not match the keys of
    the scan one for one (MIDI track, channel, program, note count).

    symusic pairs first in first out and drops the note-ons left unended; ``pairing`` pairs a
    key with such a note-on its other way (``_pair_flush``) and closes what is left at the end
    of the track. So those keys' notes are ``pairing``'s, from their messages (``dangling``),
    and symusic's count for their tracks is less the note-ons it dropped."""
    wanted, replaced_keys, replaced = keys.tolist(), [], []
    if len(dangling):
        wanted, replaced_keys, replaced = _replace_dangling(keys, dangling, end_ticks)
    # a few Python calls per track (small lists: a track's count, program and drum flag)
    found = [(n, t.program, t.is_drum, t) for t in score.tracks if (n := t.note_num()) > 0]
    if [f[:3] for f in found] != [(n, p, c == 9) for _, c, p, n in wanted]:
        return None
    notes = _notes_of([f[3] for f in found], [f[0] for f in found])
    owners = np.array(wanted, np.int64).reshape(-1, 4)
    track = np.repeat(owners[:, 0], owners[:, 3])
    channel = np.repeat(owners[:, 1], owners[:, 3])
    if replaced_keys:
        notes, track, channel = _with_pairs(notes, track, channel, replaced_keys, replaced)
    return notes, track, channel


def columns_of(notes: np.ndarray, track: np.ndarray, channel: np.ndarray) -> dict:
    """``pairing.pair_notes``'s columns (int64, ticks) of ``symusic_notes``'s result."""
    start = notes["time"].astype(np.int64)
    return {"start": start, "end": start + notes["duration"], "track": track,
            "channel": channel, "pitch": notes["pitch"].astype(np.int64),
            "velocity": notes["velocity"].astype(np.int64)}


def as_words(notes: np.ndarray) -> np.ndarray:
    """``NOTE_LAYOUT`` notes as an (n, 3) array of little-endian int32 (time, duration, then
    pitch and velocity in the low two bytes of the third), the same memory."""
    return notes.view("<i4").reshape(-1, 3)


def _notes_of(tracks: list, counts: list) -> np.ndarray:
    """The notes of symusic ``tracks`` (``counts`` of them) back to back, as ``NOTE_LAYOUT``,
    read-only (as ``np.frombuffer`` gives them, so the compiled rules see one type)."""
    if state_layout_ok():
        states = [t.notes.__getstate__() for t in tracks]
        if all(len(s) == 4 + 12 * n and int.from_bytes(s[:4], "little") == n
               for s, n in zip(states, counts)):
            return np.frombuffer(b"".join([memoryview(s)[4:] for s in states]), NOTE_LAYOUT)
    notes = np.zeros(sum(counts), NOTE_LAYOUT)
    for name in NOTE_LAYOUT.names:
        notes[name] = np.concatenate([t.notes.numpy()[name] for t in tracks] or [[]])
    notes.flags.writeable = False
    return notes


def _with_pairs(notes, track, channel, replaced_keys: list, extra: np.ndarray):
    """symusic's notes less those of ``replaced_keys``, and ``pairing``'s (``extra``: (start,
    end, track, channel, pitch, velocity) rows)."""
    # joined as int32 words (``as_words``): indexing the structured array is several times
    # slower, and concatenating it would pack the dtype (10 bytes a note, not symusic's 12)
    wanted = np.sort(np.array(replaced_keys, np.int64))
    key = (track * 16 + channel) * 128 + notes["pitch"]
    keep = wanted[np.minimum(np.searchsorted(wanted, key), len(wanted) - 1)] != key
    kept = as_words(notes)[keep]
    words = np.zeros((len(kept) + len(extra), 3), "<i4")  # the values fit: ticks < 2**31,
    words[:len(kept)] = kept  # pitches and velocities < 128
    added = words[len(kept):]
    added[:, 0], added[:, 1] = extra[:, 0], extra[:, 1] - extra[:, 0]
    added[:, 2] = extra[:, 4] | (extra[:, 5] << 8)  # pitch, then velocity, little-endian
    joined = words.reshape(-1).view(NOTE_LAYOUT)
    joined.flags.writeable = False
    return (joined, np.concatenate([track[keep], extra[:, 2]]),
            np.concatenate([channel[keep], extra[:, 3]]))


@functools.cache
def state_layout_ok() -> bool:
    """Whether symusic's note lists hold their notes in their state as ``NOTE_LAYOUT`` after a
    4-byte count: checked against ``numpy()`` on a crafted file whose notes differ in every
    field (ticks past 16 bits)."""
    try:
        import symusic

        for track in symusic.Score.from_midi(_probe_file()).tracks:
            n, state = track.note_num(), track.notes.__getstate__()
            if n != 2 or len(state) != 4 + 12 * n or int.from_bytes(state[:4], "little") != n:
                return False
            notes = np.frombuffer(state, NOTE_LAYOUT, count=n, offset=4)
            columns = track.notes.numpy()
            if not all(np.array_equal(notes[name], columns[name]) for name in NOTE_LAYOUT.names):
                return False
        return True
    except Exception:  # noqa: BLE001  another symusic: numpy() gives the notes
        return False


def _probe_file() -> bytes:
    """One track of two notes: (tick 300, 70,005 ticks long, pitch 61, velocity 99) and
    (70,300, 1,234, 62, 45)."""
    def delta(ticks):  # a variable-length quantity
        out = [ticks & 0x7F]
        while ticks > 0x7F:
            ticks >>= 7
            out.append(0x80 | (ticks & 0x7F))
        return bytes(reversed(out))

    body = (delta(300) + bytes([0x90, 61, 99]) + delta(70000) + bytes([0x90, 62, 45])
            + delta(5) + bytes([0x80, 61, 0]) + delta(1229) + bytes([0x80, 62, 0])
            + b"\x00\xff\x2f\x00")
    return (b"MThd" + struct.pack(">IHHh", 6, 0, 1, 480) + b"MTrk"
            + struct.pack(">I", len(body)) + body)


def _replace_dangling(keys, dangling, end_ticks):
    """``(keys less the note-ons symusic drops, [(track * 16 + channel) * 128 + pitch of each
    key paired by pairing], their notes as (start, end, track, channel, pitch, velocity) rows
    of one int64 array)``."""
    expected = {(t, c, p): n for t, c, p, n in keys.tolist()}
    key = (dangling[:, 1] * 16 + dangling[:, 2]) * 128 + dangling[:, 3]
    order = np.argsort(key, kind="stable")  # each key's messages together, in file order
    rows, key = dangling[order], key[order]
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    ends = np.append(starts[1:], len(key))
    left, dropped = _fifo_left(rows, starts, ends)
    for t, c, program in rows[dropped][:, [1, 2, 5]].tolist():
        expected[(t, c, program)] -= 1
    replaced_keys, pairs, owners = [], [], []  # pairing's (start, end, velocity), their keys
    left, bounds = left.tolist(), list(zip(starts.tolist(), ends.tolist()))
    for i in np.argsort(order[starts]).tolist():  # the keys in the order they first come
        if left[i] == 0:  # first in first out ends every note-on of this key: symusic's
            continue
        lo, hi = bounds[i]
        t, c, pitch = rows[lo, 1:4].tolist()
        paired, open_notes, _ = _pair_flush(rows[lo:hi, 0].tolist(), rows[lo:hi, 4].tolist())
        paired += [(start, int(end_ticks[t]), velocity) for start, velocity in open_notes]
        replaced_keys.append((t * 16 + c) * 128 + pitch)
        pairs += paired
        owners.append((t, c, pitch, len(paired)))
    wanted = [[*key, n] for key, n in expected.items() if n > 0]  # scan order
    return wanted, replaced_keys, _pair_rows(pairs, owners)


def _fifo_left(rows, starts, ends):
    """symusic's first in first out, for each key's messages (``rows[starts[i]:ends[i]]``):
    how many of its note-ons it never ends, and which rows those are. A note-off ends the
    oldest note sounding, so the ones never ended are each key's last ``left`` note-ons, where
    ``left`` is the count sounding at the end: the walk of +1 a note-on and -1 a note-off,
    held at 0 from below, which is the walk's end less its lowest point below 0."""
    sizes = ends - starts
    on = rows[:, 4] > 0
    walk = np.cumsum(np.where(on, 1, -1))
    walk -= np.repeat(np.append(0, walk)[starts], sizes)  # each key's walk from 0
    left = walk[ends - 1] - np.minimum(np.minimum.reduceat(walk, starts), 0)
    ons = np.cumsum(on)
    ons_after = np.repeat(ons[ends - 1], sizes) - ons  # the key's note-ons after this row
    return left, on & (ons_after < np.repeat(left, sizes))


def _pair_rows(pairs: list, owners: list) -> np.ndarray:
    """``pairing``'s ``(start, end, velocity)`` of the keys ``owners`` ((track, channel,
    pitch, count) each, in order) as (start, end, track, channel, pitch, velocity) rows
    (``np.fromiter``: far cheaper than ``np.array`` of tuples)."""
    flat = np.fromiter(chain.from_iterable(pairs), np.int64, 3 * len(pairs)).reshape(-1, 3)
    owned = np.array(owners, np.int64).reshape(-1, 4)
    rows = np.empty((len(flat), 6), np.int64)
    rows[:, [0, 1, 5]] = flat
    rows[:, 2:5] = np.repeat(owned[:, :3], owned[:, 3], axis=0)
    return rows
