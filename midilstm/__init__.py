"""midilstm: read MIDI, encode its notes, train an LSTM to predict the next note, improvise.

The package serves the notebooks in ``notebooks/``; see README.md for the tour.
"""
from .errors import MidiInputError
from .events import EVENT_DTYPE, NOTE_DTYPE, events_to_notes, make_events, notes_to_events
from .export import events_to_midi, write_midi
from .parse import (READER_VERSION, Parsed, ParseReport, Selection, open_midi, read_midi,
                    read_midi_files)
from .smf import ReadLimits

__version__ = "0.1.0"
