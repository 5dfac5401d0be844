"""The lesson's network: an LSTM over encoded events with three log-softmax heads.

Input at step t is the event (pitch, velocity, time class); output is the log-probability of
each class of the *next* event, one head per component. By default this is exactly the lesson's
model: one-hot inputs (89 + 128 + 12 numbers), one LSTM layer of 128 units, dropout 0.2, one
linear layer split into the three heads.

One-hot input times a weight matrix selects one column of the matrix per component, so
``W @ onehot`` is the same as adding three embedding rows. ``input_mode="embedding"`` makes
that explicit with learned, smaller embedding tables.

With ``sounding_input`` (the default) the network also reads which pitches are sounding after
each event (``midilstm.sounding``): 89 more 0/1 inputs (with embeddings, their sum through a
learned ``embedding_dim``-wide table, as for the classes). Without them it must count its own
note-ons and note-offs, and over a long improvisation it loses count and stops ending notes.
With ``key_input`` (the default) it also reads the key profile of the notes struck lately: 12
shares of the pitch classes. The model's state is therefore ``(lstm_state, held)``: the LSTM's
``(h, c)`` and what holds after the last event read (``sounding.Held``: the pitches sounding,
the key counts), so that a sequence read in chunks (or generation) goes on where it stopped.
"""
from __future__ import annotations

import contextlib
import importlib
import reprlib
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .checks import is_int, is_number
from .constants import INPUT_MODES, MAX_CLASSES, MAX_EMBEDDING, MAX_HIDDEN, MAX_LAYERS
from .errors import ParameterError
from .sounding import N_PITCH_CLASSES, Held, key_profiles, key_shares, sounding_flags


# Each architecture's module and class, imported only when built.
ARCHITECTURES = {"lstm": "midilstm.model:NoteLSTM"}


