"""Warn-once on unmatched exclusion entries: content and timing, on the
vocabulary's names and on entries that name a loss variable which simply was
not corrected; and one loss object's warn-once state is its own.

Both readings of "warn once" pass: one warning listing every unmatched entry,
or one warning per entry. What is judged, over the loss object's life:

- nothing before the first call that has corrections (the first call has
  none), and nothing after that call;
- every unmatched entry is named in exactly one warning;
- no matched entry is named (an entry that is itself the name of a variable
  is not judged on this: a warning may list the corrected variables).

"Named" means the entry appears as a whole token (not inside a longer name:
``x_`` is not named by ``x_1``). Only ``UserWarning``s that name some entry
of the loss are considered.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pytest

from conformance.adapter import Capability, StepOutputLossAdapter
from conformance.assertions import fail, names_token
from conformance.cases import main_case
from conformance.harness import describe, run_loss
from conformance.plugin import requires
from conformance.requirements import enforces
from conformance.vocabulary import VocabularyCase, vocabulary_cases

PROP = "warn-once on unmatched exclusion entries"


def entry_warnings(caught: Sequence[warnings.WarningMessage], entries: Sequence[str]) -> list[str]:
    """The messages of the ``UserWarning``s that name some entry."""
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, UserWarning)
        and any(names_token(str(w.message), e) for e in entries)
    ]


def judge_warnings(
    by_call: Sequence[list[str]],
    first_corrected_call: int,
    entries: Sequence[str],
    unmatched: Sequence[str],
    variables: Sequence[str],
    inputs: dict,
) -> None:
    """Fail unless the warnings of each call (``by_call``) follow the rules of
    the module docstring."""
    for call, messages in enumerate(by_call):
        if messages and call != first_corrected_call:
            when = "before" if call < first_corrected_call else "after"
            fail(
                PROP,
                f"a warning on call {call}, {when} the first call with corrections "
                f"(call {first_corrected_call})",
                inputs,
                "warnings on the first call with corrections only",
                messages,
            )
    messages = by_call[first_corrected_call]
    for entry in unmatched:
        count = sum(names_token(m, entry) for m in messages)
        if count != 1:
            fail(
                PROP,
                f"the unmatched entry {entry!r} must be named in exactly one warning",
                inputs,
                f"1 warning naming {entry!r} (one warning for all, or one per entry)",
                f"{count}: {messages}",
            )
    judged = [e for e in entries if e not in unmatched and e not in variables]
    named = [e for e in judged if any(names_token(m, e) for m in messages)]
    if named:
        fail(
            PROP,
            f"the warning names matched entries {named}",
            inputs,
            f"only the unmatched entries {list(unmatched)}",
            messages,
        )


def run_calls(
    loss: object, calls: Sequence[tuple[dict, dict, dict]], entries: Sequence[str]
) -> list[list[str]]:
    """Call ``loss`` on each ``(output, uncorrected, target)`` (step = index);
    the entry-naming warnings of each call."""
    by_call = []
    for step, (output, uncorrected, target) in enumerate(calls):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_loss(loss, output, uncorrected, target, step)  # type: ignore[arg-type]
        by_call.append(entry_warnings(caught, entries))
    return by_call


def _vocabulary_calls(case: VocabularyCase) -> list[tuple[dict, dict, dict]]:
    """Call 0 corrects nothing; calls 1-3 correct the case's variables."""
    output, _, target = case.tensors(seed_offset=7)
    calls: list[tuple[dict, dict, dict]] = [(output, {}, target)]
    calls += [case.tensors(seed_offset=i) for i in range(1, 4)]
    return calls


@enforces("WARN-1")
@requires(Capability.WARN_ONCE_UNMATCHED)
@pytest.mark.parametrize("case", vocabulary_cases(), ids=lambda c: c.id)
def check_vocabulary_unmatched_warned(adapter: StepOutputLossAdapter, case: VocabularyCase) -> None:
    """The vocabulary's entries (``warn_entries``: matched and unmatched mixed)."""
    entries = case.warn_entries
    spec = case.spec(exclude=entries)
    inputs = describe(
        spec, case.id, names=list(case.names), unmatched=sorted(case.unmatched), calls=4
    )
    with warnings.catch_warnings(record=True) as at_build:
        warnings.simplefilter("always")
        loss = adapter.build_loss(spec)
    by_call = run_calls(loss, _vocabulary_calls(case), entries)
    by_call[0] = entry_warnings(at_build, entries) + by_call[0]
    judge_warnings(by_call, 1, entries, sorted(case.unmatched), case.names, inputs)


# main case: corrected ps, q_1, q_2, q2m; t and q_0 are loss variables that are
# not corrected, zz names no variable at all, q_ matches q_1 and q_2.
MAIN_ENTRIES = ("ps", "zz", "t", "q_", "q_0")
MAIN_UNMATCHED = ("zz", "t", "q_0")


@enforces("WARN-1")
@requires(Capability.WARN_ONCE_UNMATCHED)
def check_uncorrected_variable_entry_warned(adapter: StepOutputLossAdapter) -> None:
    """Entries naming loss variables that were not corrected (``t``, ``q_0``)
    are unmatched like one naming no variable (``zz``): named once, on the
    first call with corrections (call 1; call 0 corrects nothing)."""
    case = main_case()
    spec = case.spec(exclude=MAIN_ENTRIES)
    inputs = describe(spec, case.id, unmatched=list(MAIN_UNMATCHED), calls=4)
    with warnings.catch_warnings(record=True) as at_build:
        warnings.simplefilter("always")
        loss = adapter.build_loss(spec)
    output, _, target = case.fresh()
    calls: list[tuple[dict, dict, dict]] = [(output, {}, target)]
    calls += [case.fresh() for _ in range(3)]
    by_call = run_calls(loss, calls, MAIN_ENTRIES)
    by_call[0] = entry_warnings(at_build, MAIN_ENTRIES) + by_call[0]
    judge_warnings(by_call, 1, MAIN_ENTRIES, MAIN_UNMATCHED, case.names, inputs)


@enforces("WARN-1", "STATE-1")
@requires(Capability.WARN_ONCE_UNMATCHED)
def check_warn_once_per_loss_object(adapter: StepOutputLossAdapter) -> None:
    """Two loss objects with the same unmatched entry, called in turn: each
    warns once, on its own first call with corrections (warn-once state
    lives on the loss object, not on its class or the module)."""
    case = main_case()
    entries = ("ps", "zz")
    spec = case.spec(exclude=entries)
    inputs = describe(spec, case.id, loss_objects=2, order="a(empty), b, a, b, a")
    first, second = adapter.build_loss(spec), adapter.build_loss(spec)
    output, _, target = case.fresh()
    order = [(first, (output, {}, target)), (second, case.fresh()), (first, case.fresh())]
    order += [(second, case.fresh()), (first, case.fresh())]
    counts = {"a": 0, "b": 0}
    for i, (loss, (out, unc, tgt)) in enumerate(order):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_loss(loss, out, unc, tgt, i)
        key = "a" if loss is first else "b"
        counts[key] += sum(names_token(m, "zz") for m in entry_warnings(caught, entries))
    if counts != {"a": 1, "b": 1}:
        fail(
            PROP,
            "each loss object must warn once about its own unmatched entry",
            inputs,
            "{'a': 1, 'b': 1} warnings naming 'zz'",
            counts,
        )
