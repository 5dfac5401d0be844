"""A faithful port of the lesson's method, used only as the benchmark's baseline.

"The lesson" is the tutorial this course grew from: a PyTorch LSTM that reads one MIDI piece,
turns each note event into three one-hot vectors (pitch, velocity, a coarse time class), learns
to predict the next event from a sliding window of the previous 30, and improvises by sampling
one event at a time, re-running the whole window for each new event (``docs/lesson.md`` tells
it in full). Its algorithm is reproduced here with only its crashes fixed:

* every event becomes one dense float64 one-hot "slot" of ``sum(codec.sizes)`` numbers
  (89 pitches + 128 velocities + (n_time_bins + 1) time classes);
* a window of 30 slots predicts the 31st event; the windows are materialised as one dense
  float64 numpy array (the lesson's ``np.array(X, dtype=float)``) and then copied to a float32
  tensor (its ``torch.FloatTensor(...)``), so memory is ``windows x 30 x width x (8 + 4)``
  bytes at the peak;
* ``LSTM(width, 128)`` -> dropout 0.2 -> output of the *last* step only -> ``Linear(128, width)``
  -> three log-softmax heads; loss = sum of the three ``NLLLoss`` (batch means);
* Adam at 1e-3, batch 30, a shuffling ``DataLoader`` (without workers: the lesson's
  ``num_workers=4`` only added process overhead, and dropping it favours the reference);
* generation re-runs the whole 30-event window for every new event and samples each head with
  ``torch.multinomial``, then slides the window by one.

Fixed crashes / deliberate deviations (all of them make the reference faster or fairer, never
slower): ``hidden_size1`` -> the LSTM's zero initial state, ``loss.item()`` instead of
``loss.data.numpy()[0]``, ``multinomial(num_samples=1)``, ``log_softmax(dim=-1)``; evaluation
and generation run under ``torch.no_grad()``; windows are gathered with numpy fancy indexing
instead of Python lists (same array, same memory, built faster).

The encoding is midilstm's ``EventCodec`` so both sides predict exactly the same classes.
The validation set is midilstm's: the held-out contiguous tail from
``midilstm.data.split_pieces`` (val_fraction 0.1). A reference validation window is a window
whose *target* lies in that tail (its inputs may reach back into the training part); we use the
same targets as ``midilstm.train.evaluate`` (every event of the tail except its first, which
evaluate has no context for), so both report the mean over the same targets of the summed
three heads' NLL in nats.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

WINDOW = 30  # the lesson's n_prev
BATCH_SIZE = 30
LR = 1e-3
HIDDEN = 128


def one_hot_slots(codes: np.ndarray, sizes) -> np.ndarray:
    """(n, 3) codes -> (n, sum(sizes)) dense float64 one-hot slots (the lesson's ``dataset``)."""
    codes = np.asarray(codes, dtype=np.int64)
    slots = np.zeros((len(codes), sum(sizes)), dtype=float)
    rows = np.arange(len(codes))
    offset = 0
    for i, n in enumerate(sizes):
        slots[rows, offset + codes[:, i]] = 1.0
        offset += n
    return slots


def dense_windows(codes: np.ndarray, sizes, targets: np.ndarray):
    """Windows for the given target positions: X (m, 30, width) float32 tensor, Y (m, 3) long.

    Like the lesson, the windows are first one dense float64 array and then a float32 copy.
    """
    slots = one_hot_slots(codes, sizes)
    index = targets[:, None] - WINDOW + np.arange(WINDOW)  # (m, 30) positions of the inputs
    x64 = slots[index]  # np.array(X, dtype=float): m x 30 x width float64
    x = torch.FloatTensor(x64)  # the lesson's float32 copy
    del x64, slots
    y = torch.as_tensor(np.asarray(codes)[targets], dtype=torch.long)
    return x, y


def split_targets(n_events: int, n_train: int):
    """Target positions: training targets lie in [30, n_train); validation targets are the
    held-out tail except its first event, i.e. [n_train + 1, n_events) -- the same targets as
    ``midilstm.train.evaluate`` on the tail."""
    train = np.arange(WINDOW, n_train)
    val = np.arange(max(n_train + 1, WINDOW), n_events)
    return train, val


class LessonLSTM(nn.Module):
    """The lesson's LSTMNetwork: last-step output -> Linear -> three log-softmax heads."""

    def __init__(self, sizes, hidden_size: int = HIDDEN):
        super().__init__()
        self.sizes = tuple(int(s) for s in sizes)
        width = sum(self.sizes)
        self.lstm = nn.LSTM(width, hidden_size, 1, batch_first=True)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(hidden_size, width)

    def forward(self, x):
        output, _ = self.lstm(x)  # zero initial state (the lesson's initHidden)
        output = self.dropout(output)[:, -1, ...]
        out = self.fc(output)
        return tuple(F.log_softmax(part, dim=-1) for part in out.split(self.sizes, dim=-1))


def criterion(outputs, target):
    return sum(F.nll_loss(o, target[:, i]) for i, o in enumerate(outputs))


@torch.no_grad()
def evaluate(model: LessonLSTM, loader) -> float:
    """Mean over validation targets of the summed three heads' NLL (nats per event)."""
    model.eval()
    total, count = 0.0, 0
    for x, y in loader:
        outputs = model(x)
        total += sum(F.nll_loss(o, y[:, i], reduction="sum").item() for i, o in enumerate(outputs))
        count += len(y)
    return total / max(count, 1)


def train(codes: np.ndarray, n_train: int, sizes, epochs: int, *, seed: int = 0,
          on_epoch=None, max_batches: int | None = None) -> dict:
    """Train the lesson's way on one piece's codes, the first ``n_train`` of which are training.

    Returns ``{"model", "history", "best_nll", "best_epoch", "seconds_to_best", "setup_s"}``;
    times are wall-clock seconds from the start of this call (window building included).
    ``max_batches`` stops after that many optimiser steps (for memory measurements).
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    train_t, val_t = split_targets(len(codes), n_train)
    x, y = dense_windows(codes, sizes, train_t)
    vx, vy = dense_windows(codes, sizes, val_t)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(TensorDataset(x, y), batch_size=BATCH_SIZE, shuffle=True,
                              num_workers=0, generator=generator)
    val_loader = DataLoader(TensorDataset(vx, vy), batch_size=BATCH_SIZE, shuffle=False,
                            num_workers=0)
    model = LessonLSTM(sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    setup_s = time.perf_counter() - start
    history, best = [], {"best_nll": float("inf"), "best_epoch": 0, "seconds_to_best": None}
    steps = 0
    for epoch in range(epochs):
        model.train()
        epoch_start = time.perf_counter()
        losses = []
        for xb, yb in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            steps += 1
            if max_batches is not None and steps >= max_batches:
                break
        if max_batches is not None and steps >= max_batches:
            break
        val_nll = evaluate(model, val_loader)
        now = time.perf_counter() - start
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_nll": val_nll,
                  "seconds": time.perf_counter() - epoch_start, "elapsed_s": now}
        history.append(record)
        if val_nll < best["best_nll"]:
            best = {"best_nll": val_nll, "best_epoch": epoch + 1, "seconds_to_best": now}
        if on_epoch:
            on_epoch(record)
    return {"model": model, "history": history, "setup_s": setup_s, "steps": steps, **best}


@torch.no_grad()
def generate(model: LessonLSTM, primer_codes: np.ndarray, n_events: int, seed: int = 0) -> np.ndarray:
    """The lesson's loop: run the whole 30-slot window, sample each head with multinomial,
    append the sampled slot and drop the oldest. Returns the (n_events, 3) sampled codes."""
    torch.manual_seed(seed)
    model.eval()
    sizes = model.sizes
    x = one_hot_slots(primer_codes[-WINDOW:], sizes)[None]  # (1, 30, width) float64
    out = np.empty((n_events, 3), np.int64)
    for step in range(n_events):
        xx = torch.FloatTensor(np.array(x, dtype=float))
        a, b, c = model(xx)
        ind = [int(torch.multinomial(h.view(-1).exp(), 1)) for h in (a, b, c)]
        out[step] = ind
        slot = np.zeros(sum(sizes), dtype=int)
        slot[ind[0]] = 1
        slot[sizes[0] + ind[1]] = 1
        slot[sizes[0] + sizes[1] + ind[2]] = 1
        x = np.concatenate((x, slot[None, None]), 1)[:, 1:, :]
    return out
