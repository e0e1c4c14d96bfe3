"""A second adapter with fewer capabilities (``fixtures.variant.adapter``:
delta-carrying, opt-in selection, L1/L2-only penalty, raise on unmatched
entries): the suite reports what does not apply as "not applicable:
<capability>" and the variant passes everything that does apply."""

from __future__ import annotations

import collections

import pytest
from inprocess import preload

from conformance.adapter import Capability
from fixtures.variant.adapter import make_adapter

pytest_plugins = ("pytester",)

preload()  # before pytester snapshots sys.modules (see tests/inprocess.py)

UNDECLARED = sorted(c.value for c in set(Capability) - make_adapter().capabilities)


_RUN: list[tuple[dict[str, str], str]] = []


@pytest.fixture
def variant_run(pytester: pytest.Pytester) -> tuple[dict[str, str], str]:
    """(``{check id: outcome or skip reason}``, terminal output) of one run,
    shared by the tests of this module."""
    if not _RUN:
        _RUN.append(_run(pytester))
    return _RUN[0]


def _run(pytester: pytest.Pytester) -> tuple[dict[str, str], str]:
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "conformance.checks",
        "--stepoutputloss-impl=fixtures.variant.adapter:make_adapter",
        "-p",
        "no:cacheprovider",
        "-rs",
    )
    outcomes = {}
    for rep in result.reprec.getreports("pytest_runtest_logreport"):  # type: ignore[attr-defined]
        cid = rep.nodeid.rsplit("/", 1)[-1]
        if rep.skipped and isinstance(rep.longrepr, tuple):
            outcomes[cid] = rep.longrepr[2].removeprefix("Skipped: ")
        elif rep.failed or rep.when == "call":
            outcomes.setdefault(cid, rep.outcome)
    return outcomes, result.stdout.str()


def test_variant_passes_what_applies(variant_run: tuple[dict[str, str], str]) -> None:
    outcomes, _ = variant_run
    failed = [c for c, o in outcomes.items() if o == "failed"]
    assert not failed, f"the variant fails checks that apply to it: {failed}"
    assert sum(o == "passed" for o in outcomes.values()) >= 80


def test_contract_expresses_a_delta_carrying_stepper(
    variant_run: tuple[dict[str, str], str],
) -> None:
    """The variant carries deltas through training and plain prediction: the
    contract can express it, plain prediction included (its output is on the
    graph, its deltas are not)."""
    outcomes, _ = variant_run
    for check in [
        "test_plain_prediction.py::check_plain_prediction_detaches",
        "test_train_accumulation.py::check_train_accumulation[steps-4]",
        "test_train_metrics.py::check_train_metrics[features-both]",
        "test_train_gradient_flow.py::check_train_gradients[features-both]",
        "test_corrector_enabled.py::check_corrector_loss_needs_corrector[features-both]",
    ]:
        assert outcomes[check] == "passed", (check, outcomes[check])


def test_skip_reasons_say_deviates_not_exercised_or_not_applicable(
    variant_run: tuple[dict[str, str], str],
) -> None:
    """A capability the variant lacks is reported as a declared deviation
    (with the variant's own reason), as not exercised (a hook its adapter does
    not implement), or as not applicable (an optional extra) -- never as
    "not applicable" for a #1273 requirement."""
    outcomes, _ = variant_run
    skipped = {c: o for c, o in outcomes.items() if o not in ("passed", "failed")}
    reasons = collections.Counter(skipped.values())
    prefixes = ("deviates: ", "not exercised: ", "not applicable: ")
    assert all(r.startswith(prefixes) for r in reasons), reasons
    capabilities = {r.split(": ", 1)[1].split(" ", 1)[0] for r in reasons}
    assert capabilities <= set(UNDECLARED), capabilities
    deviations = make_adapter().deviations
    for cap, rid in [
        ("exclusion-matcher", "MATCH-1"),
        ("warn-once-unmatched", "WARN-1"),
        ("loss-config-regularization", "REG-4"),
    ]:
        assert f"deviates: {cap} ({rid}: {deviations[rid]})" in reasons, reasons
    assert (
        outcomes["test_exclusion_matching.py::check_exclusion_keeps_corrected_value[bare-3d-name]"]
        == f"deviates: exclusion-matcher (MATCH-1: {deviations['MATCH-1']})"
    )
    assert not any(r.startswith("not applicable: ") and "exclusion" in r for r in reasons)
    # what it declares instead runs: raise-on-unmatched, delta conversion, opt-in swap
    assert outcomes["test_exclusion_matching.py::check_unmatched_entry_raises"] == "passed"
    assert outcomes["test_target_swap.py::check_swap_partial[exclude-q_1-and-q2m]"] == "passed"
    assert (
        outcomes["test_gradient_flow.py::check_gradients_through_correction[features-both]"]
        == "passed"
    )


def test_summary_lists_not_applicable_capabilities(variant_run: tuple[dict[str, str], str]) -> None:
    _, out = variant_run
    assert "implementation: variant 0.1.0" in out
    assert "deviates: exclusion-matcher (MATCH-1: opt-in selection" in out
