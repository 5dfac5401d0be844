"""Pairing: every note-on of a file with the note-off that ends it, as a table of notes.

* **Pairing.** A note-off ends a note of the same (track, channel, pitch), first in first out,
  as pretty_midi and symusic pair within a track. Where some note-on of a (track, channel,
  pitch) never gets an off (a *dangling* note-on, e.g. a grace note written note-off then
  note-on at one tick), first-in-first-out would shift every later note of that pitch by one;
  there, an off ends every note of the key sounding since an earlier tick (pretty_midi's rule),
  so the dangling note lasts only until the key is struck again. Notes still sounding at the
  end of their track are closed there; offs with nothing to end are dropped; both are counted.
* **Sustain pedal** (when asked for): a key released while controller 64 is down sounds on
  until the pedal comes up or the key is struck again.
* **Programs.** Each note carries the program its channel had when it started, so notes can be
  selected by instrument (``parse.Selection``).

The table (``pair_notes``) holds every note of every channel, drums included, times in seconds
through the tempo map; selecting among them is ``midilstm.parse``'s.
"""
from __future__ import annotations

import bisect
from collections import defaultdict, deque

import numpy as np

from .smf import MessageScan


def pair_notes(midi, scan: MessageScan, seconds_of, sustain_pedal=False):
    """All notes of the file as a dict of columns, the repair counts and the orphan offs.

    Pairs per (track, channel, pitch): first in first out where every note-on of the key gets
    an off, else an off ends every note of the key sounding since an earlier tick."""
    if len(scan.note_tick) == 0:
        return {}, {}, 0
    key = (scan.note_track * 16 + scan.note_channel) * 128 + scan.note_pitch
    order = np.argsort(key, kind="stable")  # by key, each key's messages in file order
    keys, ticks, velocities = key[order], scan.note_tick[order], scan.note_velocity[order]
    bounds = np.flatnonzero(np.diff(keys)) + 1
    starts, ends, note_keys, note_velocities = [], [], [], []
    orphans = closed = dangling_keys = 0
    end_ticks = scan.end_ticks.tolist()
    for lo, hi in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(keys)].tolist()):
        k = int(keys[lo])
        group_ticks, group_velocities = ticks[lo:hi].tolist(), velocities[lo:hi].tolist()
        pairs, open_notes, orphan = _pair_first_in_first_out(group_ticks, group_velocities)
        if open_notes:  # a dangling note-on: first in first out would shift later notes
            dangling_keys += 1
            pairs, open_notes, orphan = _pair_flush(group_ticks, group_velocities)
        end = end_ticks[k // (16 * 128)]
        pairs += [(start, end, velocity) for start, velocity in open_notes]
        closed += len(open_notes)
        orphans += orphan
        for start, stop, velocity in pairs:
            starts.append(start)
            ends.append(stop)
            note_velocities.append(velocity)
        note_keys += [k] * len(pairs)
    note_keys = np.array(note_keys, np.int64)
    columns = {"start": np.array(starts, np.int64), "end": np.array(ends, np.int64),
               "track": note_keys // (16 * 128), "channel": note_keys // 128 % 16,
               "pitch": note_keys % 128, "velocity": np.array(note_velocities, np.int64)}
    fixes = {"closed_at_end": closed, "keys_with_dangling_note_on": dangling_keys}
    if sustain_pedal:
        columns, fixes["held_by_pedal"] = _hold_by_pedal(columns, scan.pedals, midi.type == 2)
    return _to_note_table(columns, scan.programs, seconds_of, midi.type == 2), fixes, orphans


def _pair_first_in_first_out(ticks, velocities):
    """One key's messages -> (start, end, velocity) notes, still-open (start, velocity), orphans."""
    sounding, pairs, orphans = deque(), [], 0
    for tick, velocity in zip(ticks, velocities):
        if velocity > 0:
            sounding.append((tick, velocity))
        elif sounding:
            start, on_velocity = sounding.popleft()
            pairs.append((start, tick, on_velocity))
        else:
            orphans += 1
    return pairs, list(sounding), orphans


def _pair_flush(ticks, velocities):
    """As pretty_midi: an off ends every note of the key struck at an earlier tick. An off with
    nothing to end, followed at its tick by an on, is that on's own off written first: the pair
    is a zero-length note (a grace note), dropped later and counted. Linear: a key's ticks never
    decrease, so the notes struck earlier are the oldest sounding, each ended once."""
    sounding, pairs, orphans, orphan_tick = deque(), [], 0, None
    for tick, velocity in zip(ticks, velocities):
        if velocity > 0:
            if tick == orphan_tick:
                pairs.append((tick, tick, velocity))
                orphans, orphan_tick = orphans - 1, None
            else:
                sounding.append((tick, velocity))
            continue
        if sounding and sounding[0][0] < tick:  # every note struck earlier ends here
            while sounding and sounding[0][0] < tick:
                start, v = sounding.popleft()
                pairs.append((start, tick, v))
        elif sounding:  # only notes struck at this very tick: the oldest ends (zero length)
            start, v = sounding.popleft()
            pairs.append((start, tick, v))
        else:
            orphans, orphan_tick = orphans + 1, tick
    return pairs, list(sounding), orphans


def _hold_by_pedal(columns, pedals, per_track):
    """As on a piano: a key released while the sustain pedal is down sounds on until the pedal
    comes up, or until the same key is struck again. Returns the notes and how many were held."""
    pedals = sorted(pedals, key=(lambda m: (m[1], m[0], m[2])) if per_track
                    else (lambda m: (m[0], m[1], m[2])))
    up_ticks = defaultdict(list)  # (track or 0, channel) -> ticks where the pedal goes up
    down_at = defaultdict(list)  # (track or 0, channel) -> [(tick, is_down)] in order
    for tick, track, _, channel, down in pedals:
        where = (track if per_track else 0, channel)
        down_at[where].append((tick, down))
        if not down:
            up_ticks[where].append(tick)
    notes = list(zip(*(columns[name].tolist() for name in
                       ("start", "end", "track", "channel", "pitch"))))
    starts = defaultdict(list)  # same key struck again: (track or 0, channel, pitch) -> starts
    for start, _, track, channel, pitch in notes:
        starts[(track if per_track else 0, channel, pitch)].append(start)
    for key in starts:
        starts[key].sort()
    held, new_ends = 0, []
    for start, end, track, channel, pitch in notes:
        where = (track if per_track else 0, channel)
        changes = down_at.get(where, [])
        i = bisect.bisect_right(changes, (end, True)) - 1  # the pedal's state at the release
        if i >= 0 and changes[i][1]:
            ups = up_ticks[where]
            j = bisect.bisect_right(ups, end)
            release = ups[j] if j < len(ups) else end
            again = starts[(where[0], channel, pitch)]
            k = bisect.bisect_right(again, start)
            if k < len(again):
                release = min(release, max(again[k], end))
            held += release > end
            end = max(end, release)
        new_ends.append(end)
    return dict(columns, end=np.array(new_ends, np.int64)), held


def _to_note_table(columns, program_changes, seconds_of, per_track):
    """The notes' columns with times in seconds and each note's program ({} for no notes)."""
    if len(columns["start"]) == 0:
        return {}
    start, end, track = columns["start"], columns["end"], columns["track"]
    if per_track:
        start_s, end_s = np.empty(len(start)), np.empty(len(start))
        order = np.argsort(track, kind="stable")  # each track's notes once, whatever the count
        bounds = np.flatnonzero(np.diff(track[order])) + 1
        for lo, hi in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(order)].tolist()):
            sel, t = order[lo:hi], track[order[lo]]
            start_s[sel], end_s[sel] = seconds_of(start[sel], t), seconds_of(end[sel], t)
    else:
        start_s, end_s = seconds_of(start), seconds_of(end)
    return {"start_s": start_s, "end_s": end_s, "track": track, "channel": columns["channel"],
            "pitch": columns["pitch"], "velocity": columns["velocity"],
            "program": _programs_at(sorted(program_changes), start, track, columns["channel"],
                                    per_track)}


