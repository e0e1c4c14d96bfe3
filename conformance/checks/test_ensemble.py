"""Ensembles: predictions carry ``n_batch * n_ensemble`` rows with the members
of one sample adjacent, targets ``n_batch``; the loss unfolds the ensemble
dimension itself (``n_ensemble`` fixed at build). An ensemble main loss
(fair CRPS) shows a wrong grouping of members."""

from __future__ import annotations

import dataclasses

from conformance import oracle
from conformance.adapter import Capability, RegularizationSpec, StepOutputLossAdapter
from conformance.assertions import assert_close
from conformance.cases import WEIGHTED_MAIN, ensemble_case
from conformance.harness import assert_main_loss, describe, run_loss
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "ensemble unfolding"
STEP = 1


def _interleaved(x):  # noqa: ANN001, ANN202
    """Rows regrouped as if members of one sample were n_batch apart."""
    n = x.shape[0] // 2
    return x.reshape(2, n, *x.shape[1:]).transpose(0, 1).reshape(x.shape)


@enforces("ENSEMBLE-1", "CONV-ENS-1")
@requires(Capability.ENSEMBLE)
def check_ensemble_members_grouped(adapter: StepOutputLossAdapter) -> None:
    case = ensemble_case()
    main = dataclasses.replace(WEIGHTED_MAIN, loss_type="EnsembleLoss")
    spec = case.spec(exclude=("t",), regularization=RegularizationSpec("MSE", 0.7), main=main)
    output, uncorrected, target = case.fresh()
    inputs = describe(spec, case.id, step=STEP)
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, STEP)
    predict = oracle.main_prediction(spec, output, uncorrected)
    wrong = oracle.main_total(
        oracle.main_per_channel(
            spec, {k: _interleaved(v) for k, v in predict.items()}, target, STEP
        )
    )
    assert_close(
        result.main_total,
        oracle.main_total(oracle.main_per_channel(spec, predict, target, STEP)),
        prop=PROP,
        quantity="main loss total (fair CRPS)",
        inputs=inputs,
        meaning="members of one sample are adjacent rows",
        alternatives={"the CRPS with members taken n_batch rows apart": wrong},
    )
    assert_main_loss(result, spec, output, uncorrected, target, STEP, prop=PROP, inputs=inputs)
    assert_close(
        result.regularization,
        oracle.penalty(spec, output, uncorrected),
        prop=PROP,
        quantity="regularization",
        inputs=inputs,
        meaning="over every member's correction",
    )
