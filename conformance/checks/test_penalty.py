"""Corrector regularization: ``weight * mean over corrected channels of
L((output - uncorrected) / std, 0)`` in loss-normalized space, with no step
decay and no per-variable weights; exactly 0 when nothing is corrected."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conformance import oracle
from conformance.adapter import RegularizationSpec, StepOutputLossAdapter
from conformance.assertions import assert_close, fail
from conformance.cases import (
    REGULARIZATION_OPTIONS,
    Case,
    Option,
    main_case,
    nothing_corrected_case,
    one_corrected_case,
    pid,
    standard_cases,
)
from conformance.harness import describe, run_loss
from conformance.requirements import breaking, enforces

PROP = "corrector regularization penalty"
MSE = RegularizationSpec("MSE", weight=0.7)


def _physical(spec, output, uncorrected):  # noqa: ANN001, ANN202
    """What a penalty on physical (not normalized) corrections would give."""
    ones = dataclasses.replace(spec.normalizer, stds={k: 1.0 for k in spec.normalizer.stds})
    return oracle.penalty(dataclasses.replace(spec, normalizer=ones), output, uncorrected)


def _diluted(spec, output, uncorrected):  # noqa: ANN001, ANN202
    """What a mean over all channels (zeros for uncorrected ones) would give."""
    per = oracle.penalty_per_channel(spec, output, uncorrected)
    return spec.regularization.weight * torch.stack(list(per.values())).sum() / len(spec.names)


@enforces("REG-1", "NORM-1", "REG-4", "ENSEMBLE-1")
@pytest.mark.parametrize("reg", REGULARIZATION_OPTIONS, ids=pid)
@pytest.mark.parametrize("case", standard_cases(), ids=pid)
def check_penalty_closed_form(adapter: StepOutputLossAdapter, case: Case, reg: Option) -> None:
    """The penalty equals its closed form."""
    spec = case.spec(regularization=reg.value)
    output, uncorrected, target = case.fresh()
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, 0)
    assert_close(
        result.regularization,
        oracle.penalty(spec, output, uncorrected),
        prop=PROP,
        quantity="regularization",
        inputs=describe(spec, case.id),
        meaning="weight * mean over corrected channels of L(correction / std, 0)",
        alternatives={
            "the penalty of corrections in physical units (not divided by std)": _physical(
                spec, output, uncorrected
            ),
            "the mean over all channels (diluted)": _diluted(spec, output, uncorrected),
        },
    )


@enforces("REG-2")
@pytest.mark.parametrize("case", [one_corrected_case(), main_case()], ids=pid)
def check_penalty_corrected_channels_only(adapter: StepOutputLossAdapter, case: Case) -> None:
    """The mean runs over the corrected channels only: with ``n`` of 6
    channels corrected it is ``6 / n`` times an all-channel mean."""
    spec = case.spec(regularization=MSE)
    output, uncorrected, target = case.fresh()
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, 0)
    assert_close(
        result.regularization,
        oracle.penalty(spec, output, uncorrected),
        prop=PROP,
        quantity="regularization",
        inputs=describe(spec, case.id),
        meaning=f"mean over the {len(case.corrected)} corrected channels",
        alternatives={
            f"the mean over all {len(spec.names)} channels (diluted by "
            f"{len(case.corrected)}/{len(spec.names)})": _diluted(spec, output, uncorrected)
        },
    )


# not step 0: there the decay is 1, so a decayed penalty could not be told apart
@enforces("REG-3")
@pytest.mark.parametrize("step", [3, 7], ids=lambda s: f"step-{s}")
def check_penalty_has_no_step_decay(adapter: StepOutputLossAdapter, step: int) -> None:
    """The main loss decays with ``(1 + c*step)^-1/2``; the penalty does not."""
    case = main_case()
    spec = case.spec(regularization=MSE)  # decay constant 0.5
    output, uncorrected, target = case.fresh()
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, step)
    expected = oracle.penalty(spec, output, uncorrected)
    assert_close(
        result.regularization,
        expected,
        prop=PROP,
        quantity="regularization",
        inputs=describe(spec, case.id, step=step),
        meaning="the same at every step: no step decay",
        alternatives={
            "the penalty times the main loss's step decay": expected
            * oracle.step_weight(spec, step)
        },
    )


@enforces("REG-3")
@pytest.mark.parametrize("weight", [0.1, 2.5], ids=lambda w: f"weight-{w}")
def check_penalty_weight_scaling(adapter: StepOutputLossAdapter, weight: float) -> None:
    """The penalty is linear in ``weight``."""
    case = main_case()
    spec = case.spec(regularization=RegularizationSpec("MSE", weight=weight))
    output, uncorrected, target = case.fresh()
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, 0)
    unit = oracle.penalty(
        case.spec(regularization=RegularizationSpec("MSE", weight=1.0)), output, uncorrected
    )
    assert_close(
        result.regularization,
        weight * unit,
        prop=PROP,
        quantity="regularization",
        inputs=describe(spec, case.id),
        meaning=f"{weight} x the weight-1 penalty",
        alternatives={
            "the weight-1 penalty (weight ignored)": unit,
            "weight**2 x the weight-1 penalty (weight applied twice)": weight**2 * unit,
        },
    )


@enforces("CONV-ZERO-1", "TOTAL-1")
def check_penalty_zero_when_nothing_corrected(adapter: StepOutputLossAdapter) -> None:
    """Both features on, ``uncorrected`` empty: the penalty is a finite 0 and
    the main loss is the plain loss of ``output``."""
    case = nothing_corrected_case()
    spec = case.spec(exclude=(), regularization=MSE)
    output, uncorrected, target = case.fresh()
    inputs = describe(spec, case.id)
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, 0)
    reg = result.regularization
    if reg is None or not bool(torch.isfinite(reg).all()) or float(reg) != 0.0:
        fail(PROP, "the penalty with nothing corrected must be exactly 0", inputs, 0.0, reg)
    with breaking("TOTAL-1"):
        assert_close(
            result.total,
            oracle.total(spec, output, uncorrected, target, 0),
            prop=PROP,
            quantity="total",
            inputs=inputs,
            meaning="the plain main loss of output",
        )
