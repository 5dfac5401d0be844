"""The lesson's network: an LSTM over the event inputs, with the three heads of ``EventModel``.

Training runs ``torch.nn.LSTM`` (``midilstm.lstm_cell`` writes the same cell out from its
equations, for reading). Generation steps it with the weights copied out once, as compiled
loops or matrix products (``midilstm.lstm_step``); ``input_tables`` is what makes that cheap.
"""
from __future__ import annotations

import torch
from torch import nn

from .model import EventModel, ModelConfig


class NoteLSTM(EventModel):
    """(batch, time, 3) integer codes -> three (batch, time, classes) log-probabilities."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.lstm = nn.LSTM(self.input_size, config.hidden_size, config.num_layers,
                            batch_first=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.add_heads(config.hidden_size)

    def body(self, x: torch.Tensor, state):
        return self.lstm(x, state)  # state: (h, c), each (layers, batch, hidden), or None

    def stepper(self, n_streams: int):
        from .lstm_step import LSTMStepper  # numba: only when generating

        return LSTMStepper(self, n_streams)

    def input_tables(self) -> list[torch.Tensor]:
        """Per component, the first LSTM layer's input projection of every class.

        Row c of table i is ``W_ih @ x`` for an input whose component i is class c (and the
        others zero), so the projection of a whole event is a sum of three rows. Generation
        uses this to step the network with lookups instead of matrix products. With
        ``sounding_input`` a table follows whose row p is what a sounding pitch p adds, and with
        ``age_input`` one whose row p is what an age share of 1 of pitch p adds, and with
        ``key_input`` one whose row k is what a share of 1 of pitch class k adds.
        """
        weight = self.lstm.weight_ih_l0  # (4 * hidden, input_size)
        tables, start = [], 0
        for i, n in enumerate(self.config.sizes):
            width = n if self.embeddings is None else self.config.embedding_dim
            block = weight[:, start:start + width]
            vectors = torch.eye(n, device=weight.device) if self.embeddings is None else self.embeddings[i].weight
            tables.append(vectors @ block.T)
            start += width
        for told, embedding in ((self.config.sounding_input, self.sounding_embedding),
                                (self.config.age_input, self.age_embedding)):
            if told:  # one row per pitch: what it adds when sounding, or at an age share of 1
                vectors = (torch.eye(self.config.sizes[0], device=weight.device)
                           if embedding is None else embedding.weight.T)
                width = vectors.shape[1]
                tables.append(vectors @ weight[:, start:start + width].T)
                start += width
        if self.config.key_input:
            tables.append(weight[:, start:].T)
        return tables
