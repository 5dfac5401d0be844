"""midilstm's own exception types. Each message is one line that names the thing at fault
(the file, the field, the parameter or the notebook to re-run) and the reason, so a command
line or a notebook can show it as it is, without a traceback from deep inside.

Every one is a ``MidilstmError`` (``except midilstm.MidilstmError`` catches them all); each
narrower type is also a ``ValueError`` (``RunDirError``: a ``RuntimeError``), so code that
catches those still does.
Each keeps what it names as an attribute (``path``, or ``name`` for a parameter) beside
``what`` and ``reason``."""


class MidilstmError(Exception):
    """Base of every error midilstm raises on purpose: ``str(err)`` is ``"<what>: <reason>"``,
    one line (whitespace in the reason, newlines included, is folded to single spaces).

    Catch it to handle any of them. Raised as itself only where no narrower type fits (a
    notebook missing from the package, when running the series)."""

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
    that disagree. Raised by ``load_checkpoint`` before any weight is used; ``str(err)`` names
    the file and the field."""

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.path = self.what


class CodecError(MidilstmError, ValueError):
    """A codec (``codec.json`` or a codec dict) that is malformed or out of bounds.

    Raised by ``EventCodec(...)``, ``EventCodec.from_dict`` and ``EventCodec.load`` for a file
    that cannot be read or is not JSON, an unknown field, a field of the wrong type or range,
    or time bins that are not increasing; ``str(err)`` names the file (or ``codec``) and the
    field. A checkpoint whose codec is bad raises ``CheckpointError`` instead, naming the
    checkpoint file."""

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.path = self.what


class ParameterError(MidilstmError, ValueError):
    """A run or notebook parameter with a wrong type, range or combination.

    Raised when a config (``ModelConfig``, ``TrainConfig``, ``SamplingConfig``, a reading
    ``Selection``), a notebook's parameters or a command-line option is given a value it cannot
    use; ``str(err)`` is ``"parameter <name>: <reason>"``."""

    def __init__(self, name, reason: str):
        super().__init__(f"parameter {name}", reason)
        self.name = str(name)


class RunDirError(MidilstmError, RuntimeError):
    """A run directory that cannot be used as asked: locked by another run, already holding a
    run, or with inputs that are missing or were not made together. Raised by ``RunDir``'s
    methods (the notebooks call them first); ``str(err)`` names the directory and, for missing
    or stale inputs, the notebook to re-run."""

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.path = self.what


class CacheError(MidilstmError, ValueError):
    """A cache folder that cannot be used: someone else's, writable by others without being
    declared shared, not creatable, or with a secret that is not a secret. Raised by the corpus
    reader's cache (``midilstm.cache``) before it reads or writes an entry; ``str(err)`` names
    the folder (or file) and says how to fix it."""

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.path = self.what
