"""The fast reader's pass over the bytes (``midilstm.fast_reader``): one numba-compiled scan.

``read_bytes`` and ``track_chunks`` find the MTrk chunks ``read_midi`` reads (or ``None``
where ``smf`` refuses the file); ``load_scan()`` gives the compiled pass (``None`` without
numba), which decodes every message of every track once, as ``smf._decode_track`` decodes
(mido's way). It keeps what symusic hides (tempo changes, program changes, pedal messages,
symusic's keys per MIDI track with their note counts, the note messages of keys with a
note-on never ended) and gives a code: ``OK``, or why the fast path must not read the file
(``REASONS``).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .errors import MidiInputError
from .smf import read_file_bytes
from .smf_decode import MAX_DATA_LENGTH, MAX_DELTA_TICKS  # the reader's limits, one home

# Why a file was not read fast (``read_midi_fast(..., why=True)``; the bench counts them).
OK, CORRUPT, DANGLING, ODD, LIMIT, TICKS = range(6)
REASONS = {CORRUPT: "corrupt or truncated (read_midi refuses it)",
           DANGLING: "a note-on some key never ends (pairing repairs it, symusic drops it)",
           ODD: "a message the two readers take differently (unknown meta, system message, "
                "running status after a non-channel message, messages after end-of-track)",
           LIMIT: "over ReadLimits (read_midi refuses it)",
           TICKS: "ticks past 2**31 - 1 (symusic keeps 32-bit ticks)"}

MAX_TICK = 2**31 - 1
MAX_TRACKS = 4096  # more MTrk chunks than this: not worth a fast path (read_midi reads them)

# meta types as mido takes them: 1 any length, 2 checked below, 0 unknown to mido (no delta)
META_RULE = np.zeros(256, np.int64)
for _t in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x2F, 0x7F, 0x51, 0x59, 0x21):
    META_RULE[_t] = 1
for _t in (0x00, 0x20, 0x54, 0x58):
    META_RULE[_t] = 2


def read_bytes(path: Path, max_bytes: int):
    """The file's bytes (``smf.read_file_bytes``), or ``None`` where it refuses the file or the
    file is empty: the mido path then says why."""
    try:
        return read_file_bytes(path, max_bytes) or None
    except MidiInputError:
        return None


def track_chunks(data: bytes):
    """``(type, division, [(body start, body end)] of the MTrk chunks read_midi reads, plain)``
    or ``None`` where it would refuse the file (as ``smf._standard_file``/``_standard_chunks``).
    ``plain``: the file is nothing but a 6-byte header and those chunks, so symusic can be given
    its bytes as they are."""
    if data[:4] == b"RIFF" and data[8:12] == b"RMID" and b"MThd" in data:
        offset = data.index(b"MThd")
    elif data[:4] == b"MThd":
        offset = 0
    else:
        return None
    if len(data) < offset + 14:
        return None
    header_size, midi_type, ntrks, tpb = struct.unpack(">IHHh", data[offset + 4:offset + 14])
    if header_size < 6 or ntrks == 0:
        return None
    pos, bounds = offset + 8 + header_size, []
    plain = offset == 0 and header_size == 6
    while pos + 8 <= len(data):
        kind = data[pos:pos + 4]
        size = struct.unpack(">I", data[pos + 4:pos + 8])[0]
        if kind != b"MTrk" and not all(0x20 <= b <= 0x7E for b in kind):  # junk: ignored
            break
        if kind == b"MTrk" and len(bounds) < ntrks:
            if pos + 8 + size > len(data):
                return None  # truncated
            bounds.append((pos + 8, pos + 8 + size))
        else:
            plain = False
        pos += 8 + size
    if len(bounds) < ntrks:
        return None
    return midi_type, tpb, bounds, plain and pos == len(data)


_scan_function = None


NO_KEYS = np.zeros((0, 2), np.int64)  # the first pass collects no key's messages


def load_scan():
    """The compiled scan (compiled on the first call, then numba's cache), or ``None``."""
    global _scan_function
    if _scan_function is None:
        try:
            _scan_function = _compile_scan()
        except Exception:  # noqa: BLE001  numba missing or failing: no fast path
            _scan_function = False
    return _scan_function or None


def _compile_scan():
    from numba import njit

    # ``_nb_grow`` and ``_nb_scan`` are module globals, not closure cells: numba's cache keys
    # a function by the pickle of its closure's cells, which differs in every process, so a
    # closure would be compiled again in every process (4-17 s measured on this VM).
    global _nb_grow, _nb_scan

    @njit(cache=True)
    def _nb_grow(rows, n):
        if n < rows.shape[0]:
            return rows
        bigger = np.empty((2 * rows.shape[0], rows.shape[1]), np.int64)
        bigger[:n] = rows[:n]
        return bigger

    @njit(cache=True)
    def _nb_scan(data, chunks, max_messages, meta_rule, collect):
        """Every message of every track once, decoded as ``smf._decode_track`` decodes (mido's
        way): ``(code, end_ticks, note-ons, tempos, programs, pedals, keys, dangling,
        open_keys)``, each table cut to its rows; code ``OK`` (0) or why the fast path must not
        read the file. ``chunks``: each track's (body start, body end). The note messages of
        the keys ``collect`` names ((track, channel * 128 + pitch) rows, by track) come in
        ``dangling`` (a pass with ``collect`` decodes only those keys' tracks); ``open_keys``
        names the keys where a note-on is never ended."""
        n_tracks = len(chunks)
        end_ticks = np.zeros(n_tracks, np.int64)
        tempos = np.empty((4, 3), np.int64)  # tick, track, us per beat
        programs = np.empty((4, 5), np.int64)  # tick, track, order, channel, program
        pedals = np.empty((4, 5), np.int64)  # tick, track, order, channel, down
        keys = np.empty((4, 4), np.int64)  # track, channel, program, note-ons
        # the note messages of the tracks asked for: tick, track, channel, pitch, velocity,
        # the channel's program (as symusic tracks it)
        dangling = np.empty((4, 6), np.int64)
        open_keys = np.empty((4, 2), np.int64)
        n_open_keys = 0
        want = np.zeros(2048, np.bool_)
        ci = 0
        touched = np.empty(2048, np.int64)  # this track's keys of per_key, as first seen
        n_tempos = n_programs = n_pedals = n_keys = n_dangling = 0
        sounding = np.zeros(2048, np.int64)  # (channel, pitch) -> notes sounding, FIFO
        per_key = np.zeros(2048, np.int64)  # (channel, program) -> note-ons (symusic's key)
        instrument = np.zeros(16, np.int64)  # each channel's program, as symusic tracks it
        n_messages = 0
        n_ons = 0
        code = 0
        for t in range(n_tracks):
            pos, end = chunks[t, 0], chunks[t, 1]
            status, tick, order, n_touched, n_open = -1, 0, 0, 0, 0
            instrument[:] = 0
            first = ci
            while ci < len(collect) and collect[ci, 0] == t:
                want[collect[ci, 1]] = True
                ci += 1
            collecting = ci > first
            if len(collect) and not collecting:  # a pass for those keys: their tracks only
                continue
            while pos < end:
                if n_messages >= max_messages:
                    code = 4
                    break
                delta = np.int64(data[pos])
                pos += 1
                if delta >= 0x80:
                    byte = delta
                    delta = delta & 0x7F
                    while byte >= 0x80 and code == 0:
                        if pos >= end:
                            code = 1
                            break
                        byte = np.int64(data[pos])
                        pos += 1
                        delta = (delta << 7) | (byte & 0x7F)
                        if delta > MAX_DELTA_TICKS:
                            code = 1
                    if code != 0:
                        break
                tick += delta
                if tick > 2147483647:
                    code = 5
                    break
                if pos >= end:
                    code = 1
                    break
                kind = np.int64(data[pos])
                if kind < 0x80:  # running status
                    if status < 0:
                        code = 1
                        break
                    if status >= 0xF0:  # after sysex or a system message: mido's own way
                        code = 3
                        break
                    kind = status
                else:
                    pos += 1
                    if kind != 0xFF:
                        status = kind
                n_messages += 1
                if kind < 0xF0:
                    high = kind & 0xF0
                    channel = kind & 0x0F
                    if high == 0xC0 or high == 0xD0:
                        if pos >= end or data[pos] > 127:
                            code = 1
                            break
                        a = np.int64(data[pos])
                        pos += 1
                        if high == 0xC0:
                            if n_programs >= programs.shape[0]:
                                programs = _nb_grow(programs, n_programs)
                            programs[n_programs, 0] = tick
                            programs[n_programs, 1] = t
                            programs[n_programs, 2] = order
                            programs[n_programs, 3] = channel
                            programs[n_programs, 4] = a
                            n_programs += 1
                            instrument[channel] = a
                    else:
                        if pos + 2 > end or data[pos] > 127 or data[pos + 1] > 127:
                            code = 1
                            break
                        a = np.int64(data[pos])
                        b = np.int64(data[pos + 1])
                        pos += 2
                        if collecting and (high == 0x90 or high == 0x80) \
                                and want[channel * 128 + a]:
                            if n_dangling >= dangling.shape[0]:
                                dangling = _nb_grow(dangling, n_dangling)
                            dangling[n_dangling, 0] = tick
                            dangling[n_dangling, 1] = t
                            dangling[n_dangling, 2] = channel
                            dangling[n_dangling, 3] = a
                            dangling[n_dangling, 4] = b if high == 0x90 else 0
                            dangling[n_dangling, 5] = instrument[channel]
                            n_dangling += 1
                        if high == 0x90 and b > 0:
                            n_ons += 1
                            n_open += 1
                            sounding[channel * 128 + a] += 1
                            k = channel * 128 + instrument[channel]
                            if per_key[k] == 0:
                                touched[n_touched] = k
                                n_touched += 1
                            per_key[k] += 1
                        elif high == 0x90 or high == 0x80:
                            if sounding[channel * 128 + a] > 0:
                                sounding[channel * 128 + a] -= 1
                                n_open -= 1
                        elif high == 0xB0 and a == 64:
                            if n_pedals >= pedals.shape[0]:
                                pedals = _nb_grow(pedals, n_pedals)
                            pedals[n_pedals, 0] = tick
                            pedals[n_pedals, 1] = t
                            pedals[n_pedals, 2] = order
                            pedals[n_pedals, 3] = channel
                            pedals[n_pedals, 4] = 1 if b >= 64 else 0
                            n_pedals += 1
                elif kind == 0xFF or kind == 0xF0:
                    meta = -1
                    if kind == 0xFF:
                        if pos >= end:
                            code = 1
                            break
                        meta = np.int64(data[pos])
                        pos += 1
                    length = 0
                    byte = 0x80
                    while byte >= 0x80:
                        if pos >= end:
                            code = 1
                            break
                        byte = np.int64(data[pos])
                        pos += 1
                        length = (length << 7) | (byte & 0x7F)
                        if length > MAX_DATA_LENGTH:
                            code = 1
                            break
                    if code != 0:
                        break
                    if pos + length > end:
                        code = 1
                        break
                    start = pos
                    pos += length
                    if kind == 0xF0:
                        lo = start + 1 if length > 0 and data[start] == 0xF0 else start
                        hi = pos - 1 if length > 0 and data[pos - 1] == 0xF7 else pos
                        for i in range(lo, hi):
                            if data[i] > 127:
                                code = 1
                        if code != 0:
                            break
                    else:
                        rule = meta_rule[meta]
                        if rule == 0:  # unknown to mido: it gives the message no delta time
                            code = 3
                            break
                        if meta == 0x51:
                            if length < 3:
                                code = 1
                                break
                            if n_tempos >= tempos.shape[0]:
                                tempos = _nb_grow(tempos, n_tempos)
                            tempos[n_tempos, 0] = tick
                            tempos[n_tempos, 1] = t
                            tempos[n_tempos, 2] = (np.int64(data[start]) << 16) \
                                | (np.int64(data[start + 1]) << 8) | np.int64(data[start + 2])
                            n_tempos += 1
                        elif meta == 0x59:
                            if length < 2:
                                code = 1
                                break
                        elif meta == 0x2F and pos < end:  # symusic stops there; mido reads on
                            code = 3
                            break
                        elif rule == 2 and ((meta == 0x00 and length == 1)
                                            or (meta == 0x20 and length == 0)
                                            or (meta == 0x58 and length < 4) or meta == 0x54):
                            code = 3  # what mido may fail to decode: only its plain forms
                            break
                else:  # system messages and 0xF7: the readers differ in lengths and status
                    code = 3
                    break
                order += 1
            if code != 0:
                break
            end_ticks[t] = tick
            mine = np.sort(touched[:n_touched])  # symusic's order: by (channel, program)
            for i in range(n_touched):
                k = mine[i]
                if n_keys >= keys.shape[0]:
                    keys = _nb_grow(keys, n_keys)
                keys[n_keys, 0] = t
                keys[n_keys, 1] = k // 128
                keys[n_keys, 2] = k % 128
                keys[n_keys, 3] = per_key[k]
                n_keys += 1
                per_key[k] = 0
            for i in range(first, ci):
                want[collect[i, 1]] = False
            if n_open > 0:  # a note-on never ended: pairing takes its key another way
                for k in range(2048):
                    if sounding[k] > 0:
                        if n_open_keys >= open_keys.shape[0]:
                            open_keys = _nb_grow(open_keys, n_open_keys)
                        open_keys[n_open_keys, 0] = t
                        open_keys[n_open_keys, 1] = k
                        n_open_keys += 1
                        sounding[k] = 0
        return (code, end_ticks, n_ons, tempos[:n_tempos], programs[:n_programs],
                pedals[:n_pedals], keys[:n_keys], dangling[:n_dangling],
                open_keys[:n_open_keys])

    def run(data, chunks, max_messages, meta_rule):
        result = _nb_scan(data, chunks, max_messages, meta_rule, NO_KEYS)
        if result[0] == 0 and len(result[8]):  # again, keeping those keys' note messages:
            # only their tracks are decoded, so only the messages kept come from this pass
            again = _nb_scan(data, chunks, max_messages, meta_rule, result[8])
            return result[:7] + (again[7],)
        return result[:8]

    return run
