"""The name-and-prefix rules on names beyond the main case: a non-digit suffix
(``x_a``, ``u_star``), a 2D name that is a prefix of another (``t``, ``t2``),
levels of different digit counts (``q_1``, ``q_10``), a 2D ``x`` beside its
levels, multi-part names (``x_1_2``), each against bare, prefix and explicit
entries (fixed cases of :mod:`conformance.vocabulary`, run every time)."""

from __future__ import annotations

import warnings

import pytest

from conformance.adapter import Capability, StepOutputLossAdapter
from conformance.harness import assert_main_loss, describe, run_loss
from conformance.plugin import requires
from conformance.requirements import enforces
from conformance.vocabulary import VocabularyCase, vocabulary_cases

PROP = "exclusion matching (vocabulary)"
STEP = 1


@enforces("MATCH-1")
@requires(Capability.EXCLUSION_MATCHER)
@pytest.mark.parametrize("case", vocabulary_cases(), ids=lambda c: c.id)
def check_vocabulary_swap(adapter: StepOutputLossAdapter, case: VocabularyCase) -> None:
    """For every rule of the case, the corrected variables its entries match
    keep their corrected value in the main loss; the others are swapped."""
    for rule in case.rules:
        spec = case.spec(exclude=rule.entries)
        output, uncorrected, target = case.tensors()
        with warnings.catch_warnings():  # unmatched entries: the warn-once checks judge them
            warnings.simplefilter("ignore")
            result = run_loss(adapter.build_loss(spec), output, uncorrected, target, STEP)
        assert_main_loss(
            result,
            spec,
            output,
            uncorrected,
            target,
            STEP,
            prop=PROP,
            inputs=describe(spec, case.id, names=list(case.names), swapped=sorted(rule.swapped)),
        )
