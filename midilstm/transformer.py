"""A second architecture: a small causal Transformer over the same inputs and heads as the LSTM.

Where the LSTM squeezes the past into two vectors, a Transformer looks back at the inputs
themselves: each event attends to the last ``context`` events (itself included) through
``num_layers`` pre-norm blocks of ``heads``-headed self-attention and an MLP, ``hidden_size``
wide. Where an event lies is told by ALiBi (Press et al., 2022): each head's attention score
drops linearly with the distance between two events, at its own slope. Nothing depends on an
absolute position, so a model trained on 64-event sequences can improvise for 10,000 events.

The state carried between calls is each block's keys and values of the last ``context - 1``
events (a KV cache). Reading a sequence in chunks therefore gives exactly what reading it whole
gives, and generation steps it one event at a time through ``EventModel.stepper``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .model import EventModel, ModelConfig


class NoteTransformer(EventModel):
    """(batch, time, 3) integer codes -> three (batch, time, classes) log-probabilities."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        width = config.hidden_size
        self.project = nn.Linear(self.input_size, width)
        self.blocks = nn.ModuleList(Block(width, config.heads, config.dropout)
                                    for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(width)
        self.add_heads(width)

    def body(self, x: torch.Tensor, state):
        """``state``: per block, the (keys, values) of up to ``context - 1`` events before
        ``x``, each (batch, heads, events, head width); None: nothing before."""
        x = self.project(x)
        caches = state if state is not None else (None,) * len(self.blocks)
        kept = []
        for block, cache in zip(self.blocks, caches):
            x, keys_values = block(x, cache, self.config.context)
            kept.append(tuple(t[:, :, -(self.config.context - 1):] if self.config.context > 1
                              else t[:, :, :0] for t in keys_values))
        return self.norm(x), tuple(kept)


class Block(nn.Module):
    """Pre-norm self-attention over the last ``context`` events, then a 4x-wide MLP."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm_attention = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.merge = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))
        self.drop = nn.Dropout(dropout)
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)

    def forward(self, x, cache, context: int):
        """``x`` (batch, time, width); ``cache``: (keys, values) of the events before, or None.
        Returns the block's output and the keys and values of every event seen (cache + x)."""
        batch, time, width = x.shape
        q, k, v = (t.view(batch, time, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(self.norm_attention(x)).split(width, dim=-1))
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        bias = attention_bias(self.slopes, time, k.shape[2], context).to(q.dtype)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.merge(attended.transpose(1, 2).reshape(batch, time, width)))
        return x + self.drop(self.mlp(self.norm_mlp(x))), (k, v)


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes: a geometric sequence from 2^(-8/heads) down to 2^-8, so some
    heads look far back and others mostly at the last few events."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])


def attention_bias(slopes: torch.Tensor, queries: int, keys: int, context: int) -> torch.Tensor:
    """(heads, queries, keys) additive scores: the last ``queries`` of ``keys`` events attend
    to themselves and the ``context - 1`` events before them, less by slope x distance; the
    future and anything further back get -inf."""
    query_at = torch.arange(keys - queries, keys, device=slopes.device)[:, None]
    distance = (query_at - torch.arange(keys, device=slopes.device)[None, :]).float()
    allowed = (distance >= 0) & (distance < context)
    bias = -slopes[:, None, None] * distance
    return bias.masked_fill(~allowed, -math.inf)
