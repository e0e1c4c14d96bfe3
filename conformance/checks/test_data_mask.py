"""``data_mask``: points where a variable's mask is False contribute 0 to both
the main loss and the penalty (they still count in the mean's denominator).
The masked points carry huge values here, so a mask left out shows."""

from __future__ import annotations

import pytest
import torch

from conformance import oracle
from conformance.adapter import Capability, RegularizationSpec, StepOutputLossAdapter
from conformance.assertions import assert_close
from conformance.harness import assert_main_loss, describe, run_loss
from conformance.plugin import requires
from fixtures.cases import SPATIAL, Option, main_case, pid

PROP = "data mask"
STEP = 1
REG = RegularizationSpec("MSE", weight=0.7)


def _mask() -> torch.Tensor:
    """``(n_batch, n_lat, n_lon)``: the last column of every sample masked."""
    mask = torch.ones((2, *SPATIAL), dtype=torch.bool)
    mask[..., -1] = False
    return mask


FEATURES = [Option("precorrector", ((), None)), Option("regularization", (None, REG))]


@requires(Capability.DATA_MASK)
@pytest.mark.parametrize("features", FEATURES, ids=pid)
def check_masked_points_do_not_count(adapter: StepOutputLossAdapter, features: Option) -> None:
    exclude, reg = features.value
    case = main_case()
    spec = case.spec(exclude=exclude, regularization=reg)
    output, uncorrected, target = case.fresh()
    masked = ("ps", "q_1")  # one 2D, one level; both corrected
    mask = {k: _mask() for k in masked}
    for k in masked:  # garbage where masked: it must not reach the loss
        uncorrected[k][..., -1] = 1e4 * spec.normalizer.stds[k]
        output[k][..., -1] = -1e4 * spec.normalizer.stds[k]
    inputs = describe(spec, case.id, masked={k: "last column" for k in masked})
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, STEP, mask)
    assert_main_loss(
        result, spec, output, uncorrected, target, STEP, prop=PROP, inputs=inputs, data_mask=mask
    )
    if reg is not None:
        assert_close(
            result.regularization,
            oracle.penalty(spec, output, uncorrected, mask),
            prop=PROP,
            quantity="regularization",
            inputs=inputs,
            meaning="masked points contribute 0",
            alternatives={
                "the penalty with the mask ignored": oracle.penalty(spec, output, uncorrected)
            },
        )
