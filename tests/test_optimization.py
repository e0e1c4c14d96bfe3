"""Optimization: when it back-propagates, what it detaches, and its errors."""

import math

import pytest
import torch

from reference.optimization import NonFiniteLossError, Optimization, OptimizationConfig


def _setup(accumulate: bool):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = OptimizationConfig(
        optimizer_type="SGD", lr=0.5, use_gradient_accumulation=accumulate
    ).build([w])
    return w, opt


def test_accumulating_backwards_at_once_and_sums_gradients():
    w, opt = _setup(accumulate=True)
    opt.zero_grad()
    opt.accumulate_loss((w**2).sum())  # grad 2w
    assert w.grad is not None
    torch.testing.assert_close(w.grad, torch.tensor([2.0, -4.0]))
    opt.accumulate_loss((3 * w).sum())  # + 3
    torch.testing.assert_close(w.grad, torch.tensor([5.0, -1.0]))
    assert not opt.get_accumulated_loss().requires_grad
    torch.testing.assert_close(opt.get_accumulated_loss(), torch.tensor(5.0 + 3.0 * -1.0))
    opt.step_weights()  # no second backward: gradients unchanged, weights stepped
    torch.testing.assert_close(w.grad, torch.tensor([5.0, -1.0]))
    torch.testing.assert_close(w.detach(), torch.tensor([1.0 - 2.5, -2.0 + 0.5]))


def test_without_accumulation_one_backward_at_step_weights():
    w, opt = _setup(accumulate=False)
    opt.zero_grad()
    opt.accumulate_loss((w**2).sum())
    opt.accumulate_loss((3 * w).sum())
    assert w.grad is None
    opt.step_weights()
    torch.testing.assert_close(w.grad, torch.tensor([5.0, -1.0]))
    opt.zero_grad()
    assert w.grad is None
    assert opt.get_accumulated_loss() == 0


@pytest.mark.parametrize("accumulate", [True, False])
def test_detach_if_using_gradient_accumulation(accumulate):
    w, opt = _setup(accumulate)
    state = {"x": w * 2}
    out = opt.detach_if_using_gradient_accumulation(state)
    assert out["x"].requires_grad is (not accumulate)
    assert torch.equal(out["x"], state["x"])


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nonfinite_loss_is_a_clear_error(value):
    w, opt = _setup(accumulate=True)
    opt.zero_grad()
    with pytest.raises(NonFiniteLossError, match="type 'NaN' cannot be trained on"):
        opt.accumulate_loss(w.sum() * value)
    assert w.grad is None  # nothing was back-propagated


def test_step_weights_needs_a_loss():
    _, opt = _setup(accumulate=False)
    opt.zero_grad()
    with pytest.raises(RuntimeError, match="before any accumulate_loss"):
        opt.step_weights()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": -1.0}, "lr is -1.0"),
        ({"lr": math.nan}, "lr is nan"),
        ({"optimizer_type": "LBFGS"}, "Unknown optimizer_type 'LBFGS'"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OptimizationConfig(**kwargs)


def test_optimizer_state_round_trips():
    w, opt = _setup(accumulate=False)
    adam = Optimization([w], "Adam", lr=0.1)
    adam.zero_grad()
    adam.accumulate_loss((w**2).sum())
    adam.step_weights()
    w2 = torch.nn.Parameter(w.detach().clone())
    other = Optimization([w2], "Adam", lr=0.1)
    other.load_state(adam.get_state())
    for o in (adam, other):
        o.zero_grad()
    adam.accumulate_loss((w**2).sum())
    other.accumulate_loss((w2**2).sum())
    adam.step_weights()
    other.step_weights()
    assert torch.equal(w, w2)
