"""Config validation of the corrector-loss config: both features None is an
error; ensemble, NaN and global-mean regularization losses are rejected; every
valid combination (including both features together) is accepted."""

from __future__ import annotations

import pytest

from conformance.adapter import (
    Capability,
    PreCorrectorSpec,
    RegularizationSpec,
    StepOutputLossAdapter,
)
from conformance.assertions import assert_no_error, assert_raises_naming, fail
from conformance.cases import Option, pid
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "corrector-loss config validation"
PRE = PreCorrectorSpec(exclude_names_and_prefixes=("ps",), select_names=("q_1",))
REG = RegularizationSpec("MSE", weight=0.5)


@enforces("CONFIG-1")
@requires(Capability.CORRECTOR_CONFIG)
def check_both_none_rejected(adapter: StepOutputLossAdapter) -> None:
    assert_raises_naming(
        lambda: adapter.build_corrector_config(None, None),
        prop=PROP,
        what="a corrector-loss config with neither feature",
        inputs={"precorrector": None, "regularization": None},
        must_mention=[],
        exception=ValueError,
    )


# value: (the spec, the words of which the error must mention one: the
# rejected type, or the global-mean setting in either spelling)
REJECTED = [
    Option("EnsembleLoss", (RegularizationSpec("EnsembleLoss"), ("EnsembleLoss",))),
    Option("NaN", (RegularizationSpec("NaN"), ("NaN",))),
    Option(
        "global-mean-LpLoss",
        (
            RegularizationSpec("MSE", global_mean_type="LpLoss"),
            ("LpLoss", "global_mean", "global mean", "global-mean"),
        ),
    ),
]


@enforces("CONFIG-2", "ERRMSG-1")
@requires(Capability.REGULARIZATION_LOSS_TYPES)
@pytest.mark.parametrize("reg", REJECTED, ids=pid)
def check_rejects_regularization_loss_type(adapter: StepOutputLossAdapter, reg: Option) -> None:
    """A ``ValueError`` whose message names what is wrong (the type)."""
    spec, words = reg.value
    inputs = {"regularization": spec}
    err = assert_raises_naming(
        lambda: adapter.build_corrector_config(None, spec),
        prop=PROP,
        what=f"regularization with loss type {reg.id}",
        inputs=inputs,
        must_mention=[],
        exception=ValueError,
    )
    if not any(w in str(err) for w in words):
        fail(
            PROP,
            f"the error for {reg.id} does not say what is wrong",
            inputs,
            f"a ValueError mentioning one of {list(words)}",
            f"{type(err).__name__}: {err}",
        )


VALID = [
    Option("precorrector", (PRE, None)),
    Option("regularization", (None, REG)),
    Option("both", (PRE, REG)),
]


@enforces("COMPOSE-1")
@requires(Capability.CORRECTOR_CONFIG)
@pytest.mark.parametrize("features", VALID, ids=pid)
def check_accepts_valid_configs(adapter: StepOutputLossAdapter, features: Option) -> None:
    """Either feature alone, and the combination, are valid configs."""
    pre, reg = features.value
    assert_no_error(
        lambda: adapter.build_corrector_config(pre, reg),
        prop=PROP,
        what="building a valid corrector-loss config",
        inputs={"precorrector": pre, "regularization": reg},
    )
