"""Which notes are sounding: the piano keys held down after each event, as the network sees them.

In the lesson's stream a note is two events, its note-on and, later, its note-off. To end its
notes, a network that reads only the events must work out from its memory which keys are still
down. The LSTM does that well for the few notes the music holds at once, but over a long
improvisation one missed note-off is never noticed: notes pile up into a wash of held keys and
the network, now far from any state it was trained in, no longer ends them (``05_evaluate``
measures it). So the network is also *told* which pitches sound, as one more input: a 0/1
vector over the pitch classes after each event. It is a function of the events before it, so it
adds no information a perfect memory would not have, and nothing the validation could leak.

``sounding_flags`` is the one rule, used by the model on every sequence it reads; a sequence
that starts inside a piece also needs the keys held down before its first event, which
``held_before`` gives for every position of a piece. Generation keeps the same set as it
samples (``midilstm.step.track_notes``); a test checks the two agree.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


def sounding_flags(codes: torch.Tensor, n_pitches: int,
                   before: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, time, 3) codes -> (batch, time, n_pitches) bools: pitch class ``p`` sounds after
    event ``t`` if the last event on ``p`` up to ``t`` was a note-on (velocity class > 0), or,
    with no event on ``p`` yet, if it sounded ``before`` the first event (batch, n_pitches)."""
    batch, steps, _ = codes.shape
    on = codes[..., 1] > 0
    hit = F.one_hot(codes[..., 0], n_pitches).bool()
    step_index = torch.arange(steps, device=codes.device).view(1, steps, 1)
    last = torch.where(hit, step_index, -1).cummax(dim=1).values  # last event on each pitch
    last_was_on = on.gather(1, last.clamp(min=0).reshape(batch, -1)).view_as(last)
    if before is None:
        before = torch.zeros(batch, n_pitches, dtype=torch.bool, device=codes.device)
    return torch.where(last >= 0, last_was_on, before.bool()[:, None, :])


@torch.no_grad()
def held_before(codes: np.ndarray, n_pitches: int) -> np.ndarray:
    """For one piece's (n, 3) codes, the pitches sounding just before each event: (n, n_pitches)
    bools, row 0 empty. Row ``s`` is the ``before`` of a sequence that starts at event ``s``."""
    after = sounding_flags(torch.as_tensor(np.asarray(codes, np.int64))[None], n_pitches)[0]
    out = np.zeros((len(codes), n_pitches), bool)
    out[1:] = after[:-1].numpy()
    return out

