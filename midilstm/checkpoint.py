"""Checkpoints: one file with everything needed to generate, safe to load.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` can read it: loading never runs code from the file.
It holds the weights, the model config, the codec (with its fitted bin edges), the training
config and history, free-form parameters, the seed, hashes of the training data and the
library versions. It is written atomically.

A file may also be truncated, damaged, tampered with or not ours. ``load_checkpoint`` therefore
trusts nothing it reads until it has checked it: every entry of the zip archive must match the
CRC-32 its directory records (one flipped bit in a weight is refused, not generated from), the
tensors are memory-mapped (nothing is read into memory), the config and codec are checked field
by field against sane bounds, and every weight's shape against the shape the config and codec
imply. Only then is a model built, so a file cannot make us allocate more than it holds, nor
hand generation arrays that disagree in size.
"""
from __future__ import annotations

import io
import os
import pickletools
import platform
import re
import reprlib
import struct
import zipfile
import zlib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from .checks import is_int
from .codec import EventCodec
from .constants import INPUT_MODES
from .errors import CheckpointError, CodecError, ParameterError
from .files import write_bytes_atomic
from .model import LESSON_INPUTS, ModelConfig, build, expected_shapes

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model: torch.nn.Module  # a ``midilstm.model.EventModel``: ``build(model_config)``
    codec: EventCodec
    train_config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    best_epoch: int = -1
    params: dict = field(default_factory=dict)  # whatever the caller wants kept (run knobs)
    data_hashes: list = field(default_factory=list)
    held_out: list = field(default_factory=list)  # names of the pieces validation held out
    versions: dict = field(default_factory=dict)
    optimizer_state: dict | None = None  # to resume training

    def save(self, path) -> Path:
        payload = {
            "format_version": FORMAT_VERSION,
            "model_config": self.model.config.to_dict(),
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "codec": self.codec.to_dict(),
            "train_config": self.train_config,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "params": self.params,
            "data_hashes": list(self.data_hashes),
            "held_out": [str(name) for name in self.held_out],
            "versions": self.versions or library_versions(),
            "optimizer_state": self.optimizer_state,
        }
        buffer = io.BytesIO()
        torch.save(_plain(payload), buffer)
        return write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load with ``weights_only=True``, after verifying everything (``CheckpointError`` naming
    the file and the field otherwise); the model comes back in eval mode on ``device``."""
    payload = _read_payload(path)
    state = payload["model_state"]
    shapes = _state_shapes(path, state)  # the file's real shapes, before trusting any config
    config = _model_config(path, payload["model_config"])
    try:
        codec = EventCodec.from_dict(payload["codec"])
    except CodecError as err:
        raise CheckpointError(path, f"codec: {err.reason}") from None
    if not codec.fitted:
        raise CheckpointError(path, "codec: time_edges_s is empty (the codec was never fitted)")
    if codec.sizes != config.sizes:
        raise CheckpointError(path, f"model_config.sizes {config.sizes} disagree with the "
                                    f"codec's sizes {codec.sizes}")
    _check_shapes(path, config, shapes)
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(path, f"model_state.{key} holds NaN or infinite values")
    model = build(config)  # sizes now match the file's tensors: bounded by the file
    model.load_state_dict(state)
    model.to(device).eval()
    meta = {name: _in_memory(path, payload.get(name, default))
            for name, default in OPTIONAL.items()}
    if not all(isinstance(name, str) for name in meta["held_out"]):
        raise CheckpointError(path, "held_out must list piece names (strings)")
    return Checkpoint(model=model, codec=codec, **meta)


# Payload entries besides the four required ones, with their types and defaults.
REQUIRED = {"format_version": int, "model_config": dict, "model_state": dict, "codec": dict}
OPTIONAL = {"train_config": {}, "history": [], "best_epoch": -1, "params": {},
            "data_hashes": [], "held_out": [], "versions": {}, "optimizer_state": None}


def _read_payload(path) -> dict:
    """The zip's directory and every entry's CRC-32, then ``torch.load`` with ``weights_only``
    and ``mmap``, and the payload's keys and types."""
    try:
        with open(path, "rb") as file, zipfile.ZipFile(file) as archive:
            entries = archive.infolist()
            _check_entries(path, entries, os.fstat(file.fileno()).st_size)
            _check_crcs(path, file, entries)
            _check_globals(path, archive.read(next(e for e in entries
                                                   if e.filename.endswith("/data.pkl"))))
    except CheckpointError:
        raise
    except OSError as err:
        raise CheckpointError(path, f"cannot read it ({err.strerror or err})") from None
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise CheckpointError(path, "is not a checkpoint: not a complete zip archive "
                                    "(truncated, or some other file)") from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - whatever a broken file makes torch raise
        raise CheckpointError(path, f"is not a readable checkpoint "
                                    f"({type(err).__name__}: {_refusal_text(err)})") from None
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"holds a {type(payload).__name__}, not a checkpoint dict")
    version = payload.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise CheckpointError(path, f"format_version is {reprlib.repr(version)}: unknown "
                                    f"checkpoint format (this midilstm reads {FORMAT_VERSION})")
    known = {**REQUIRED, **OPTIONAL}
    for key in payload:
        if key not in known:
            raise CheckpointError(path, f"{reprlib.repr(key)} is not a checkpoint entry")
    for key, kind in REQUIRED.items():
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(path, f"{key} must be a {kind.__name__}, "
                                        f"not {type(payload.get(key)).__name__}")
    for key, default in OPTIONAL.items():
        if key in payload and not _same_kind(payload[key], default):
            raise CheckpointError(path, f"{key} has the wrong type "
                                        f"({type(payload[key]).__name__})")
    return payload


