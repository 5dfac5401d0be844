"""midilstm's own exception types. Each message is one line that names the thing at fault
(the file, the field, the parameter or the notebook to re-run) and the reason, so a command
line or a notebook can show it as it is, without a traceback from deep inside."""


class MidilstmError(Exception):
    """Base of every error midilstm raises on purpose: ``str(err)`` is ``"<what>: <reason>"``."""

    def __init__(self, what, reason: str):
        self.what = str(what)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.what}: {self.reason}")


class MidiInputError(MidilstmError, ValueError):
    """A MIDI file (or event list) cannot be used; the message names the file and the reason.

    Raised for files that are not MIDI, empty, truncated or corrupt, that have no tracks or no
    notes, that have nothing left after channel/track/program selection, or that break a limit
    (size, notes). A batch over many files skips files that raise it.
    """

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.path = self.what


class CheckpointError(MidilstmError, ValueError):
    """A checkpoint file that cannot be trusted: truncated, not ours, or with sizes and shapes
    that disagree. ``str(err)`` names the file and the field."""

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.path = self.what


class CodecError(MidilstmError, ValueError):
    """A codec (``codec.json`` or a codec dict) that is malformed or out of bounds."""

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.path = self.what


class ParameterError(MidilstmError, ValueError):
    """A run or notebook parameter with a wrong type, range or combination: names the parameter."""

    def __init__(self, name, reason: str):
        super().__init__(f"parameter {name}", reason)
        self.name = str(name)


class RunDirError(MidilstmError, RuntimeError):
    """A run directory that cannot be used as asked: locked by another run, already holding a
    run, or with inputs that are missing or were not made together (names the notebook to re-run)."""

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.path = self.what
