"""The messages of a Standard MIDI File's tracks, decoded in one pass into arrays
(``MessageScan``): what the tempo map (``midilstm.tempo``) and the pairing of notes
(``midilstm.pairing``) need, without building a Python object per message.

The decoding is mido's (running status, which every status byte but a meta's sets; sysex and
meta lengths; what mido refuses is refused here, as "corrupt MIDI data"), so
``parse.open_midi``'s ``mido.MidiFile`` holds the same messages, down to mido's quirks (a meta
of unknown type gets no delta time). Key signatures mido refuses are noted, for ``smf.to_mido``
to neutralise. A delta time over the standard's 4-byte maximum is refused as soon as it is
seen. Decoding stops at the first message over ``ReadLimits.max_messages``; note-ons over
``ReadLimits.max_notes`` are refused per track.

The bytes, chunks and limits are ``midilstm.smf``'s, which calls ``_decode`` here (this module
imports nothing of it).
"""
from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mido.midifiles.meta import _META_SPECS, _key_signature_decode, build_meta_message

from .errors import MidiInputError

MAX_DELTA_TICKS = 0x0FFFFFFF  # the largest variable-length quantity of 4 bytes (the standard's)
MAX_DATA_LENGTH = 1_000_000  # the longest sysex or meta mido reads (its MAX_MESSAGE_LENGTH)

@dataclass
class MessageScan:
    """What the rest of reading needs from the messages, gathered in one pass."""

    note_tick: np.ndarray  # every note message, track after track, in file order
    note_track: np.ndarray
    note_channel: np.ndarray
    note_pitch: np.ndarray
    note_velocity: np.ndarray  # 0 for a note-off
    tempos: list  # (tick, track, us per beat)
    programs: list  # (tick, track, order, channel, program)
    pedals: list  # (tick, track, order, channel, down)
    ignored: Counter  # channel messages that carry no notes
    end_ticks: np.ndarray  # last tick of each track
    n_messages: int = 0


_CHANNEL_KINDS = {0x80: "note_off", 0x90: "note_on", 0xA0: "polytouch", 0xB0: "control_change",
                  0xC0: "program_change", 0xD0: "aftertouch", 0xE0: "pitchwheel"}
_SYSTEM = {0xF1: ("quarter_frame", 2), 0xF2: ("songpos", 3), 0xF3: ("song_select", 2),
           0xF6: ("tune_request", 1), 0xF8: ("clock", 1), 0xFA: ("start", 1),
           0xFB: ("continue", 1), 0xFC: ("stop", 1), 0xFE: ("active_sensing", 1)}
_TEXT_METAS = frozenset(range(0x01, 0x0A)) | {0x2F, 0x7F}  # mido decodes them whatever they hold
# the other metas mido knows may fail to decode (too short): decoded by mido, as it would
_CHECKED_METAS = frozenset(t for t in _META_SPECS if isinstance(t, int)) - _TEXT_METAS \
    - {0x51, 0x59}


class _Corrupt(Exception):
    """A message mido would refuse: becomes "corrupt MIDI data (...)" naming track and message."""


