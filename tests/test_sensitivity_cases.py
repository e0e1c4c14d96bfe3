"""The hand-written expectations of the fixed vocabulary cases
(``conformance/vocabulary.py``) agree with the oracle's matcher and with the
reference's: a typo in a fixed case would otherwise make a check expect the
wrong swap."""

from __future__ import annotations

import pytest

from conformance import oracle
from conformance.assertions import names_token as names_entry
from conformance.vocabulary import vocabulary_cases
from reference.matching import NameMatcher

CASES = vocabulary_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rules_match_the_oracle_and_the_reference(case) -> None:  # noqa: ANN001
    for rule in case.rules:
        expected = set(oracle.swapped_names(rule.entries, case.corrected))
        assert rule.swapped == expected, (case.id, rule.entries)
        excluded = set(NameMatcher(rule.entries).select(case.corrected))
        assert set(case.corrected) - excluded == rule.swapped, (case.id, rule.entries)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_unmatched_entries_match_the_oracle(case) -> None:  # noqa: ANN001
    assert set(oracle.unmatched_entries(case.warn_entries, case.corrected)) == case.unmatched
    assert case.unmatched < set(case.warn_entries)  # some matched entries too


def test_every_vocabulary_trap_is_present() -> None:
    names = {n for c in CASES for n in c.names}
    assert {"x_a", "u_star", "t", "t2", "q_1", "q_10", "x", "x_0", "x_1_2"} <= names


@pytest.mark.parametrize(
    "message, entry, named",
    [
        ("entries ['x_b'] match nothing", "x_b", True),
        ("modified: ['x_1', 'x_a']", "x_", False),  # inside a longer name
        ("modified: ['u_star']", "u", False),
        ("entry t is unused", "t", True),
        ("entries ['q_1_'] match nothing", "q_1", False),
        ("'zz' doesn't match and isn't a variable", "t", False),  # contractions
        ("entry 't' doesn't match", "t", True),
    ],
)
def test_names_entry_is_a_whole_token(message: str, entry: str, named: bool) -> None:
    assert names_entry(message, entry) is named
