"""Training with gradient accumulation (backward per step, rollout state
detached between steps) over 1..4 steps with both features on: no backward
through a freed graph, each step's optimized total (main + penalty) as in
closed form, and gradients equal to the sum of the per-step closed-form
gradients.

What is compared is what accumulation is about -- the per-step totals and the
gradients -- in the contract's neutral terms (``TrainOutcome.step_totals``),
never how the implementation names its metrics (that is
``test_train_metrics.py``)."""

from __future__ import annotations

import pytest
import torch

from conformance.adapter import Capability, RegularizationSpec, StepOutputLossAdapter
from conformance.assertions import assert_close, assert_no_error, fail
from conformance.harness import describe, expected_training, step_totals, training_setup
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "training under gradient accumulation"
REG = RegularizationSpec("MSE", weight=0.7)


@enforces("ACCUM-2")
@requires(Capability.STEPPER, Capability.GRADIENT_ACCUMULATION)
@pytest.mark.parametrize("n_steps", [1, 2, 4], ids=lambda n: f"steps-{n}")
def check_train_accumulation(adapter: StepOutputLossAdapter, n_steps: int) -> None:
    spec, step, batch = training_setup(n_steps, ("q_2",), REG, use_gradient_accumulation=True)
    inputs = describe(spec.loss, "training", n_forward_steps=n_steps, accumulation=True)
    expected = expected_training(spec, step, batch)
    stepper = adapter.build_stepper(spec, step)
    outcome = assert_no_error(
        lambda: stepper.train_on_batch(batch), prop=PROP, what="train_on_batch", inputs=inputs
    )
    assert expected.penalties is not None
    totals = step_totals(outcome, n_steps, with_penalty=True)
    if totals is None or len(totals) != n_steps:
        fail(
            PROP,
            "the adapter reports no per-step totals (TrainOutcome.step_totals)",
            inputs,
            f"{n_steps} totals",
            totals,
        )
    for i, (got, main, pen) in enumerate(zip(totals, expected.main_totals, expected.penalties)):
        assert_close(
            torch.tensor(got),
            main + pen,
            prop=PROP,
            quantity=f"total of step {i}",
            inputs=inputs,
            meaning="main + penalty, closed form on the rollout with state detached between steps",
            rtol=1e-4,
        )
    for name, want in expected.gradients.items():
        assert_close(
            outcome.gradients.get(name),
            want,
            prop=PROP,
            quantity=f"accumulated gradient of {name!r}",
            inputs=inputs,
            meaning="sum over steps of the per-step closed-form gradients",
            rtol=1e-3,
            atol=1e-5 * float(want.abs().max()) + 1e-9,
        )
