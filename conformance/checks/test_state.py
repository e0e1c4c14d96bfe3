"""State across calls and across loss objects: each call's values follow
from that call's inputs alone.

- One loss object, one call per step, the corrected set changing from call
  to call: nothing (step 0), four variables, one other variable, a third set
  overlapping the first. Every call's main loss (per channel) and penalty
  must equal the closed form for *that* call's corrections.
- Two loss objects with different configs, called in turn on different
  inputs: each gives what it would alone.
"""

from __future__ import annotations

import warnings

from conformance import oracle
from conformance.adapter import (
    Capability,
    LossResult,
    RegularizationSpec,
    StepOutputLossAdapter,
)
from conformance.assertions import assert_close
from conformance.cases import main_case
from conformance.harness import assert_main_loss, describe, run_loss
from conformance.plugin import requires
from conformance.requirements import enforces
from conformance.vocabulary import VocabularyCase

PROP = "state across calls and loss objects"
REG = RegularizationSpec("L1", weight=0.7)
EXCLUDE = ("q2m",)
# the corrected set of each call (step = index); main case's variables
SEQUENCE: tuple[tuple[str, ...], ...] = (
    (),
    ("ps", "q_1", "q_2", "q2m"),
    ("t",),
    ("q_0", "q2m", "ps"),
)


def _changing_case() -> VocabularyCase:
    """The main case's variables and statistics, every variable correctable."""
    base = main_case()
    return VocabularyCase(
        id="case-changing-corrections",
        names=base.names,
        corrected=base.names,
        rules=(),
        warn_entries=(),
        unmatched=frozenset(),
        seed=201,
    )


def _assert_call(
    result: LossResult,
    spec,
    output,
    uncorrected,
    target,
    step: int,
    inputs: dict,  # noqa: ANN001
) -> None:
    assert_main_loss(result, spec, output, uncorrected, target, step, prop=PROP, inputs=inputs)
    # a call that corrected nothing: its regularization (0, None, ...) is the
    # business of check_penalty_zero_when_nothing_corrected, not of this property
    if spec.regularization is not None and uncorrected:
        assert_close(
            result.regularization,
            oracle.penalty(spec, output, uncorrected),
            prop=PROP,
            quantity="regularization",
            inputs=inputs,
            meaning="weight * mean over this call's corrected channels",
        )


@enforces("STATE-1")
@requires(Capability.WARN_ONCE_UNMATCHED)
def check_corrected_set_changes_between_calls(adapter: StepOutputLossAdapter) -> None:
    """Both features on (exclusion ``q2m``, which some calls do not correct).
    Only for an implementation that tolerates an entry matching nothing on
    some step (warn-once): one that raises on it cannot see a changing set."""
    case = _changing_case()
    exclude = EXCLUDE
    # the spec's hint lists every variable that is ever corrected
    spec = case.spec(exclude=exclude, regularization=REG, corrected=case.names)
    loss = adapter.build_loss(spec)
    for step, corrected in enumerate(SEQUENCE):
        output, uncorrected, target = case.tensors(corrected=corrected, seed_offset=step)
        call_spec = case.spec(exclude=exclude, regularization=REG, corrected=corrected)
        inputs = describe(call_spec, case.id, call=step, sequence=[list(c) for c in SEQUENCE])
        with warnings.catch_warnings():  # warn-once has checks of its own
            warnings.simplefilter("ignore")
            result = run_loss(loss, output, uncorrected, target, step)
        _assert_call(result, call_spec, output, uncorrected, target, step, inputs)


@enforces("STATE-1")
def check_loss_objects_independent(adapter: StepOutputLossAdapter) -> None:
    """Loss ``a`` (exclusion ``ps``, MSE penalty) and loss ``b`` (exclusion
    ``q_``, L1 penalty) on the main case's variables, built together and
    called in turn on different inputs with the same corrected set: each
    gives what it would alone."""
    case = main_case()
    specs = {
        "a": case.spec(exclude=("ps",), regularization=RegularizationSpec("MSE", weight=0.7)),
        "b": case.spec(exclude=("q_",), regularization=REG),
    }
    losses = {k: adapter.build_loss(s) for k, s in specs.items()}
    for call, key in enumerate(["a", "b", "a", "b"]):
        spec = specs[key]
        output, uncorrected, target = case.fresh()
        shift = 0.25 * (call + 1)
        output = {k: v + shift * case.normalizer.stds[k] for k, v in output.items()}
        uncorrected = {k: v + shift * case.normalizer.stds[k] for k, v in uncorrected.items()}
        inputs = describe(spec, case.id, loss_object=key, call=call)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_loss(losses[key], output, uncorrected, target, call)
        _assert_call(result, spec, output, uncorrected, target, call, inputs)
