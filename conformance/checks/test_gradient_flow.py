"""Gradients flow through the correction: with either feature on, the
gradient of ``total`` with respect to the pre-correction values and to the
corrector's parameter equals the closed form's, which includes the path
through ``uncorrected`` (the ``(C' - I)`` term). An implementation that
detaches ``uncorrected`` loses it."""

from __future__ import annotations

import pytest
import torch

from conformance import oracle
from conformance.adapter import StepOutputLossAdapter
from conformance.assertions import assert_close, assert_no_error
from conformance.cases import Option, feature_combinations, main_case, pid
from conformance.corrector import SuiteCorrector, correct
from conformance.harness import describe, run_loss
from conformance.requirements import enforces

PROP = "gradient flow through the correction"
STEP = 1


def gradient_tolerance(expected: torch.Tensor) -> dict[str, float]:
    """float32 gradients against float64: relative, plus an absolute floor
    scaled to the tensor's largest entry."""
    return {"rtol": 1e-4, "atol": 1e-5 * float(expected.abs().max()) + 1e-9}


@enforces("GRAD-1")
@pytest.mark.parametrize("features", feature_combinations()[1:], ids=pid)
def check_gradients_through_correction(adapter: StepOutputLossAdapter, features: Option) -> None:
    exclude, reg = features.value
    case = main_case()
    spec = case.spec(exclude=exclude, regularization=reg)
    _, _, target = case.fresh()
    inputs = describe(spec, case.id, step=STEP, corrector="SuiteCorrector(theta=0.3)")
    raw = {k: v.clone().requires_grad_(True) for k, v in case.output.items()}
    corrector = SuiteCorrector(case.corrected)
    output, uncorrected = corrector(raw)
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, STEP)
    assert_no_error(result.total.backward, prop=PROP, what="total.backward()", inputs=inputs)

    def oracle_grads(detach_uncorrected: bool) -> list[torch.Tensor]:
        raw64 = {k: v.detach().double().requires_grad_(True) for k, v in case.output.items()}
        theta64 = corrector.theta.detach().double().requires_grad_(True)
        out64, unc64 = correct(raw64, theta64, case.corrected)
        if detach_uncorrected:
            unc64 = {k: v.detach() for k, v in unc64.items()}
        value = oracle.total(spec, out64, unc64, target, STEP)
        return list(torch.autograd.grad(value, [*raw64.values(), theta64], allow_unused=True))

    expected = oracle_grads(False)
    detached = oracle_grads(True)
    leaves = [*[(f"d total / d raw[{k!r}]", v) for k, v in raw.items()]]
    leaves.append(("d total / d theta (corrector parameter)", corrector.theta))
    for (quantity, leaf), want, wrong in zip(leaves, expected, detached):
        want = torch.zeros_like(leaf, dtype=torch.float64) if want is None else want
        alternatives = {}
        if wrong is not None and not torch.allclose(wrong, want):
            alternatives["the gradient with uncorrected detached"] = wrong
        actual = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        assert_close(
            actual,
            want,
            prop=PROP,
            quantity=quantity,
            inputs=inputs,
            meaning="autograd of the float64 closed form",
            alternatives=alternatives,
            **gradient_tolerance(want),
        )
