"""Where #1273 leaves a choice open, the suite accepts every reasonable
reading. "warn-once validation of unmatched entries" is read two ways --
one warning listing every unmatched entry (the reference), or one warning
per entry (``fixtures/variant/warn_per_entry.py``) -- and both pass
``check_unmatched_entry_warns_once``; what is wrong either way (an entry
named twice, a warning after the first step with corrections, a matched
entry named, no warning) fails it."""

from __future__ import annotations

import pytest
from inprocess import preload

from conformance.suite import CHECK_PROPERTY, IMPL_PROPERTY

pytest_plugins = ("pytester",)

preload()

CHECK = "test_exclusion_matching.py::check_unmatched_entry_warns_once"
PASSING = {
    "one warning listing all": "conformance.adapters.reference:make_adapter",
    "one warning per entry": "fixtures.variant.warn_per_entry:make_adapter",
}
FAILING = {
    "no warning": "fixtures.mutants.never_warns:make_adapter",
    "a warning every step": "fixtures.mutants.warns_every_step:make_adapter",
    "each entry named twice": "fixtures.mutants.warns_entry_twice:make_adapter",
    "warnings after the first step with corrections": "fixtures.mutants.warns_late:make_adapter",
    "a matched entry named": "fixtures.mutants.warns_matched_entry:make_adapter",
}

_RUN: dict[str, str] = {}


@pytest.fixture
def outcomes(pytester: pytest.Pytester) -> dict[str, str]:
    """``{impl spec: outcome of the check}``, one in-process run for all."""
    if not _RUN:
        specs = [*PASSING.values(), *FAILING.values()]
        reprec = pytester.inline_run(
            "--pyargs",
            "conformance.checks.test_exclusion_matching",
            "--stepoutputloss-impl=" + ",".join(specs),
            "-k",
            "check_unmatched_entry_warns_once",
            "-p",
            "no:cacheprovider",
        )
        for rep in reprec.getreports("pytest_runtest_logreport"):
            props = dict(rep.user_properties)
            if props.get(CHECK_PROPERTY) != CHECK:
                continue
            if rep.failed:
                _RUN[props[IMPL_PROPERTY]] = "failed"
            elif rep.when == "call":
                _RUN.setdefault(props[IMPL_PROPERTY], rep.outcome)
    return _RUN


@pytest.mark.parametrize("reading", list(PASSING))
def test_both_readings_pass(outcomes: dict[str, str], reading: str) -> None:
    assert outcomes[PASSING[reading]] == "passed"


@pytest.mark.parametrize("wrong", list(FAILING))
def test_wrong_warnings_fail(outcomes: dict[str, str], wrong: str) -> None:
    assert outcomes[FAILING[wrong]] == "failed"