def build(config: "ModelConfig") -> nn.Module:
    """The network ``config`` describes, freshly initialised (under ``torch.device("meta")``:
    shapes only, no memory)."""
    module, name = ARCHITECTURES[config.arch].split(":")
    return getattr(importlib.import_module(module), name)(config)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (saved inside checkpoints)."""

    sizes: tuple[int, int, int]  # classes per head: pitch, velocity, time (from the codec)
    arch: str = "lstm"  # which network (``ARCHITECTURES``); the fields below size it
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.2
    input_mode: str = "one_hot"  # or "embedding"
    embedding_dim: int = 32  # per component, only for input_mode="embedding"
    sounding_input: bool = True  # also read which pitches sound (False: the lesson's inputs)
    key_input: bool = True  # also read the key profile of the recent notes (False: the lesson's)

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ParameterError("arch", f"must be one of {', '.join(map(repr, ARCHITECTURES))}, "
                                         f"not {reprlib.repr(self.arch)}")
        if self.input_mode not in INPUT_MODES:
            raise ParameterError("input_mode",
                                 f"must be 'one_hot' or 'embedding', not {self.input_mode!r}")
        sizes = self.sizes
        if (not isinstance(sizes, (list, tuple)) or len(sizes) != 3
                or not all(is_int(n) and 1 <= n <= MAX_CLASSES for n in sizes)):
            raise ParameterError("sizes", f"must be three class counts in 1..{MAX_CLASSES}, "
                                          f"not {reprlib.repr(sizes)}")
        for name, top in (("hidden_size", MAX_HIDDEN), ("num_layers", MAX_LAYERS),
                          ("embedding_dim", MAX_EMBEDDING)):
            value = getattr(self, name)
            if not is_int(value) or not 1 <= value <= top:
                raise ParameterError(name, f"must be an integer in 1..{top}, "
                                           f"not {reprlib.repr(value)}")
        if not is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise ParameterError("dropout", f"must be a number in [0, 1), "
                                            f"not {reprlib.repr(self.dropout)}")
        for name in ("sounding_input", "key_input"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(name, f"must be true or false, "
                                           f"not {reprlib.repr(getattr(self, name))}")
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))

    def to_dict(self) -> dict:
        return asdict(self)


class NoteLSTM(nn.Module):
    """(batch, time, 3) integer codes -> three (batch, time, classes) log-probabilities."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        if config.input_mode == "embedding":
            self.embeddings = nn.ModuleList(nn.Embedding(n, config.embedding_dim)
                                            for n in config.sizes)
            input_size = 3 * config.embedding_dim
        else:
            self.embeddings = None
            input_size = sum(config.sizes)
        self.sounding_embedding = None
        if config.sounding_input and config.input_mode == "embedding":
            self.sounding_embedding = nn.Linear(config.sizes[0], config.embedding_dim, bias=False)
            input_size += config.embedding_dim  # the sum of the sounding pitches' rows
        elif config.sounding_input:
            input_size += config.sizes[0]  # one 0/1 input per pitch
        if config.key_input:
            input_size += N_PITCH_CLASSES  # the shares of the pitch classes lately struck
        self.lstm = nn.LSTM(input_size, config.hidden_size, config.num_layers, batch_first=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, sum(config.sizes))

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (..., 3) -> LSTM input: concatenated one-hots, or concatenated embeddings."""
        if self.embeddings is None:
            return torch.cat([F.one_hot(codes[..., i], n).float()
                              for i, n in enumerate(self.config.sizes)], dim=-1)
        return torch.cat([emb(codes[..., i]) for i, emb in enumerate(self.embeddings)], dim=-1)

    def inputs(self, codes: torch.Tensor, before: Held | None = None):
        """The LSTM's input for codes (batch, time, 3): the classes (``embed``), then, with
        ``sounding_input``, the pitches sounding after each event, and with ``key_input`` the
        key profile (``midilstm.sounding``). ``before``: what held before the first event
        (``Held`` of (batch, pitches) bools and (batch, 12) counts; None or None fields:
        nothing). Returns ``(inputs, Held after the last event)``."""
        x = self.embed(codes)
        before = before or Held(None, None)
        parts, after = [x], Held(None, None)
        if self.config.sounding_input:
            flags = sounding_flags(codes, self.config.sizes[0], before.sounding)
            held = flags.to(x.dtype)
            parts.append(held if self.sounding_embedding is None
                         else self.sounding_embedding(held))
            after = after._replace(sounding=flags[:, -1])
        if self.config.key_input:
            counts = key_profiles(codes, before.key)
            parts.append(key_shares(counts).to(x.dtype))
            after = after._replace(key=counts[:, -1])
        return torch.cat(parts, dim=-1), after

    def forward(self, codes: torch.Tensor, state=None):
        """Returns ``(log_probs, state)``; ``log_probs`` is a tuple (pitch, velocity, time) and
        ``state`` is ``(lstm_state, Held after the last event)`` (in the ``state`` given, either
        may be None: a fresh start)."""
        lstm_state, before = state if state is not None else (None, None)
        x, after = self.inputs(codes, before)
        out, lstm_state = self.lstm(x, lstm_state)
        logits = self.head(self.dropout(out)).float()  # float32 log-probs under autocast too
        return tuple(F.log_softmax(part, dim=-1)
                     for part in logits.split(self.config.sizes, dim=-1)), (lstm_state, after)

    def input_tables(self) -> list[torch.Tensor]:
        """Per component, the first LSTM layer's input projection of every class.

        Row c of table i is ``W_ih @ x`` for an input whose component i is class c (and the
        others zero), so the projection of a whole event is a sum of three rows. Generation
        uses this to step the network with lookups instead of matrix products. With
        ``sounding_input`` a table follows whose row p is what a sounding pitch p adds, and with
        ``key_input`` one whose row k is what a share of 1 of pitch class k adds.
        """
        weight = self.lstm.weight_ih_l0  # (4 * hidden, input_size)
        tables, start = [], 0
        for i, n in enumerate(self.config.sizes):
            width = n if self.embeddings is None else self.config.embedding_dim
            block = weight[:, start:start + width]
            vectors = torch.eye(n) if self.embeddings is None else self.embeddings[i].weight
            tables.append(vectors @ block.T)
            start += width
        if self.config.sounding_input:
            vectors = (torch.eye(self.config.sizes[0]) if self.sounding_embedding is None
                       else self.sounding_embedding.weight.T)
            width = vectors.shape[1]
            tables.append(vectors @ weight[:, start:start + width].T)
            start += width
        if self.config.key_input:
            tables.append(weight[:, start:].T)
        return tables


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch's CPU thread count set to ``n`` inside the block (``None``: left as it is), and
    restored after. One thread keeps this small network fast on a busy machine: with more,
    OpenMP's threads spin-wait for each other (``bench/threads.py``)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
