"""Training metrics: ``loss_step_{i}`` is the main loss of step ``i`` (without
the penalty); with regularization, ``corrector_regularization_step_{i}`` is
its penalty and ``corrector_regularization`` their sum over the batch's
steps; without it those names are absent; ``loss``, when reported, is the
optimized total."""

from __future__ import annotations

import pytest
import torch

from conformance.adapter import Capability, StepOutputLossAdapter
from conformance.assertions import assert_close, assert_no_error, fail
from conformance.cases import Option, feature_combinations, pid
from conformance.harness import describe, expected_training, training_setup
from conformance.plugin import requires
from conformance.requirements import breaking, enforces

PROP = "training metric names and values"

N_STEPS = 2


@enforces("METRICS-1", "CONV-METRIC-1")
@requires(Capability.STEPPER)
@pytest.mark.parametrize("features", feature_combinations(), ids=pid)
def check_train_metrics(adapter: StepOutputLossAdapter, features: Option) -> None:
    exclude, reg = features.value
    spec, step, batch = training_setup(N_STEPS, exclude, reg)
    inputs = describe(spec.loss, "training-2-steps", n_forward_steps=N_STEPS)
    expected = expected_training(spec, step, batch)
    stepper = adapter.build_stepper(spec, step)
    metrics = assert_no_error(
        lambda: stepper.train_on_batch(batch), prop=PROP, what="train_on_batch", inputs=inputs
    ).metrics
    want: dict[str, torch.Tensor] = {
        f"loss_step_{i}": m for i, m in enumerate(expected.main_totals)
    }
    penalty_names = [f"corrector_regularization_step_{i}" for i in range(N_STEPS)]
    penalty_names.append("corrector_regularization")
    if expected.penalties is not None:
        want.update(
            {f"corrector_regularization_step_{i}": p for i, p in enumerate(expected.penalties)}
        )
        want["corrector_regularization"] = torch.stack(expected.penalties).sum()
    else:
        present = [n for n in penalty_names if n in metrics]
        if present:
            fail(PROP, "penalty metrics reported without regularization", inputs, "none", present)
    if "loss" in metrics:
        want["loss"] = expected.loss
    missing = sorted(set(want) - set(metrics))
    if missing:
        with breaking("METRICS-1"):
            fail(
                PROP,
                "metrics missing",
                inputs,
                sorted(want),
                f"missing {missing}; got {sorted(metrics)}",
            )
    for key, value in want.items():
        alternatives = {}
        if key.startswith("loss_step_") and expected.penalties is not None:
            i = int(key.rsplit("_", 1)[1])
            alternatives["main + penalty (loss_step_i must be the main loss only)"] = (
                value + expected.penalties[i]
            )
        # the batch value's convention (a sum over steps) is CONV-METRIC-1's
        with breaking("CONV-METRIC-1" if key == "corrector_regularization" else "METRICS-1"):
            assert_close(
                torch.tensor(metrics[key]),
                value,
                prop=PROP,
                quantity=f"metric {key}",
                inputs=inputs,
                meaning="closed form on the 2-step rollout",
                alternatives=alternatives,
                rtol=1e-4,
            )
