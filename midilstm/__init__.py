"""midilstm: read MIDI, encode its notes, train an LSTM to predict the next note, improvise.

The package serves the notebooks in ``notebooks/``; see README.md for the tour, and its
"The Python API" section for these names in use.

``import midilstm`` does not import torch (``python -m midilstm inspect`` and ``01_parse`` rely
on it): reading and writing MIDI and the error types are imported at once; the names that need
torch, numba or the training machinery (``EventCodec``, ``ModelConfig``, ``TrainConfig``,
``load_checkpoint``, ``SamplingConfig``, ...) are imported on first use, by ``__getattr__``.
The training and generating functions are ``midilstm.train.train`` and
``midilstm.generate.generate``: ``midilstm.train`` and ``midilstm.generate`` are the modules,
so no name here shadows them.
"""
from importlib import import_module as _import_module

from .errors import (
    CacheError,
    CheckpointError,
    CodecError,
    MidiInputError,
    MidilstmError,
    ParameterError,
    RunDirError,
)
from .events import (
    EVENT_DTYPE,
    NOTE_DTYPE,
    events_to_notes,
    make_events,
    notes_to_events,
)
from .export import events_to_midi, write_midi
from .parse import (
    READER_VERSION,
    Parsed,
    ParseReport,
    Selection,
    open_midi,
    read_midi,
    read_midi_files,
)
from .smf import ReadLimits

__version__ = "0.1.0"

# name -> the module (of this package) that defines it, imported when the name is first used
_LAZY = {
    "default_piece": "music",
    "EventCodec": "codec",
    "split_pieces": "data",
    "ModelConfig": "model",
    "build": "model",
    "TrainConfig": "train",
    "evaluate": "train",
    "Checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "SamplingConfig": "sampling",
    "Improviser": "generate",
    "RunDir": "rundir",
}

# reading and writing MIDI, events and notes
__all__ = [
    "EVENT_DTYPE", "NOTE_DTYPE", "READER_VERSION", "ParseReport", "Parsed", "ReadLimits",
    "Selection", "events_to_midi", "events_to_notes", "make_events", "notes_to_events",
    "open_midi", "read_midi", "read_midi_files", "write_midi",
]
# the errors midilstm raises on purpose: every one is a MidilstmError
__all__ += [
    "CacheError", "CheckpointError", "CodecError", "MidiInputError", "MidilstmError", "ParameterError",
    "RunDirError",
]
# imported on first use (``_LAZY``): the bundled piece, encoding, the network, training,
# checkpoints, sampling, run directories
__all__ += [
    "Checkpoint", "EventCodec", "Improviser", "ModelConfig", "RunDir", "SamplingConfig",
    "TrainConfig", "build", "default_piece", "evaluate", "load_checkpoint", "split_pieces",
]


def __getattr__(name: str):
    """PEP 562: import the module behind a lazy name on first use, and keep the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups find it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
