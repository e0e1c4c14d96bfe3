"""``data_mask``: points where a variable's mask is False contribute 0 to both
the main loss and the penalty (they still count in the mean's denominator).
A ``(n_batch, *spatial)`` mask belongs to its sample and covers all of that
sample's ensemble members. The masked points carry huge values here, so a
mask left out, or applied to the wrong sample, shows."""

from __future__ import annotations

import pytest
import torch

from conformance.adapter import Capability, RegularizationSpec, StepOutputLossAdapter
from conformance.cases import SPATIAL, Case, Option, ensemble_case, main_case, pid
from conformance.harness import assert_main_loss, assert_masked_penalty, describe, run_loss
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "data mask"
STEP = 1
REG = RegularizationSpec("MSE", weight=0.7)


def _mask(n_batch: int) -> torch.Tensor:
    """``(n_batch, n_lat, n_lon)``, different per sample: sample 0 loses its
    last column, sample 1 its first row."""
    mask = torch.ones((n_batch, *SPATIAL), dtype=torch.bool)
    mask[0, :, -1] = False
    mask[1, 0, :] = False
    return mask


FEATURES = [Option("precorrector", ((), None)), Option("regularization", (None, REG))]


@enforces("MASK-1")
@requires(Capability.DATA_MASK)
@pytest.mark.parametrize("features", FEATURES, ids=pid)
@pytest.mark.parametrize("case", [main_case(), ensemble_case()], ids=pid)
def check_masked_points_do_not_count(
    adapter: StepOutputLossAdapter, case: Case, features: Option
) -> None:
    exclude, reg = features.value
    spec = case.spec(exclude=exclude, regularization=reg)
    output, uncorrected, target = case.fresh()
    masked = case.corrected[:2]  # corrected variables, so both terms see them
    n_batch = target[masked[0]].shape[0]
    mask = {k: _mask(n_batch) for k in masked}
    rows = _mask(n_batch).repeat_interleave(case.n_ensemble, dim=0)  # per member
    for k in masked:  # garbage where masked: it must not reach the loss
        uncorrected[k][~rows] = 1e4 * spec.normalizer.stds[k]
        output[k][~rows] = -1e4 * spec.normalizer.stds[k]
    inputs = describe(spec, case.id, masked={k: "per-sample pattern" for k in masked})
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, STEP, mask)
    assert_main_loss(
        result, spec, output, uncorrected, target, STEP, prop=PROP, inputs=inputs, data_mask=mask
    )
    if reg is not None:
        assert_masked_penalty(result, spec, output, uncorrected, mask, prop=PROP, inputs=inputs)