CRC_CHUNK = 1 << 20  # bytes read at a time to check an entry's CRC-32: memory stays bounded
# a zip's local file header: magic number, ..., name length, extra field length
LOCAL_HEADER = struct.Struct("<4s22xHH")
MAX_GLOBAL = 1000  # characters of a global's "module name"
MAX_REFUSAL = 6000  # characters of torch's refusal kept: all of it for any name MAX_GLOBAL allows


def _check_entries(path, entries, file_size: int):
    """What the zip's directory says, before anything is read: torch's entries, stored (not
    compressed), and together no larger than the file (so checking them reads it at most once)."""
    if not any(e.filename.endswith("/data.pkl") for e in entries):
        raise CheckpointError(path, "is not a checkpoint: a zip archive without torch's data.pkl")
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries):
        raise CheckpointError(path, "is not a checkpoint: torch.save never compresses entries")
    if sum(e.compress_size for e in entries) > file_size:
        raise CheckpointError(path, "is not a checkpoint: its zip entries overlap (together they "
                                    "are larger than the file)")


def _check_crcs(path, file, entries):
    """Every entry read through once, in chunks, against the CRC-32 the directory records:
    a flipped bit anywhere in an entry (a weight, the pickle) is refused, naming the entry.
    Each entry's local header must be one, with the directory's name for it, as zipfile checks;
    the data are read straight from the file, a chunk at a time, through zlib's CRC-32."""
    buffer = memoryview(bytearray(CRC_CHUNK))
    for entry in entries:
        name = entry.filename if len(entry.filename) <= 200 else reprlib.repr(entry.filename)
        file.seek(entry.header_offset)
        header = file.read(LOCAL_HEADER.size)
        if len(header) < LOCAL_HEADER.size:
            raise CheckpointError(path, f"{name} is cut short: the file is truncated")
        magic, name_length, extra_length = LOCAL_HEADER.unpack(header)
        if magic != b"PK\x03\x04" or file.read(name_length) != entry.orig_filename.encode(
                "utf-8" if entry.flag_bits & 0x800 else "cp437"):
            raise CheckpointError(path, f"{name} is damaged: its local header is not the one "
                                        f"the zip's directory describes")
        file.seek(extra_length, os.SEEK_CUR)
        crc, left = 0, entry.compress_size
        while left:
            got = file.readinto(buffer[:min(left, CRC_CHUNK)])
            if not got:
                raise CheckpointError(path, f"{name} is cut short: the file is truncated")
            crc, left = zlib.crc32(buffer[:got], crc), left - got
        if crc != entry.CRC:
            raise CheckpointError(path, f"{name} fails its CRC check: the file is damaged")


def _check_globals(path, pickle: bytes):
    """No global the pickle names is longer than any torch allows. torch refuses such a name,
    but searches its refusal (which repeats the name three times) with patterns whose time
    grows faster than the square of the name's length: 1,000 characters take 0.04 s, 10,000
    took 4 s and 100,000 over 3 minutes."""
    try:
        for opcode, arg, _ in pickletools.genops(pickle):
            if opcode.name == "GLOBAL" and len(arg) > MAX_GLOBAL:
                raise CheckpointError(path, f"data.pkl names a global of {len(arg)} characters "
                                            f"(torch allows none over {MAX_GLOBAL}): not ours")
    except CheckpointError:
        raise
    except Exception:  # noqa: BLE001 - a pickle genops cannot read: torch refuses it itself
        return


