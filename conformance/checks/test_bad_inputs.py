"""Bad inputs get a clear error that names the offending variable (and the
mapping it is missing from), never a bare ``KeyError``, a broadcasting error
or an ``AssertionError``."""

from __future__ import annotations

import pytest
import torch

from conformance.adapter import Capability, RegularizationSpec, StepOutputLossAdapter
from conformance.assertions import assert_raises_naming
from conformance.cases import Option, main_case, pid
from conformance.harness import describe, run_loss
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "bad-input errors"
REG = RegularizationSpec("MSE", weight=0.7)


def _spec():  # noqa: ANN202
    return main_case().spec(exclude=(), regularization=REG)


MISSING = [Option("from-output", "output"), Option("from-target", "target")]


@enforces("INPUT-1")
@requires(Capability.BAD_INPUT_VALIDATION)
@pytest.mark.parametrize("where", MISSING, ids=pid)
def check_missing_loss_variable_is_named(adapter: StepOutputLossAdapter, where: Option) -> None:
    """A loss variable (``q_0``, not corrected) missing from ``output`` or the target."""
    spec = _spec()
    output, uncorrected, target = main_case().fresh()
    del {"output": output, "target": target}[str(where.value)]["q_0"]
    assert_raises_naming(
        lambda: run_loss(adapter.build_loss(spec), output, uncorrected, target, 0),
        prop=PROP,
        what=f"'q_0' missing from {where.value}",
        inputs=describe(spec, "case-2d-and-levels", missing=f"{where.value}['q_0']"),
        must_mention=["q_0", str(where.value)],
    )


@enforces("INPUT-1")
@requires(Capability.BAD_INPUT_VALIDATION)
def check_uncorrected_outside_output_is_named(adapter: StepOutputLossAdapter) -> None:
    """``uncorrected`` holds a variable that ``output`` lacks."""
    spec = _spec()
    output, uncorrected, target = main_case().fresh()
    uncorrected["zz_extra"] = torch.zeros_like(output["ps"])
    assert_raises_naming(
        lambda: run_loss(adapter.build_loss(spec), output, uncorrected, target, 0),
        prop=PROP,
        what="uncorrected['zz_extra'] with no output['zz_extra']",
        inputs=describe(spec, "case-2d-and-levels", extra="uncorrected['zz_extra']"),
        must_mention=["zz_extra"],
    )


SHAPES = [Option("uncorrected-ps", ("uncorrected", "ps")), Option("target-q2m", ("target", "q2m"))]


@enforces("INPUT-1")
@requires(Capability.BAD_INPUT_VALIDATION)
@pytest.mark.parametrize("where", SHAPES, ids=pid)
def check_shape_mismatch_is_named(adapter: StepOutputLossAdapter, where: Option) -> None:
    """One tensor with a wrong last dimension (3 -> 2): it would broadcast or
    crash deep inside the loss; the error must name it."""
    mapping_name, var = where.value
    spec = _spec()
    output, uncorrected, target = main_case().fresh()
    mapping = {"uncorrected": uncorrected, "target": target}[mapping_name]
    mapping[var] = mapping[var][..., :2]
    assert_raises_naming(
        lambda: run_loss(adapter.build_loss(spec), output, uncorrected, target, 0),
        prop=PROP,
        what=f"{mapping_name}[{var!r}] with a wrong shape",
        inputs=describe(spec, "case-2d-and-levels", bad=f"{mapping_name}[{var!r}][..., :2]"),
        must_mention=[var],
    )
