"""Numbers that the MIDI standard or the lesson fixes, in one place."""
import math

# The lesson's pitch range: 89 classes for MIDI pitches 24 (C1) .. 112 (E8), both included.
PITCH_LOW = 24
PITCH_HIGH = 112
N_PITCHES = PITCH_HIGH - PITCH_LOW + 1

# MIDI velocities are 0..127; a note_on with velocity 0 is a note-off.
N_VELOCITIES = 128

# Channels are 0-based in code (mido); the General MIDI drum channel "10" is index 9.
DRUM_CHANNEL = 9

# Tempos outside these bounds are legal but odd: read as written, with a warning in the report.
MIN_BPM = 1.0
MAX_BPM = 2000.0

# Writing: a standard resolution and tempo unless the caller asks otherwise.
DEFAULT_PPQ = 480
DEFAULT_BPM = 120.0
MICROSECONDS_PER_MINUTE = 60_000_000
# A set_tempo message holds at most 0xFFFFFF microseconds a beat: no slower tempo can be
# written (3.5763 bpm, rounded up to four decimals).
MIN_WRITABLE_BPM = math.ceil(MICROSECONDS_PER_MINUTE / 0xFFFFFF * 1e4) / 1e4

# Where torch may run: "auto" picks CUDA when present, else the CPU.
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"

# Sane bounds on a model (the lesson's: 128 units, 1 layer), checked by ModelConfig, so that a
# tampered checkpoint or a typo cannot ask for gigabytes.
# Each network ModelConfig.arch may name: its module and class, imported only when built.
ARCHITECTURES = {"lstm": "midilstm.lstm:NoteLSTM",
                 "transformer": "midilstm.transformer:NoteTransformer"}
MAX_HIDDEN = 4096
MAX_LAYERS = 8
MAX_EMBEDDING = 1024
MAX_CONTEXT = 4096  # events a transformer looks back
MAX_CLASSES = 4096
INPUT_MODES = ("one_hot", "embedding")

# How the codec places its time bins, and at most how many (codec.json, the parameter table).
TIME_STRATEGIES = ("uniform", "log", "quantile")
MAX_TIME_BINS = 1024

# Bounds of generation's texture limits (SamplingConfig, the parameter table, the codec).
MAX_NOTE_S = 3600.0  # the longest note limit one may set, in seconds
MAX_POLYPHONY = 128  # one note per MIDI key at the most
# Saved before the codec measured its training music: the old fixed rule, no polyphony limit.
FALLBACK_MAX_NOTE_S = 5.0
