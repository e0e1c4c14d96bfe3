"""Traceability: every check cites the requirement(s) it enforces, every
requirement has a check, the table is rendered into docs/requirements.md,
and an adapter's declared deviations are validated."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import conformance.checks
from conformance.requirements import (
    BY_ID,
    DEVIATES,
    NOT_APPLICABLE,
    NOT_EXERCISED,
    REQUIREMENTS,
    Kind,
    Requirement,
    audit,
    deviated_item,
    enforced_by,
    enforces,
    item_requirements,
    skip_prefix,
    to_markdown,
    validate_deviations,
)

ROOT = Path(__file__).resolve().parent.parent


def suite_checks() -> dict[str, object]:
    """``{<module>::<check>: function}`` for every check of conformance/checks."""
    out = {}
    for info in pkgutil.iter_modules(conformance.checks.__path__):
        if not info.name.startswith("test_"):
            continue
        module = importlib.import_module(f"conformance.checks.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("check_") and fn.__module__ == module.__name__:
                out[f"{info.name}.py::{name}"] = fn
    return out


def test_every_check_cites_a_requirement_and_every_requirement_has_a_check() -> None:
    checks = suite_checks()
    assert len(checks) >= 30
    assert audit(checks) == []


def test_audit_finds_a_check_without_requirement() -> None:
    def check_uncited() -> None: ...

    problems = audit({**suite_checks(), "test_x.py::check_uncited": check_uncited})
    assert problems == ["check test_x.py::check_uncited cites no requirement (add @enforces(...))"]


def test_audit_finds_a_requirement_without_check() -> None:
    orphan = Requirement("ORPHAN-1", "nothing checks this", "a test", Kind.OPTIONAL)
    problems = audit(suite_checks(), (*REQUIREMENTS, orphan))
    assert problems == ["requirement ORPHAN-1 has no check"]


def test_enforces_rejects_unknown_ids_at_import() -> None:
    with pytest.raises(ValueError, match=r"unknown requirement id\(s\) \['NOPE-1'\]"):
        enforces("SWAP-1", "NOPE-1")
    with pytest.raises(ValueError, match="at least one"):
        enforces()

    @enforces("SWAP-1", "TOTAL-1")
    def check_two() -> None: ...

    assert enforced_by(check_two) == ("SWAP-1", "TOTAL-1")


def test_table_entries_are_sourced() -> None:
    for r in REQUIREMENTS:
        if r.kind in (Kind.SEED, Kind.SEED_DEVIABLE):
            assert r.section and r.cites.startswith(f"#1273 ({r.section}): ")
        else:
            assert r.source and not r.section
    with pytest.raises(ValueError, match="quotes a section"):
        Requirement("X-1", "text", "quote", Kind.SEED)
    with pytest.raises(ValueError, match="not like 'SWAP-1'"):
        Requirement("swap", "text", "quote", Kind.OPTIONAL)


def test_docs_table_is_current() -> None:
    """docs/requirements.md is ``python -m conformance.requirements``'s output."""
    committed = (ROOT / "docs" / "requirements.md").read_text(encoding="utf-8")
    assert committed == to_markdown(), (
        "docs/requirements.md is stale: python -m conformance.requirements > docs/requirements.md"
    )


def test_readme_links_the_table() -> None:
    assert "docs/requirements.md" in (ROOT / "README.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------ items


def test_capability_requirements_count_only_where_exercised() -> None:
    enforced = ["PASS-1", "CONV-MAIN-1", "AREA-1", "CONV-AREA-1", "ENSEMBLE-1", "CONV-ENS-1"]
    ids, blame = item_requirements(enforced, [], [])
    assert ids == ["PASS-1", "CONV-MAIN-1"] and blame == ids
    ids, blame = item_requirements(enforced, ["area-weighted"], ["area-weighted"])
    assert ids == ["PASS-1", "CONV-MAIN-1", "AREA-1", "CONV-AREA-1"]
    assert blame == ["AREA-1"]  # the parametrization's extra broke (not its formula)
    # a capability the check function itself needs is not singled out
    ids, blame = item_requirements(["MASK-1"], ["data-mask", "ensemble"], ["ensemble"])
    assert ids == blame == ["MASK-1"]


@pytest.mark.parametrize(
    "capability, deviations, expected",
    [
        ("exclusion-matcher", {"MATCH-1": "opt-in selection"}, DEVIATES),
        ("exclusion-matcher", {}, NOT_EXERCISED),  # a #1273 requirement, not declared
        ("stepper", {}, NOT_EXERCISED),  # a hook: says nothing about the implementation
        ("distributed", {}, NOT_EXERCISED),  # an optional extra, but a hook
        ("data-mask", {}, NOT_APPLICABLE),  # an optional extra
        ("raise-on-unmatched", {}, NOT_APPLICABLE),
    ],
)
def test_skip_classification(capability: str, deviations: dict, expected: str) -> None:
    prefix, detail = skip_prefix(capability, deviations)
    assert prefix == expected and detail.startswith(capability)
    if expected == DEVIATES:
        assert detail == "exclusion-matcher (MATCH-1: opt-in selection)"


def test_deviated_item() -> None:
    assert deviated_item(["NEEDS-1"], {"NEEDS-1": "no flag"}) == "NEEDS-1: no flag"
    assert deviated_item(["SWAP-1", "MATCH-1"], {"MATCH-1": "opt-in"}) is None
    assert deviated_item([], {"MATCH-1": "opt-in"}) is None


def test_deviations_are_validated() -> None:
    assert validate_deviations(None) == {}
    assert validate_deviations({"MATCH-1": " opt-in "}) == {"MATCH-1": "opt-in"}
    with pytest.raises(ValueError, match="'NOPE-1', which is not a requirement"):
        validate_deviations({"NOPE-1": "x"})
    with pytest.raises(ValueError, match="only seed-deviable"):
        validate_deviations({"SWAP-1": "we swap differently"})
    with pytest.raises(ValueError, match="one-line reason"):
        validate_deviations({"MATCH-1": ""})
    with pytest.raises(ValueError, match="must be a mapping"):
        validate_deviations(["MATCH-1"])
    assert all(BY_ID[i].kind is Kind.SEED_DEVIABLE for i in ("MATCH-1", "WARN-1", "NEEDS-1"))


def test_breaking_names_the_requirement() -> None:
    from conformance.requirements import breaking, broken_ids

    with pytest.raises(AssertionError) as info, breaking("REG-2"):
        raise AssertionError("problem: the penalty differs")
    assert broken_ids(str(info.value)) == ["REG-2"]
    with pytest.raises(AssertionError) as info, breaking("NAMES-1"):
        raise ValueError("'u[0]' matches none")
    assert str(info.value).startswith("ValueError: 'u[0]' matches none")
    assert broken_ids(str(info.value)) == ["NAMES-1"]
    with pytest.raises(ValueError, match="unknown"):
        with breaking("NOPE-1"):
            pass
