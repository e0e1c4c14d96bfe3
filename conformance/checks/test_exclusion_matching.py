"""Exclusions of pre-corrector optimization: the name-and-prefix rules (bare
``x`` = ``x`` and every ``x_<n>``; prefix ``x_`` = every ``x_<n>``; explicit
``x_<n>`` = exactly that; literal text), and the handling of entries that
match no corrected variable (warn once, or raise)."""

from __future__ import annotations

import warnings

import pytest

from conformance.adapter import Capability, StepOutputLossAdapter
from conformance.assertions import assert_raises_naming, fail, names_token
from conformance.cases import Option, main_case, pid
from conformance.harness import assert_main_loss, describe, run_loss
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "exclusion matching"
STEP = 1

# main case: corrected = ps, q_1, q_2, q2m (q_0 and t are not corrected).
# value: (entries, the corrected variables that stay swapped) -- hand-written.
RULES = [
    Option("bare-2d-name", (("ps",), {"q_1", "q_2", "q2m"})),
    Option("bare-3d-name", (("q",), {"ps", "q2m"})),  # q matches q_1, q_2, not q2m
    Option("level-prefix", (("q_",), {"ps", "q2m"})),
    Option("explicit-level", (("q_2",), {"ps", "q_1", "q2m"})),
    Option("2d-name-sharing-a-stem", (("q2m",), {"ps", "q_1", "q_2"})),
    Option("prefix-and-level", (("q_1", "ps"), {"q_2", "q2m"})),
]


@enforces("MATCH-1")
@requires(Capability.EXCLUSION_MATCHER)
@pytest.mark.parametrize("rule", RULES, ids=pid)
def check_exclusion_keeps_corrected_value(adapter: StepOutputLossAdapter, rule: Option) -> None:
    """Matched corrected variables keep their corrected value in the main loss."""
    entries, still_swapped = rule.value
    case = main_case()
    spec = case.spec(exclude=entries)
    output, uncorrected, target = case.fresh()
    result = run_loss(adapter.build_loss(spec), output, uncorrected, target, STEP)
    assert_main_loss(
        result,
        spec,
        output,
        uncorrected,
        target,
        STEP,
        prop=PROP,
        inputs=describe(spec, case.id, swapped=sorted(still_swapped)),
    )


# q matches the corrected q_1, q_2 (bare 3D name); zz: no such variable;
# q_7: no such level
ENTRIES = ("q", "zz", "q_7")
UNMATCHED = ("zz", "q_7")
MATCHED = ("q",)
FIRST_CORRECTED_STEP = 1


def _user_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@enforces("WARN-1")
@requires(Capability.WARN_ONCE_UNMATCHED)
def check_unmatched_entry_warns_once(adapter: StepOutputLossAdapter) -> None:
    """Step 0 corrects nothing (nothing to validate against yet); steps 1-3
    correct ``ps, q_1, q_2, q2m``. Over the loss object's life each unmatched
    entry is named by exactly one UserWarning, emitted on step 1 (the first
    step with corrections); the matched entry ``q`` is never named. Both
    readings of "warn once" pass: one warning listing every unmatched entry,
    or one warning per entry."""
    case = main_case()
    spec = case.spec(exclude=ENTRIES)
    inputs = describe(spec, case.id, steps="0 (nothing corrected), 1, 2, 3")
    loss = adapter.build_loss(spec)
    by_step: dict[int, list[str]] = {}
    for step in range(4):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            output, uncorrected, target = case.fresh()
            run_loss(loss, output, uncorrected if step else {}, target, step)
        by_step[step] = _user_warnings(caught)
    every = [(step, m) for step, ms in by_step.items() for m in ms]
    for entry in UNMATCHED:
        naming = [(step, m) for step, m in every if names_token(m, entry)]
        if len(naming) != 1:
            fail(
                PROP,
                f"the unmatched entry {entry!r} must be named by exactly one warning "
                "over the loss object's life",
                inputs,
                f"1 warning naming {entry!r} (on step {FIRST_CORRECTED_STEP})",
                f"{len(naming)} warning(s): {naming}",
            )
        step, message = naming[0]
        if step != FIRST_CORRECTED_STEP:
            fail(
                PROP,
                f"the warning naming {entry!r} must come on the first step with "
                f"corrections (step {FIRST_CORRECTED_STEP})",
                inputs,
                f"step {FIRST_CORRECTED_STEP}",
                f"step {step}: {message}",
            )
    for entry in MATCHED:
        naming = [(step, m) for step, m in every if names_token(m, entry)]
        if naming:
            fail(
                PROP,
                f"the matched entry {entry!r} (it matches q_1, q_2) must not be reported",
                inputs,
                f"no warning naming {entry!r}",
                naming,
            )


@enforces("WARN-2")
def check_matched_entries_do_not_complain(adapter: StepOutputLossAdapter) -> None:
    """Entries that all match a corrected variable neither warn nor raise."""
    case = main_case()
    spec = case.spec(exclude=("ps", "q_"))
    inputs = describe(spec, case.id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loss = adapter.build_loss(spec)
            for step in range(2):
                output, uncorrected, target = case.fresh()
                run_loss(loss, output, uncorrected, target, step)
        except Exception as err:  # noqa: BLE001 - reported
            fail(PROP, "matched entries raised", inputs, "no error", f"{type(err).__name__}: {err}")
    complaints = _user_warnings(caught)
    if complaints:
        fail(PROP, "matched entries warned", inputs, "no UserWarning", complaints)


@enforces("RAISE-1")
@requires(Capability.RAISE_ON_UNMATCHED)
def check_unmatched_entry_raises(adapter: StepOutputLossAdapter) -> None:
    """An entry that matches no corrected variable is an error naming it
    (at build time or on the first call)."""
    case = main_case()
    spec = case.spec(exclude=("ps", "zz"))

    def build_and_call() -> None:
        loss = adapter.build_loss(spec)
        output, uncorrected, target = case.fresh()
        run_loss(loss, output, uncorrected, target, 0)

    assert_raises_naming(
        build_and_call,
        prop=PROP,
        what="an entry matching no corrected variable",
        inputs=describe(spec, case.id),
        must_mention=["zz"],
    )
