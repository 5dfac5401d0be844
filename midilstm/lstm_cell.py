"""An LSTM cell written out from its equations, with torch.nn.LSTM's weights.

At each step the cell reads the input ``x`` and its two states, the hidden state ``h`` (what it
shows the next layer) and the cell state ``c`` (its memory), and computes four gates from one
matrix product each for ``x`` and ``h``:

    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)    input gate:  how much new to write
    f = sigmoid(W_if x + b_if + W_hf h + b_hf)    forget gate: how much memory to keep
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)       candidate:   what could be written
    o = sigmoid(W_io x + b_io + W_ho h + b_ho)    output gate: how much memory to show
    c' = f * c + i * g
    h' = o * tanh(c')

``torch.nn.LSTM`` stores the four gates' weights stacked in this order (i, f, g, o):
``weight_ih_l{k}`` is (4 * hidden, inputs), ``weight_hh_l{k}`` (4 * hidden, hidden), and the
two biases (4 * hidden,). ``run_lstm`` uses exactly those tensors, so it gives the same outputs
as the module (a test checks it); it is for reading, not speed. ``HandLSTM`` gives the equations
weights of their own, so that they can be trained in place of ``nn.LSTM`` (notebook 03 does).
"""
from __future__ import annotations

import torch
from torch import nn


def lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """One step: input ``x`` (batch, inputs), states ``h``, ``c`` (batch, hidden) -> new
    ``h, c``."""
    gates = x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh  # (batch, 4 * hidden)
    i, f, g, o = gates.chunk(4, dim=-1)  # torch's order: input, forget, cell candidate, output
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    h = o * torch.tanh(c)
    return h, c


def layer_weights(lstm: nn.LSTM, layer: int) -> tuple:
    """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of one layer of a ``torch.nn.LSTM``."""
    return tuple(getattr(lstm, f"{name}_l{layer}")
                 for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def run_lstm(lstm: nn.LSTM, x, state=None):
    """What ``lstm(x, state)`` computes, one step and one layer at a time (no dropout between
    layers: as the module in eval mode). ``x`` is (batch, time, inputs) if ``lstm.batch_first``,
    else (time, batch, inputs). Returns ``(outputs of the last layer, (h, c))`` like the module."""
    if not lstm.batch_first:
        x = x.transpose(0, 1)
    batch, steps, _ = x.shape
    zeros = x.new_zeros(lstm.num_layers, batch, lstm.hidden_size)
    h0, c0 = state if state is not None else (zeros, zeros)
    layer_input, h_last, c_last = x, [], []
    for layer in range(lstm.num_layers):
        weights = layer_weights(lstm, layer)
        h, c = h0[layer], c0[layer]
        outputs = []
        for t in range(steps):
            h, c = lstm_cell(layer_input[:, t], h, c, *weights)
            outputs.append(h)
        layer_input = torch.stack(outputs, dim=1)  # this layer's h at every step feeds the next
        h_last.append(h)
        c_last.append(c)
    out = layer_input if lstm.batch_first else layer_input.transpose(0, 1)
    return out, (torch.stack(h_last), torch.stack(c_last))


class HandLSTM(nn.Module):
    """``run_lstm`` as a module with parameters of its own, starting from ``lstm``'s: a stand-in
    for a one-layer ``nn.LSTM`` that trains the equations above (slowly: a Python loop a step).
    More layers would need the dropout ``nn.LSTM`` puts between them, which it does not have."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        if lstm.num_layers != 1:
            raise ValueError(f"HandLSTM stands in for one layer, not {lstm.num_layers}")
        self.num_layers, self.hidden_size = lstm.num_layers, lstm.hidden_size
        self.batch_first = lstm.batch_first
        for name, weight in lstm.named_parameters():  # weight_ih_l0, weight_hh_l0, bias_ih_l0, ...
            self.register_parameter(name, nn.Parameter(weight.detach().clone()))

    def forward(self, x, state=None):
        return run_lstm(self, x, state)