def _refusal_text(err: Exception) -> str:
    """Torch's whole refusal on one line: terminal colour codes and other control characters
    dropped (``CheckpointError`` folds the whitespace); only a text far longer than torch's
    own (a crafted name in the pickle) is cut, saying how much was left out."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(err))
    text = " ".join(re.sub(r"[\x00-\x08\x0e-\x1f\x7f]", "", text).split())
    if len(text) > MAX_REFUSAL:
        text = f"{text[:MAX_REFUSAL]}... ({len(text) - MAX_REFUSAL} more characters)"
    return text


def _same_kind(value, default) -> bool:
    if default is None:  # optimizer_state: None, or a dict when there is one
        return value is None or isinstance(value, dict)
    if isinstance(default, int):
        return is_int(value)
    return isinstance(value, type(default))


def _state_shapes(path, state: dict) -> dict:
    """Every weight's shape, from the tensors' headers (nothing is read from the mapped data)."""
    shapes = {}
    for key, tensor in state.items():
        if not isinstance(key, str):
            raise CheckpointError(path, f"model_state has a key {reprlib.repr(key)}, not a name")
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(path, f"model_state.{key} must be a tensor, "
                                        f"not {type(tensor).__name__}")
        if tensor.layout != torch.strided or not tensor.is_floating_point():
            raise CheckpointError(path, f"model_state.{key} must be a dense float tensor, "
                                        f"not {tensor.dtype} ({tensor.layout})")
        shapes[key] = tuple(tensor.shape)
    return shapes


def _model_config(path, raw: dict) -> ModelConfig:
    """The model config, each field checked for its type and bounds before it sizes anything."""
    names = [f.name for f in fields(ModelConfig)]
    for key in raw:
        if key not in names:
            raise CheckpointError(path, f"model_config.{reprlib.repr(key)} is not a config field")
    if "sizes" not in raw:
        raise CheckpointError(path, "model_config.sizes is missing")
    raw = {**LESSON_INPUTS, **raw}  # saved before these fields existed: the lesson's inputs
    try:  # ModelConfig checks every field's type and bounds before anything is sized
        return ModelConfig(**raw)
    except ParameterError as err:
        raise CheckpointError(path, f"model_config.{err.name} {err.reason}") from None


def _check_shapes(path, config: ModelConfig, shapes: dict):
    """Every weight the config's network has is there with its shape, and nothing else is."""
    expected = expected_shapes(config)
    for key, want in expected.items():
        if key not in shapes:
            raise CheckpointError(path, f"model_state.{key} is missing ({_sizing(config)})")
        if shapes[key] != want:
            raise CheckpointError(path, f"model_state.{key} has shape {shapes[key]}, but "
                                        f"{_what_sizes(config, key, shapes[key])} call for {want}")
    for key in shapes:
        if key not in expected:
            raise CheckpointError(path, f"model_state.{key} is not a weight of this model "
                                        f"({_sizing(config)})")


def _what_sizes(config: ModelConfig, key: str, got: tuple) -> str:
    """The config fields that set the dimensions of weight ``key`` that differ from ``got``:
    those whose change, built again on the meta device, changes them."""
    want = expected_shapes(config)[key]
    wrong = ([d for d, (n, g) in enumerate(zip(want, got)) if n != g] if len(want) == len(got)
             else range(len(want)))
    culprits = [name for name, changed in _variants(config)
                if _differs(expected_shapes(changed).get(key), want, wrong)]
    fields_ = [f"{name} {getattr(config, name)}" for name in culprits if name != "sizes"]
    said = ([f"the codec's sizes {config.sizes}"] if "sizes" in culprits else []) + (
        [f"model_config.{fields_[0]}"] if len(fields_) == 1
        else [f"model_config ({', '.join(fields_)})"] if fields_ else [])
    return " and ".join(said) or _sizing(config)


def _differs(shape, want, dims) -> bool:
    """Whether a weight is there (a field that removes it does not size it) and differs."""
    return shape is not None and (len(shape) != len(want) or any(shape[d] != want[d]
                                                                 for d in dims))


def _variants(config: ModelConfig):
    """``(field, config with that field changed)`` for each field that may size a weight."""
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "sizes":
            options = [tuple(n + 1 for n in value)]
        elif isinstance(value, bool):
            options = [not value]
        elif isinstance(value, int):
            options = [value + 1, value - 1, value * 2]  # * 2: a width heads must divide
        elif f.name == "input_mode":
            options = [m for m in INPUT_MODES if m != value]
        else:
            continue
        for option in options:
            try:
                yield f.name, replace(config, **{f.name: option})
                break
            except ParameterError:  # out of bounds: try the next
                continue


def _sizing(config: ModelConfig) -> str:
    return "model_config " + ", ".join(f"{k} {v}" for k, v in config.to_dict().items()
                                       if k != "dropout")


def _in_memory(path, value):
    """``value`` with every tensor copied off the memory-mapped file (which may change later)."""
    try:
        if isinstance(value, torch.Tensor):
            return value.clone()
        if isinstance(value, dict):
            return {k: _in_memory(path, v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(_in_memory(path, v) for v in value)
        return value
    except RecursionError:
        raise CheckpointError(path, "holds data nested too deeply to be ours") from None


def library_versions() -> dict:
    """Versions that decide whether a run can be reproduced bit for bit."""
    from importlib.metadata import version

    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "numpy": version("numpy"), "mido": version("mido"), "platform": platform.platform()}


def _plain(obj):
    """Numpy scalars and arrays become Python numbers and lists (weights_only cannot load them)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if hasattr(obj, "tolist") and not torch.is_tensor(obj):
        return obj.tolist()
    return obj
