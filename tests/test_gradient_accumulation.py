"""Both corrector features under ``use_gradient_accumulation=True``, 1 to 4 steps.

With accumulation each optimized step backwards its own ``result.total()``
at once and the rollout state is detached between steps, so the batch
gradient is the sum of each step's gradient with its input state held fixed.
"""

import copy

import pytest
import torch
from train_helpers import (
    CORRECTED,
    OUT,
    SpyStep,
    batch,
    config,
    grads,
    make_step,
    normalizer,
    stepper,
)

from reference.corrector.loss import build_step_output_loss
from reference.loss_config import StepLossConfig
from reference.step_output import is_detached

TOL = dict(rtol=1e-5, atol=1e-7)
FEATURES = dict(pre=["q_1"], reg_weight=0.5, decay=0.5)


def _independent_step_gradients(step, cfg, data, inputs):
    """Per step ``i``: the loss and gradient of step ``i`` alone, from
    ``inputs[i]`` (a detached state), with a fresh loss object."""
    step_loss = cfg.loss.build(step.out_names, normalizer())
    loss = build_step_output_loss(cfg.corrector_loss, step_loss)
    params = list(step.parameters())
    results = []
    for i, input in enumerate(inputs):
        so = step.step(input, detach_uncorrected=False)
        result = loss(so, {n: data[n][:, i + 1] for n in OUT}, step=i)
        g = torch.autograd.grad(result.total(), params)
        results.append((result, g))
    return results


@pytest.mark.parametrize("n_steps", [1, 2, 3, 4])
def test_accumulated_gradient_is_the_sum_of_independent_step_gradients(n_steps):
    data = batch(10 + n_steps, n_time=n_steps + 1)
    cfg = config(accumulate=True, **FEATURES)
    spy = SpyStep(make_step())
    frozen = copy.deepcopy(spy.inner)  # the weights before the update
    out = stepper(cfg, spy).train_on_batch(data)  # no double backward: it returns

    # rollout state is detached between steps (and is the corrected output)
    for i in range(1, n_steps):
        assert is_detached(spy.inputs[i])
        for n in OUT:
            assert torch.equal(spy.inputs[i][n], spy.outputs[i - 1].output[n].detach())

    inputs = [{n: v.detach() for n, v in x.items()} for x in spy.inputs]
    independent = _independent_step_gradients(frozen, cfg, data, inputs)

    # per-step losses and penalties survive accumulation
    for i, (result, _) in enumerate(independent):
        torch.testing.assert_close(out.metrics[f"loss_step_{i}"], result.main.total(), **TOL)
        assert result.regularization is not None and result.regularization > 0
        torch.testing.assert_close(
            out.metrics[f"corrector_regularization_step_{i}"], result.regularization, **TOL
        )
    torch.testing.assert_close(
        out.metrics["loss"], sum(r.total().detach() for r, _ in independent), **TOL
    )

    # the gradient is the sum of the per-step gradients, and non-zero
    expected = [sum(g[k] for _, g in independent) for k in range(len(grads(spy)))]
    for got, want in zip(grads(spy), expected):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("n_steps", [1, 3])
def test_gradient_through_the_correction_survives_accumulation(n_steps):
    """The per-step gradients include the (C' - I) term: computed with
    ``uncorrected`` detached they differ from the accumulated gradient."""
    data = batch(20 + n_steps, n_time=n_steps + 1)
    cfg = config(accumulate=True, **FEATURES)
    spy = SpyStep(make_step())
    frozen = copy.deepcopy(spy.inner)
    stepper(cfg, spy).train_on_batch(data)
    inputs = [{n: v.detach() for n, v in x.items()} for x in spy.inputs]

    step_loss = cfg.loss.build(OUT, normalizer())
    loss = build_step_output_loss(cfg.corrector_loss, step_loss)
    params = list(frozen.parameters())
    total_detached = sum(
        loss(frozen.step(x), {n: data[n][:, i + 1] for n in OUT}, step=i).total()
        for i, x in enumerate(inputs)
    )
    wrong = torch.autograd.grad(total_detached, params)
    assert any(not torch.allclose(a, b, **TOL) for a, b in zip(grads(spy), wrong))


@pytest.mark.parametrize("n_steps", [1, 2, 4])
def test_accumulation_changes_gradients_only_by_truncation(n_steps):
    """Forward values are identical with and without accumulation; the
    gradients agree for one step and differ (truncated BPTT) for more."""
    data = batch(30 + n_steps, n_time=n_steps + 1)
    step_a, step_b = make_step(), make_step()
    acc = stepper(config(accumulate=True, **FEATURES), step_a).train_on_batch(data)
    full = stepper(config(accumulate=False, **FEATURES), step_b).train_on_batch(data)
    assert acc.metrics.keys() == full.metrics.keys()
    for k in acc.metrics:
        torch.testing.assert_close(acc.metrics[k], full.metrics[k], **TOL)
    same = all(torch.allclose(a, b, **TOL) for a, b in zip(grads(step_a), grads(step_b)))
    assert same is (n_steps == 1)


def test_backwarding_the_penalty_separately_would_double_backward():
    """What the single ``result.total()`` accumulation prevents: the main
    loss and the penalty share one graph, so backwarding them one after the
    other frees it under the second."""
    cfg = config(accumulate=True, **FEATURES)
    st = stepper(cfg)
    data = batch(40, n_time=2)
    so = st.step.step({n: data[n][:, 0] for n in [*OUT, "f"]}, detach_uncorrected=False)
    result = st.loss(so, {n: data[n][:, 1] for n in OUT}, step=0)
    st.optimization.zero_grad()
    st.optimization.accumulate_loss(result.main.total())
    assert result.regularization is not None
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        st.optimization.accumulate_loss(result.regularization)


def test_accumulation_keeps_no_graph_between_batches():
    cfg = config(accumulate=True, **FEATURES)
    st = stepper(cfg)
    for seed in range(3):
        out = st.train_on_batch(batch(50 + seed, n_time=4))
        assert all(
            is_detached(so.output) and is_detached(so.uncorrected) for so in out.step_outputs
        )
        assert not out.metrics["loss"].requires_grad
        assert list(out.step_outputs[0].uncorrected) == CORRECTED


def test_plain_step_loss_under_accumulation_matches_per_step_sum():
    """corrector_loss None: accumulation works the same on the pass-through."""
    cfg = config(accumulate=True)
    cfg.loss = StepLossConfig(sqrt_loss_step_decay_constant=1.0)
    data = batch(60, n_time=4)
    spy = SpyStep(make_step())
    frozen = copy.deepcopy(spy.inner)
    out = stepper(cfg, spy).train_on_batch(data)
    inputs = [{n: v.detach() for n, v in x.items()} for x in spy.inputs]
    independent = _independent_step_gradients(frozen, cfg, data, inputs)
    for i, (result, _) in enumerate(independent):
        assert result.regularization is None
        torch.testing.assert_close(out.metrics[f"loss_step_{i}"], result.main.total(), **TOL)
    expected = [sum(g[k] for _, g in independent) for k in range(len(grads(spy)))]
    for got, want in zip(grads(spy), expected):
        torch.testing.assert_close(got, want, **TOL)
