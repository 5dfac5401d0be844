"""The LSTM cell written from its equations computes what torch.nn.LSTM computes."""
import pytest
import torch

from helpers_model import fitted_codec, pattern_events, tiny_model
from helpers_model import one_thread  # noqa: F401  (autouse: one torch thread)
from midilstm.lstm_cell import layer_weights, lstm_cell, run_lstm


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
def test_same_outputs_and_states_as_torch(layers, batch_first, with_state):
    torch.manual_seed(layers)
    lstm = torch.nn.LSTM(5, 7, layers, batch_first=batch_first).double().eval()
    x = torch.randn((3, 11, 5) if batch_first else (11, 3, 5), dtype=torch.float64)
    state = ((torch.randn(layers, 3, 7, dtype=torch.float64),
              torch.randn(layers, 3, 7, dtype=torch.float64)) if with_state else None)
    with torch.no_grad():
        expected, (h, c) = lstm(x, state)
        mine, (my_h, my_c) = run_lstm(lstm, x, state)
    for a, b in ((mine, expected), (my_h, h), (my_c, c)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("sounding_input", [True, False])
def test_the_models_own_lstm_in_float32(sounding_input):
    codec = fitted_codec(pattern_events(4))
    model = tiny_model(codec, num_layers=2, sounding_input=sounding_input)
    codes = torch.as_tensor(codec.encode(pattern_events(4)))[None]
    with torch.no_grad():
        x, _ = model.inputs(codes)  # the classes, and with sounding_input the sounding pitches
        expected, _ = model.lstm(x)
        mine, _ = run_lstm(model.lstm, x)
    torch.testing.assert_close(mine, expected, atol=1e-6, rtol=0)


def test_one_step_by_the_equations():
    # hidden 1, input 1: every gate is one number, worked out by hand
    lstm = torch.nn.LSTM(1, 1)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.tensor([[1.0], [2.0], [3.0], [4.0]]))  # i, f, g, o
        lstm.weight_hh_l0.zero_()
        lstm.bias_ih_l0.zero_()
        lstm.bias_hh_l0.copy_(torch.tensor([0.0, 0.0, 0.0, -1.0]))
        h, c = lstm_cell(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.tensor([[2.0]]),
                         *layer_weights(lstm, 0))
    sig = lambda v: 1 / (1 + torch.exp(torch.tensor(v)).reciprocal())  # noqa: E731
    i, f, g, o = sig(0.5), sig(1.0), torch.tanh(torch.tensor(1.5)), sig(1.0)
    expected_c = f * 2.0 + i * g
    torch.testing.assert_close(c[0, 0], expected_c)
    torch.testing.assert_close(h[0, 0], o * torch.tanh(expected_c))


def test_the_hand_lstm_trains_like_torchs():
    # The same start weights, the same batches and optimiser: the gradients through the
    # equations are torch's (float64, so rounding cannot hide a wrong gate).
    from midilstm.lstm_cell import HandLSTM
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 7, batch_first=True).double()
    hand = HandLSTM(lstm)
    start = lstm.weight_ih_l0.detach().clone()
    assert [n for n, _ in hand.named_parameters()] == [n for n, _ in lstm.named_parameters()]
    x, target = torch.randn(4, 9, 5, dtype=torch.float64), torch.randn(4, 9, 7, dtype=torch.float64)
    optimisers = [torch.optim.Adam(m.parameters(), lr=0.05) for m in (lstm, hand)]
    for _ in range(5):
        for module, optimiser in zip((lstm, hand), optimisers):
            optimiser.zero_grad()
            ((module(x)[0] - target) ** 2).mean().backward()
            optimiser.step()
    for (name, a), (_, b) in zip(lstm.named_parameters(), hand.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0, msg=name)
    assert (hand.weight_ih_l0 - start).abs().max() > 1e-2  # and both did learn
    with pytest.raises(ValueError, match="one layer, not 2"):
        HandLSTM(torch.nn.LSTM(5, 7, 2))
