"""The loss does not modify its inputs: after a call and a backward, the
``output``, ``uncorrected`` and target mappings have the same keys, the same
tensor objects and the same values."""

from __future__ import annotations

import pytest
import torch

from conformance.adapter import StepOutputLossAdapter
from conformance.assertions import fail
from conformance.cases import Option, feature_combinations, main_case, pid
from conformance.harness import describe, run_loss
from conformance.requirements import enforces

PROP = "inputs not mutated"


@enforces("ROLLOUT-1")
@pytest.mark.parametrize("features", feature_combinations(), ids=pid)
def check_inputs_not_mutated(adapter: StepOutputLossAdapter, features: Option) -> None:
    """``output`` and ``uncorrected`` are graph leaves that require grad (as a
    model's outputs are on the graph); after the call *and* a backward of the
    total, every mapping has the same keys, tensor objects, values and
    ``requires_grad`` flags as before."""
    exclude, reg = features.value
    case = main_case()
    spec = case.spec(exclude=exclude, regularization=reg)
    output, uncorrected, target = case.fresh()
    for m in (output, uncorrected):
        for v in m.values():
            v.requires_grad_(True)
    inputs = describe(spec, case.id)
    mappings = {"output": output, "uncorrected": uncorrected, "target": target}
    before = {
        name: (
            {k: id(v) for k, v in m.items()},
            {k: v.detach().clone() for k, v in m.items()},
            {k: v.requires_grad for k, v in m.items()},
        )
        for name, m in mappings.items()
    }
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, 1)
    if not result.total.requires_grad:
        fail(PROP, "the total is not on the autograd graph of output", inputs)
    result.total.backward()
    for name, m in mappings.items():
        ids, values, grad_flags = before[name]
        if list(m) != list(ids):
            fail(PROP, f"the keys of {name} changed", inputs, list(ids), list(m))
        for k, v in m.items():
            if id(v) != ids[k]:
                fail(PROP, f"{name}[{k!r}] was replaced by another tensor", inputs)
            if not torch.equal(v.detach(), values[k]):
                fail(PROP, f"{name}[{k!r}] was modified in place", inputs)
            if v.requires_grad != grad_flags[k]:
                fail(
                    PROP,
                    f"{name}[{k!r}] was detached or attached in place (requires_grad changed)",
                    inputs,
                    grad_flags[k],
                    v.requires_grad,
                )