def _decode(path: Path, chunks: list, limits):
    """Every message of every track once, in file order (see ``_decode_track``): the scan, the
    tracks' names and where the key signatures mido refuses are. ``limits`` is an
    ``smf.ReadLimits`` (its ``max_messages`` and ``max_notes``)."""
    note_tick, note_what = array("q"), array("q")  # tick; track, channel, pitch, velocity
    tempos, programs, pedals, ignored, end_ticks = [], [], [], Counter(), []
    names, key_patches = [], []
    budget = limits.max_messages
    for t, chunk in enumerate(chunks):
        try:
            tick, count, name = _decode_track(
                chunk, t, budget, note_tick, note_what, tempos, programs, pedals, ignored,
                key_patches)
        except _Corrupt as err:
            raise MidiInputError(path, f"corrupt MIDI data ({err})") from None
        if count > budget:
            raise MidiInputError(path, f"too many messages (over {limits.max_messages:,} by "
                                       f"track {t}; the limit is {limits.max_messages:,}: pass "
                                       f"limits=ReadLimits(max_messages=...) to read it)")
        budget -= count
        end_ticks.append(tick)
        names.append(name)
        # note-ons so far: checked per track, so a file of notes stops early too
        if len(note_what) > limits.max_notes and t + 1 < len(chunks):
            n_ons = _note_ons(note_what)
            if n_ons > limits.max_notes:
                raise MidiInputError(path, f"too many notes ({n_ons:,} by track {t}; the "
                                           f"limit is {limits.max_notes:,}: pass "
                                           f"limits=ReadLimits(max_notes=...) to read it)")
    what = np.frombuffer(note_what, np.int64) if len(note_what) else np.zeros(0, np.int64)
    n_ons = int(np.count_nonzero(what & 0x7F))
    if n_ons > limits.max_notes:
        raise MidiInputError(path, f"too many notes ({n_ons:,}; the limit is {limits.max_notes:,}:"
                                   f" pass limits=ReadLimits(max_notes=...) to read it)")
    scan = MessageScan(np.array(note_tick, np.int64), what >> 18, (what >> 14) & 0x0F,
                       (what >> 7) & 0x7F, what & 0x7F, tempos, programs, pedals, ignored,
                       np.array(end_ticks, np.int64), limits.max_messages - budget)
    return scan, names, key_patches


def _note_ons(note_what) -> int:
    what = np.frombuffer(note_what, np.int64)
    return int(np.count_nonzero(what & 0x7F))


