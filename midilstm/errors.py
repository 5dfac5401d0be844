"""The one exception type for bad input, so a batch over many files can skip the bad ones."""


class MidiInputError(ValueError):
    """A MIDI file (or event list) cannot be used; the message names the file and the reason.

    Raised for files that are not MIDI, empty, truncated or corrupt, that have no tracks or no
    notes, that have nothing left after channel/track/program selection, or that carry absurd
    tempos or delta times. ``str(err)`` is one line: ``"<path>: <reason>"``.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")
