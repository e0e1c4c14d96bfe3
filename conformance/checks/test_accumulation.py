"""Accumulation safety: a trainer that backwards each step's ``total`` at
once (gradient accumulation, rollout state detached between steps) works for
1..N steps with one loss object: no backward through a freed graph, no graph
kept across calls, and the accumulated gradients are the sum of the per-step
closed-form gradients."""

from __future__ import annotations

import pytest
import torch

from conformance import oracle
from conformance.adapter import RegularizationSpec, StepOutputLossAdapter
from conformance.assertions import assert_close, assert_no_error
from conformance.cases import main_case
from conformance.corrector import SuiteStep, correct, model
from conformance.harness import describe, run_loss
from conformance.requirements import enforces

PROP = "accumulation safety (backward per step)"


@enforces("ACCUM-1", "CONV-HYGIENE-1")
@pytest.mark.parametrize("n_steps", [1, 2, 4], ids=lambda n: f"steps-{n}")
def check_backward_each_step(adapter: StepOutputLossAdapter, n_steps: int) -> None:
    case = main_case()
    spec = case.spec(exclude=("q_2",), regularization=RegularizationSpec("MSE", weight=0.7))
    inputs = describe(spec, case.id, n_steps=n_steps)
    norm = spec.normalizer
    step_module = SuiteStep(case.names, case.corrected, norm.means, norm.stds)
    loss = adapter.build_loss(spec)
    state = {k: v.clone() for k, v in case.target.items()}
    states, targets = [], []
    for i in range(n_steps):
        target = {k: v + 0.1 * (i + 1) * norm.stds[k] for k, v in case.target.items()}
        states.append(state)
        targets.append(target)
        output, uncorrected = step_module(state)
        result = run_loss(loss, output, uncorrected, target, i)
        assert_no_error(
            result.total.backward, prop=PROP, what=f"total.backward() at step {i}", inputs=inputs
        )
        state = {k: v.detach() for k, v in output.items()}

    gain64 = step_module.gain.detach().double().requires_grad_(True)
    theta64 = step_module.corrector.theta.detach().double().requires_grad_(True)
    expected = [torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)]
    for i, (s, t) in enumerate(zip(states, targets)):
        raw = model({k: v.double() for k, v in s.items()}, gain64, norm.means, norm.stds)
        out64, unc64 = correct(raw, theta64, case.corrected)
        value = oracle.total(spec, out64, unc64, t, i)
        g_gain, g_theta = torch.autograd.grad(value, [gain64, theta64])
        expected = [expected[0] + g_gain, expected[1] + g_theta]
    for name, param, want in [
        ("gain (model parameter)", step_module.gain, expected[0]),
        ("theta (corrector parameter)", step_module.corrector.theta, expected[1]),
    ]:
        assert_close(
            param.grad,
            want,
            prop=PROP,
            quantity=f"accumulated gradient of {name}",
            inputs=inputs,
            meaning="sum over steps of the closed-form per-step gradients",
            rtol=1e-4,
            atol=1e-7,
        )
