"""The fast reader's notes (``midilstm.fast_reader``): symusic's tracks matched to the scan.

``note_columns`` checks that symusic's tracks are the keys the scan (``fast_scan``) found, one
for one, and gives their notes as ``pairing.pair_notes``'s columns, in ticks; the keys with a
note-on never ended get ``pairing``'s own notes (``_pair_flush``), not symusic's.
"""
from __future__ import annotations

import numpy as np

from .pairing import _pair_flush


def note_columns(score, keys: np.ndarray, dangling: np.ndarray, end_ticks: np.ndarray):
    """symusic's notes as ``pair_notes``'s columns (ticks), or ``None`` if its tracks do not
    match the keys of the scan one for one (MIDI track, channel, program, note count).

    symusic pairs first in first out and drops the note-ons left unended; ``pairing`` pairs a
    key with such a note-on its other way (``_pair_flush``) and closes what is left at the end
    of the track. So those keys' notes are ``pairing``'s, from their messages (``dangling``),
    and symusic's count for their tracks is less the note-ons it dropped."""
    replaced_keys, replaced = [], []
    if not len(dangling):  # every note-on ended: symusic's notes are pairing's
        wanted = keys.tolist()
    else:
        expected = {(t, c, p): n for t, c, p, n in keys.tolist()}
        by_key = {}
        for tick, t, c, pitch, velocity, program in dangling.tolist():
            by_key.setdefault((t, c, pitch), []).append((tick, velocity, program))
        for (t, c, pitch), messages in by_key.items():
            queue = []  # symusic's first in first out: which note-ons it drops
            for tick, velocity, program in messages:
                if velocity > 0:
                    queue.append(program)
                elif queue:
                    queue.pop(0)
            if not queue:  # first in first out ends every note-on of this key: symusic's
                continue
            for program in queue:
                expected[(t, c, program)] -= 1
            pairs, open_notes, _ = _pair_flush([m[0] for m in messages],
                                               [m[1] for m in messages])
            pairs += [(start, int(end_ticks[t]), velocity) for start, velocity in open_notes]
            replaced_keys.append((t * 16 + c) * 128 + pitch)
            replaced += [(start, stop, t, c, pitch, velocity) for start, stop, velocity in pairs]
        wanted = [(*key, n) for key, n in expected.items() if n > 0]  # scan order
    tracks = [(t, n) for t in score.tracks if (n := t.note_num()) > 0]
    if len(tracks) != len(wanted):
        return None
    parts, owners = [], []
    for (track, n), (t, channel, program, count) in zip(tracks, wanted):
        if n != count or track.program != program or track.is_drum != (channel == 9):
            return None
        parts.append(track.notes.numpy())
        owners.append((t, channel, count))
    counts = np.array([o[2] for o in owners], np.int64)
    none = [np.zeros(0, np.int64)]  # every key's notes may be replaced below

    def column(name):
        return np.concatenate(none + [p[name] for p in parts]).astype(np.int64)

    start = column("time")
    columns = {"start": start, "end": start + column("duration"),
               "track": np.repeat(np.array([o[0] for o in owners], np.int64), counts),
               "channel": np.repeat(np.array([o[1] for o in owners], np.int64), counts),
               "pitch": column("pitch"), "velocity": column("velocity")}
    if replaced_keys:
        key = (columns["track"] * 16 + columns["channel"]) * 128 + columns["pitch"]
        keep = ~np.isin(key, replaced_keys)
        extra = np.array(replaced, np.int64).reshape(-1, 6)
        for i, name in enumerate(("start", "end", "track", "channel", "pitch", "velocity")):
            columns[name] = np.concatenate([columns[name][keep], extra[:, i]])
    return columns
