"""``data_mask`` in every shape the contract allows (broadcastable to the
target's ``(n_batch, *spatial)``), under every main-loss and penalty type:

- ``per-sample``: ``(n_batch, 1, 1)``, a whole sample masked;
- ``spatial``: ``(n_lat, n_lon)``, the same points of every sample;
- ``full``: ``(n_batch, n_lat, n_lon)``, a pattern per sample.

Masked points carry huge values, so a mask left out or broadcast onto the
wrong axis shows; both features are on, so the main loss and the penalty
each see masked corrected variables."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conformance.adapter import Capability, RegularizationSpec, StepOutputLossAdapter
from conformance.cases import (
    REGULARIZATION_OPTIONS,
    SPATIAL,
    WEIGHTED_MAIN,
    Case,
    Option,
    ensemble_case,
    main_case,
    pid,
)
from conformance.harness import assert_main_loss, assert_masked_penalty, describe, run_loss
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "data mask shapes"
STEP = 1


def _per_sample(n_batch: int) -> torch.Tensor:
    mask = torch.ones((n_batch, 1, 1), dtype=torch.bool)
    mask[1] = False
    return mask


def _spatial(n_batch: int) -> torch.Tensor:
    mask = torch.ones(SPATIAL, dtype=torch.bool)
    mask[:, -1] = False
    mask[0, 0] = False
    return mask


def _full(n_batch: int) -> torch.Tensor:
    mask = torch.ones((n_batch, *SPATIAL), dtype=torch.bool)
    mask[0, :, 0] = False
    mask[1, 1, :] = False
    return mask


SHAPES = [
    Option("per-sample", _per_sample),
    Option("spatial", _spatial),
    Option("full", _full),
]


def _main_types(case: Case, capabilities: frozenset) -> list[str]:  # type: ignore[type-arg]
    types = ["MSE", "L1"]
    if Capability.AREA_WEIGHTED in capabilities:
        types.append("AreaWeightedMSE")
    if case.n_ensemble > 1:
        types.append("EnsembleLoss")
    return types


def _penalties(capabilities: frozenset) -> list[RegularizationSpec]:  # type: ignore[type-arg]
    return [
        o.value
        for o in REGULARIZATION_OPTIONS
        if all(c in capabilities for c in o.requires)
        and (o.value.loss_type != "AreaWeightedMSE" or Capability.AREA_WEIGHTED in capabilities)
    ]


@enforces("MASK-1")
@requires(Capability.DATA_MASK)
@pytest.mark.parametrize("shape", SHAPES, ids=pid)
@pytest.mark.parametrize("case", [main_case(), ensemble_case()], ids=pid)
def check_mask_shapes(adapter: StepOutputLossAdapter, case: Case, shape: Option) -> None:
    caps = frozenset(adapter.capabilities)
    masked = case.corrected[:2]
    n_batch = case.target[masked[0]].shape[0]
    make = shape.value
    mains, penalties = _main_types(case, caps), _penalties(caps)
    # every main-loss type and every penalty type, each at least once
    for i in range(max(len(mains), len(penalties))):
        main_type, reg = mains[i % len(mains)], penalties[i % len(penalties)]
        spec = case.spec(
            exclude=(),
            regularization=reg,
            main=dataclasses.replace(WEIGHTED_MAIN, loss_type=main_type),
        )
        output, uncorrected, target = case.fresh()
        mask = {k: make(n_batch) for k in masked}
        rows = make(n_batch).expand(n_batch, *SPATIAL).repeat_interleave(case.n_ensemble, dim=0)
        for k in masked:  # garbage where masked: it must not reach the loss
            uncorrected[k][~rows] = 1e4 * spec.normalizer.stds[k]
            output[k][~rows] = -1e4 * spec.normalizer.stds[k]
            target[k][~rows[:: case.n_ensemble]] = 3e3 * spec.normalizer.stds[k]
        inputs = describe(spec, case.id, mask_shape=f"{shape.id} {tuple(mask[masked[0]].shape)}")
        result = run_loss(adapter.build_loss(spec), output, uncorrected, target, STEP, mask)
        assert_main_loss(
            result,
            spec,
            output,
            uncorrected,
            target,
            STEP,
            prop=PROP,
            inputs=inputs,
            data_mask=mask,
        )
        assert_masked_penalty(result, spec, output, uncorrected, mask, prop=PROP, inputs=inputs)