def _decode_track(chunk, t, budget, note_tick, note_what, tempos, programs, pedals, ignored,
                  key_patches):
    """One ``MTrk`` chunk (header included): its last tick, its message count (stopping once
    over ``budget``) and its name; appends what it finds to the rest. Decodes as mido's
    ``read_track`` does, without making a message object."""
    end = len(chunk)
    pos, status, tick, order, name = 8, None, 0, 0, None
    tick_append, what_append, track_bits = note_tick.append, note_what.append, t << 18
    while pos < end:
        if order >= budget:
            return tick, order + 1, name or ""
        delta = chunk[pos]  # the delta time
        pos += 1
        if delta >= 0x80:
            byte, delta = delta, delta & 0x7F
            while byte >= 0x80:
                if pos >= end:
                    raise _Corrupt(f"track {t} ends inside the delta time of message {order}")
                byte = chunk[pos]
                pos += 1
                delta = (delta << 7) | (byte & 0x7F)
                if delta > MAX_DELTA_TICKS:
                    raise _Corrupt(f"delta time of message {order} in track {t} is longer than "
                                   f"the 4-byte maximum (corrupt delta time)")
        tick += delta
        if pos >= end:
            raise _Corrupt(f"track {t} ends after the delta time of message {order}")
        kind = chunk[pos]
        running = kind < 0x80
        if running:  # running status: this byte is the first data byte
            if status is None:
                raise _Corrupt(f"running status without a status byte (track {t}, message "
                               f"{order})")
            kind = status
            if kind == 0xF0 or kind == 0xF7:
                pos += 1  # mido drops the byte and reads the length after it
        else:
            pos += 1
            if kind != 0xFF:  # every status byte but a meta's sets the running status (as mido)
                status = kind
        if kind < 0xF0:  # a channel message: 2 data bytes, 1 for program and channel pressure
            high = kind & 0xF0
            if high == 0xC0 or high == 0xD0:
                if pos >= end:
                    raise _Corrupt(f"track {t} ends inside message {order}")
                a = chunk[pos]
                pos += 1
                if a > 127:
                    raise _Corrupt(f"data byte must be in range 0..127 (track {t}, message "
                                   f"{order})")
                if high == 0xC0:
                    programs.append((tick, t, order, kind & 0x0F, a))
                else:
                    ignored["aftertouch"] += 1
            else:
                if pos + 2 > end:
                    raise _Corrupt(f"track {t} ends inside message {order}")
                a, b = chunk[pos], chunk[pos + 1]
                pos += 2
                if a > 127 or b > 127:
                    raise _Corrupt(f"data byte must be in range 0..127 (track {t}, message "
                                   f"{order})")
                if high == 0x90 or high == 0x80:
                    tick_append(tick)
                    what_append(track_bits | (kind & 0x0F) << 14 | a << 7
                                | (b if high == 0x90 else 0))
                elif high == 0xB0:
                    ignored["control_change"] += 1
                    if a == 64:
                        pedals.append((tick, t, order, kind & 0x0F, b >= 64))
                else:
                    ignored[_CHANNEL_KINDS[high]] += 1
        elif kind == 0xFF or kind == 0xF0 or kind == 0xF7:
            if kind == 0xFF:
                if pos >= end:
                    raise _Corrupt(f"track {t} ends inside meta message {order}")
                meta_at, meta = pos, chunk[pos]
                pos += 1
            length, byte = 0, 0x80
            while byte >= 0x80:
                if pos >= end:
                    raise _Corrupt(f"track {t} ends inside the length of message {order}")
                byte = chunk[pos]
                pos += 1
                length = (length << 7) | (byte & 0x7F)
                if length > MAX_DATA_LENGTH:
                    raise _Corrupt(f"message {order} of track {t} is longer than "
                                   f"{MAX_DATA_LENGTH:,} bytes, the most mido reads")
            if pos + length > end:
                raise _Corrupt(f"message {order} of track {t} claims {length:,} bytes; its "
                               f"track has {end - pos:,} left")
            start, pos = pos, pos + length
            if kind != 0xFF:
                data = chunk[start + (chunk[start] == 0xF0 if length else 0):
                             pos - (chunk[pos - 1] == 0xF7 if length else 0)]
                if data and max(data) > 127:
                    raise _Corrupt(f"data byte must be in range 0..127 (sysex, track {t}, "
                                   f"message {order})")
                ignored["sysex"] += 1
            elif meta == 0x51:
                if length < 3:
                    raise _Corrupt(f"set_tempo with {length} data bytes (track {t}, message "
                                   f"{order})")
                tempos.append((tick, t, (chunk[start] << 16) | (chunk[start + 1] << 8)
                               | chunk[start + 2]))
            elif meta == 0x03:
                if name is None:
                    name = chunk[start:pos].decode("latin1")
            elif meta == 0x59:
                if length < 2:
                    raise _Corrupt(f"key_signature with {length} data bytes (track {t}, message "
                                   f"{order})")
                key = chunk[start] - 256 if chunk[start] > 127 else chunk[start]
                if (key, chunk[start + 1]) not in _key_signature_decode:
                    key_patches.append((t, meta_at))
            elif meta not in _META_SPECS:
                tick -= delta  # as mido, which gives a meta of unknown type no delta time
            elif meta in _CHECKED_METAS:
                try:  # what mido refuses to decode (e.g. a time signature of 2 bytes)
                    build_meta_message(meta, chunk[start:pos])
                except Exception as err:  # noqa: BLE001  mido's own refusal, in its words
                    raise _Corrupt(f"{_META_SPECS[meta].type} of {length} bytes: "
                                   f"{type(err).__name__} {err} (track {t}, message "
                                   f"{order})") from None
        else:  # system common and real-time messages, as mido reads them
            spec = _SYSTEM.get(kind)
            if spec is None:
                raise _Corrupt(f"undefined status byte 0x{kind:02x} (track {t}, message {order})")
            size = spec[1] - 1
            if size == 0 and running:  # running status gave it a data byte
                raise _Corrupt(f"{spec[0]} takes no data byte (track {t}, message {order})")
            if pos + size > end:
                raise _Corrupt(f"track {t} ends inside message {order}")
            if size and max(chunk[pos:pos + size]) > 127:
                raise _Corrupt(f"data byte must be in range 0..127 (track {t}, message "
                               f"{order})")
            pos += size
            ignored[spec[0]] += 1
        order += 1
    return tick, order, name or ""
