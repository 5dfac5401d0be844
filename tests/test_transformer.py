"""The second architecture: a causal Transformer behind the same seam as the LSTM. Checked
against attention written out by hand, read in chunks and stepped, trained, saved, loaded and
improvised with, all through the generic code paths (build, train, checkpoint, generate)."""
import math

import numpy as np
import pytest
import torch

from helpers_model import fitted_codec, pattern_events, walk_notes
from helpers_model import one_thread  # noqa: F401  (autouse: one torch thread)
from midilstm.checkpoint import Checkpoint, load_checkpoint
from midilstm.errors import CheckpointError, ParameterError
from midilstm.generate import generate
from midilstm.model import ModelConfig, build
from midilstm.train import TrainConfig, train
from midilstm.transformer import NoteTransformer, alibi_slopes

CODEC = fitted_codec(pattern_events(4))


def transformer(seed=0, **kw):
    kw = {"hidden_size": 16, "num_layers": 2, "heads": 4, "context": 5, **kw}
    torch.manual_seed(seed)
    return build(ModelConfig(sizes=CODEC.sizes, arch="transformer", **kw)).eval()


def random_codes(batch, time, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, n, (batch, time), generator=g) for n in CODEC.sizes], -1)


def by_hand(model, x):
    """The body written out: every query's softmax over the keys it may see, one at a time."""
    width, heads, context = model.config.hidden_size, model.config.heads, model.config.context
    size = width // heads
    slopes = [2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)]
    h = model.project(x)
    for block in model.blocks:
        q, k, v = block.qkv(block.norm_attention(h)).split(width, dim=-1)
        out = torch.zeros_like(h)
        for t in range(h.shape[1]):
            seen = range(max(0, t - context + 1), t + 1)
            for head in range(heads):
                part = slice(head * size, (head + 1) * size)
                scores = torch.stack([(q[:, t, part] * k[:, j, part]).sum(-1) / math.sqrt(size)
                                      - slopes[head] * (t - j) for j in seen], dim=-1)
                weights = torch.softmax(scores, dim=-1)
                out[:, t, part] = sum(weights[:, i, None] * v[:, j, part]
                                      for i, j in enumerate(seen))
        h = h + block.merge(out)
        h = h + block.mlp(block.norm_mlp(h))
    return model.norm(h)


def test_built_from_the_registry_with_the_shared_inputs_and_heads():
    model = transformer()
    assert isinstance(model, NoteTransformer)
    assert model.project.in_features == sum(CODEC.sizes) + 2 * CODEC.sizes[0] + 12  # + sounding,
    # ages, key
    assert model.head.out_features == sum(CODEC.sizes)


def test_alibi_slopes_are_the_papers_geometric_sequence():
    # Press et al.: for 8 heads, 1/2, 1/4, ..., 1/256.
    assert alibi_slopes(8).tolist() == [2.0 ** -i for i in range(1, 9)]


@torch.no_grad()
def test_attention_matches_attention_written_out_by_hand():
    model = transformer()
    x, _ = model.inputs(random_codes(2, 12))
    out, _ = model.body(x, None)
    assert torch.allclose(out, by_hand(model, x), atol=1e-5)


@torch.no_grad()
def test_an_event_sees_only_its_context_and_never_the_future():
    model = transformer(context=3)
    codes = random_codes(1, 10)
    changed = codes.clone()
    changed[0, 4] = (codes[0, 4] + 1) % torch.tensor(CODEC.sizes)
    a, _ = model(codes)
    b, _ = model(changed)
    differs = [not torch.allclose(a[0][0, t], b[0][0, t]) for t in range(10)]
    # Event 4 reaches events 4..6 in the first layer and 4..8 through the second; the key and
    # sounding inputs carry a change further, so only the past is sure to be untouched.
    assert differs[:4] == [False] * 4 and all(differs[4:7])


@torch.no_grad()
def test_reading_in_chunks_and_stepping_equal_reading_whole():
    model = transformer()
    codes = random_codes(3, 23, seed=1)
    whole, _ = model(codes)
    state, chunks = None, []
    for start, stop in ((0, 1), (1, 4), (4, 13), (13, 23)):
        log_probs, state = model(codes[:, start:stop], state)
        chunks.append(torch.cat(log_probs, -1))
    assert torch.allclose(torch.cat(chunks, 1), torch.cat(whole, -1), atol=1e-5)
    stepper = model.stepper(3)
    steps = np.stack([stepper.step(codes[:, t].numpy()) for t in range(23)], axis=1)
    assert np.allclose(steps, torch.cat(whole, -1).numpy(), atol=1e-5)
    body_state, _ = state
    kept_keys = body_state[0][0]  # the first block's keys
    assert kept_keys.shape[2] == model.config.context - 1  # the cache stays bounded


def test_heads_must_divide_the_width():
    with pytest.raises(ParameterError, match="heads: must divide hidden_size 16, not 3"):
        ModelConfig(sizes=CODEC.sizes, arch="transformer", hidden_size=16, heads=3)


def test_trains_saves_loads_and_improvises_through_the_generic_paths(tmp_path):
    events = pattern_events(40)
    codes = CODEC.encode(events)
    config = ModelConfig(sizes=CODEC.sizes, arch="transformer", hidden_size=32, num_layers=1,
                         heads=2, context=16, dropout=0.0)
    path = tmp_path / "transformer.pt"
    checkpoint = train(CODEC, [codes[:256]], [codes[256:]],
                       TrainConfig(epochs=30, batch_size=8, seq_len=32, lr=1e-2, seed=0,
                                   transpose_semitones=0),
                       config, checkpoint_path=path, progress=False)
    val = [h["val"]["nll"] for h in checkpoint.history]
    assert val[0] > 5 and min(val) < 1.0  # the 8-event pattern is learned (nats per event)
    loaded = load_checkpoint(path)
    assert isinstance(loaded.model, NoteTransformer) and loaded.model.config == config
    music = generate(loaded.model, loaded.codec, events[:16], n_events=64, seed=0)[0]
    orphans, left_sounding, _ = walk_notes(music)
    assert orphans == 0 and left_sounding == 0 and len(music) >= 64
    # A learned pattern is continued: the pitches cycle through the bar's four.
    assert set(music["pitch"].tolist()) <= {60, 64, 67, 72}


def test_a_checkpoint_whose_config_disagrees_with_its_weights_names_the_field(tmp_path):
    path = Checkpoint(model=transformer(), codec=CODEC).save(tmp_path / "t.pt")
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["hidden_size"] = 32  # 4 heads still divide it
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"t.pt: model_state.project.weight has shape "
                                              r"\(16, 412\), but model_config.hidden_size 32 "
                                              r"call for \(32, 412\)"):
        load_checkpoint(path)
