"""The model seam: what every network over encoded events shares, and how one is built.

Input at step t is the event (pitch, velocity, time class); output is the log-probability of
each class of the *next* event, one head per component. ``ModelConfig`` describes a network
(``arch`` names the architecture; ``ARCHITECTURES`` maps each to its class) and ``build(config)``
makes it. The course's network is the lesson's LSTM (``midilstm.lstm``); by default it is
the lesson's model: one-hot inputs (89 + 128 + 12 numbers), one LSTM layer of 128 units,
dropout 0.2, one linear layer split into the three heads. ``arch="transformer"`` gives a causal
Transformer over the same inputs and heads instead (``midilstm.transformer``).

``EventModel`` holds what does not depend on the architecture. The inputs: one-hot input times
a weight matrix selects one column of the matrix per component, so ``W @ onehot`` is the same as
adding three embedding rows; ``input_mode="embedding"`` makes that explicit with learned,
smaller tables. With ``sounding_input`` (the default) the network also reads which pitches are
sounding after each event (``midilstm.sounding``): 89 more 0/1 inputs (with embeddings, their
sum through a learned ``embedding_dim``-wide table). Without them it must count its own
note-ons and note-offs, and over a long improvisation it loses count and stops ending notes.
With ``key_input`` (the default) it also reads the key profile of the notes struck lately: 12
shares of the pitch classes. With ``age_input`` (the default) it reads how long each sounding
pitch has sounded: 89 more inputs, ``sounding.age_share`` of its age in events (with
embeddings, their weighted sum through one more table). The heads: dropout and one linear
layer. The model's state is ``(body_state, held)``: the architecture's own (the LSTM's ``(h,
c)``) and what holds after the last event read (``sounding.Held``: the pitches sounding, the
key counts, the ages), so that a sequence
read in chunks (or generation) goes on where it stopped.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import reprlib
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .checks import is_int
from .constants import (ARCHITECTURES, MAX_CLASSES, MAX_EMBEDDING)
from .errors import ParameterError
from .params import check_fields
from .sounding import (N_PITCH_CLASSES, Held, age_share, key_profiles, key_shares, note_ages,
                       sounding_flags)


# The lesson's inputs, the event alone: ``ModelConfig(sizes=..., **LESSON_INPUTS)``.
LESSON_INPUTS = {"sounding_input": False, "key_input": False, "age_input": False}


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
    age_input: bool = True  # also read how long each sounding note has sounded (False: lesson's)
    heads: int = 4  # transformer only: attention heads (they split hidden_size)
    context: int = 128  # transformer only: how many events back each event can see

    def __post_init__(self):
        check_fields(self)  # arch, hidden_size, ...: the parameter table's rules
        sizes = self.sizes
        if (not isinstance(sizes, (list, tuple)) or len(sizes) != 3
                or not all(is_int(n) and 1 <= n <= MAX_CLASSES for n in sizes)):
            raise ParameterError("sizes", f"must be three class counts in 1..{MAX_CLASSES}, "
                                          f"not {reprlib.repr(sizes)}")
        if not is_int(self.embedding_dim) or not 1 <= self.embedding_dim <= MAX_EMBEDDING:
            raise ParameterError("embedding_dim", f"must be an integer in 1..{MAX_EMBEDDING}, "
                                                  f"not {reprlib.repr(self.embedding_dim)}")
        if self.arch == "transformer" and self.hidden_size % self.heads:
            raise ParameterError("heads", f"must divide hidden_size {self.hidden_size}, "
                                          f"not {self.heads}")
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))

    def to_dict(self) -> dict:
        return asdict(self)


class EventModel(nn.Module):
    """What every architecture shares: the inputs it reads for each event and the three heads
    that predict the next one. ``(batch, time, 3)`` integer codes in, three ``(batch, time,
    classes)`` log-probabilities out.

    An architecture subclasses it: its ``__init__`` calls ``super().__init__(config)`` (which
    sets ``self.input_size``), builds its body, then calls ``self.add_heads(width)``; it
    defines ``body(x, state) -> (outputs, state)`` over the input vectors. Generation steps a
    model with ``stepper(n_streams)``: by default one call of ``forward`` per event with the
    state carried; an architecture may give a faster one (the LSTM's is compiled).
    """

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
        self.age_embedding = None
        if config.age_input and config.input_mode == "embedding":
            self.age_embedding = nn.Linear(config.sizes[0], config.embedding_dim, bias=False)
            input_size += config.embedding_dim
        elif config.age_input:
            input_size += config.sizes[0]  # one age share per pitch
        if config.key_input:
            input_size += N_PITCH_CLASSES  # the shares of the pitch classes lately struck
        self.input_size = input_size

    def add_heads(self, width: int) -> None:
        """Dropout, then one linear layer from the body's ``width`` outputs to every class of
        the three heads. Called after the body is built (the order parameters are initialised
        in decides what a seed gives)."""
        self.dropout = nn.Dropout(self.config.dropout)
        self.head = nn.Linear(width, sum(self.config.sizes))

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (..., 3) -> concatenated one-hots, or concatenated embeddings."""
        if self.embeddings is None:
            return torch.cat([F.one_hot(codes[..., i], n).float()
                              for i, n in enumerate(self.config.sizes)], dim=-1)
        return torch.cat([emb(codes[..., i]) for i, emb in enumerate(self.embeddings)], dim=-1)

    def inputs(self, codes: torch.Tensor, before: Held | None = None):
        """The body's input for codes (batch, time, 3): the classes (``embed``), then, with
        ``sounding_input``, the pitches sounding after each event, with ``age_input`` how long
        each has sounded, and with ``key_input`` the key profile (``midilstm.sounding``).
        ``before``: what held before the first event (``Held`` of (batch, pitches) bools,
        (batch, 12) counts and (batch, pitches) ages; None or None fields: nothing). Returns
        ``(inputs, Held after the last event)``."""
        x = self.embed(codes)
        before = before or Held(None, None)
        parts, after = [x], Held(None, None)
        config = self.config
        if config.sounding_input or config.age_input:
            flags = sounding_flags(codes, config.sizes[0], before.sounding)
            after = after._replace(sounding=flags[:, -1])
        if config.sounding_input:
            held = flags.to(x.dtype)
            parts.append(held if self.sounding_embedding is None
                         else self.sounding_embedding(held))
        if config.age_input:
            ages = note_ages(flags, before)
            shares = age_share(ages).to(x.dtype)
            parts.append(shares if self.age_embedding is None else self.age_embedding(shares))
            after = after._replace(age=ages[:, -1])
        if self.config.key_input:
            counts = key_profiles(codes, before.key)
            parts.append(key_shares(counts).to(x.dtype))
            after = after._replace(key=counts[:, -1])
        return torch.cat(parts, dim=-1), after

    def body(self, x: torch.Tensor, state):
        """(batch, time, input_size) -> ((batch, time, width), state): the architecture."""
        raise NotImplementedError

    def forward(self, codes: torch.Tensor, state=None):
        """Returns ``(log_probs, state)``; ``log_probs`` is a tuple (pitch, velocity, time) and
        ``state`` is ``(body_state, Held after the last event)`` (in the ``state`` given, either
        may be None: a fresh start). Reading a sequence in chunks, each with the state the
        last returned, gives what reading it whole gives."""
        body_state, before = state if state is not None else (None, None)
        x, after = self.inputs(codes, before)
        out, body_state = self.body(x, body_state)
        logits = self.head(self.dropout(out)).float()  # float32 log-probs under autocast too
        return tuple(F.log_softmax(part, dim=-1)
                     for part in logits.split(self.config.sizes, dim=-1)), (body_state, after)

    def stepper(self, n_streams: int) -> "TorchStepper":
        """The incremental step generation uses for ``n_streams`` streams at once."""
        return TorchStepper(self, n_streams)


class TorchStepper:
    """Any architecture's incremental step: ``forward`` on one event per stream, with the state
    carried, on a frozen copy of the model (eval mode, no gradients, one CPU thread).

    ``step(codes, sounding_since, key, ages)`` advances every stream by ``codes`` (streams, 3)
    and returns the scores of the next event (streams, classes of the three heads). The model
    keeps its own account of the sounding pitches, their ages and the key, by the rules of
    ``midilstm.sounding``, so the generator's (``sounding_since``, ``key``, ``ages``) are not
    needed here.
    """

    def __init__(self, model: EventModel, n_streams: int):
        self.model = copy.deepcopy(model).cpu().eval()
        self.n_streams, self.state = n_streams, None

    @torch.no_grad()
    def step(self, codes, sounding_since=None, key=None, ages=None):
        with torch_threads(1):
            x = torch.as_tensor(codes, dtype=torch.long)[:, None]
            log_probs, self.state = self.model(x, self.state)
        return torch.cat(log_probs, dim=-1)[:, 0].numpy()


def expected_shapes(config: ModelConfig) -> dict:
    """``{name: shape}`` of every weight of the network ``config`` describes, from building it
    on torch's meta device (shapes only: no memory, no initialisation)."""
    with torch.device("meta"):
        model = build(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}



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