def _programs_at(program_changes, start, track, channel, per_track):
    """The program (instrument) each note's channel had when the note started (default 0).

    ``program_changes`` sorted (by tick, then track and order): grouped once by channel, or by
    (channel, track) in a type 2 file, and each group's notes looked up by bisection."""
    program = np.zeros(len(start), np.int64)
    groups = defaultdict(lambda: ([], []))  # channel or (channel, track) -> (ticks, programs)
    for tick, trk, _, c, prog in program_changes:
        ticks, progs = groups[(c, trk) if per_track else c]
        ticks.append(tick)
        progs.append(prog)
    if not groups:
        return program
    group_of = channel * 2**16 + track if per_track else channel  # a track number is < 2**16
    order = np.argsort(group_of, kind="stable")
    keys = group_of[order]
    bounds = np.flatnonzero(np.diff(keys)) + 1
    for lo, hi in zip(np.r_[0, bounds].tolist(), np.r_[bounds, len(keys)].tolist()):
        k = int(keys[lo])
        found = groups.get((k >> 16, k & 0xFFFF) if per_track else k)
        if found is None:
            continue
        ticks, progs = np.array(found[0], np.int64), np.array(found[1], np.int64)
        notes = order[lo:hi]
        i = np.searchsorted(ticks, start[notes], side="right") - 1
        program[notes] = np.where(i >= 0, progs[np.maximum(i, 0)], 0)
    return program
