"""The mutation matrix: the conformance suite, run in-process (pytester)
against the reference and every mutant of ``fixtures/mutants``, must

- pass every check against the reference (none skipped but by a capability
  the reference does not declare);
- kill every mutant with the check named in its ``KILLED_BY``;
- have no check that kills nothing.

The matrix (checks x implementations) is printed; run with ``-s`` to see it.
One in-process session runs the suite against all implementations at once
(``--stepoutputloss-impl a,b,...``); its outcomes are shared by the tests of
this module.
"""

from __future__ import annotations

import collections

import pytest
from inprocess import preload

from conformance.requirements import SKIP_PREFIXES
from conformance.suite import CHECK_PROPERTY, IMPL_PROPERTY
from fixtures import mutants

pytest_plugins = ("pytester",)

preload()  # before pytester snapshots sys.modules (see tests/inprocess.py)

REFERENCE = "conformance.adapters.reference:make_adapter"
VARIANT = "fixtures.variant.adapter:make_adapter"

PASS, FAIL, NOT_APPL, XFAIL = "pass", "fail", "n/a", "xfail"


def check_function(nodeid: str) -> str:
    """``<module file>::<check>`` from a node id (parameters dropped)."""
    path, _, name = nodeid.partition("::")
    return f"{path.rsplit('/', 1)[-1]}::{name.split('[', 1)[0]}"


# Whether a check fails is all the matrix needs: no tracebacks, hypothesis
# examples not shrunk, and no plugin the checks do not use (the unraisable-
# exception plugin alone costs a forced gc per run).
UNUSED_PLUGINS = ("cacheprovider", "syrupy", "benchmark", "xdist", "unraisableexception")
FAST_ARGS = (
    "--tb=no",
    "-q",
    "--hypothesis-profile=stepoutputloss-no-shrink",
    *(arg for name in UNUSED_PLUGINS for arg in ("-p", f"no:{name}")),
)


def run_suite(pytester: pytest.Pytester, impls: dict[str, str]) -> dict[str, dict[str, str]]:
    """``{name: {check id: outcome}}``: one in-process session runs the suite
    against every implementation of ``impls`` (``name -> module:factory``)."""
    reprec = pytester.inline_run(
        "--pyargs",
        "conformance.checks",
        "--stepoutputloss-impl=" + ",".join(impls.values()),
        *FAST_ARGS,
    )
    by_spec = {spec: name for name, spec in impls.items()}
    outcomes: dict[str, dict[str, str]] = {name: {} for name in impls}
    for rep in reprec.getreports("pytest_runtest_logreport"):
        props = dict(rep.user_properties)
        cid, spec = props[CHECK_PROPERTY], props[IMPL_PROPERTY]
        out = outcomes[by_spec[spec]]
        if rep.when == "setup" and rep.skipped:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            reason = reason.removeprefix("Skipped: ")
            # not applicable / not exercised / deviates: the capability is not declared
            prefix = next((p for p in SKIP_PREFIXES if reason.startswith(p)), None)
            out[cid] = (
                f"{NOT_APPL}: {reason.removeprefix(prefix).split(' ', 1)[0]}"
                if prefix is not None
                else f"skip: {reason}"
            )
        elif rep.failed:
            out[cid] = FAIL
        elif rep.when == "call":
            out.setdefault(cid, XFAIL if hasattr(rep, "wasxfail") else PASS)
    empty = [name for name, o in outcomes.items() if not o]
    assert not empty, f"the suite collected nothing against {empty}"
    return outcomes


def by_check(outcomes: dict[str, str]) -> dict[str, str]:
    """Outcome per check function: fail if any parametrization failed, n/a if
    all were not applicable, else pass."""
    grouped: dict[str, list[str]] = collections.defaultdict(list)
    for cid, outcome in outcomes.items():
        grouped[check_function(cid)].append(outcome)
    out = {}
    for check, values in grouped.items():
        if FAIL in values:
            out[check] = FAIL
        elif all(v.startswith(NOT_APPL) for v in values):
            out[check] = NOT_APPL
        else:
            out[check] = PASS
    return out


_MATRIX: dict[str, dict[str, str]] = {}


@pytest.fixture
def matrix(pytester: pytest.Pytester) -> dict[str, dict[str, str]]:
    """``{implementation: {check id: outcome}}`` for the reference and every
    mutant, computed once per test session."""
    if not _MATRIX:
        impls = {"reference": REFERENCE}
        impls.update({n: f"fixtures.mutants.{n}:make_adapter" for n in mutants.mutant_names()})
        _MATRIX.update(run_suite(pytester, impls))
    return _MATRIX


def render(matrix: dict[str, dict[str, str]]) -> str:
    """The matrix as text: one row per check function, one column per
    implementation (``.`` pass, ``K`` killed, ``X`` killed by the check meant
    for that mutant, ``-`` not applicable)."""
    impls = list(matrix)
    checks = sorted({c for outcomes in matrix.values() for c in by_check(outcomes)})
    meant = {name: mutants.load(name).KILLED_BY for name in impls if name != "reference"}
    width = max(len(c) for c in checks)
    lines = ["implementations:"]
    lines += [f"  {i:>2} {name}" for i, name in enumerate(impls)]
    lines.append(" " * width + " " + "".join(f"{i:>3}" for i in range(len(impls))))
    for check in checks:
        cells = []
        for name in impls:
            outcome = by_check(matrix[name]).get(check, "?")
            if outcome == FAIL:
                cells.append("X" if meant.get(name) == check else "K")
            elif outcome.startswith(NOT_APPL):
                cells.append("-")
            else:
                cells.append("." if outcome == PASS else "?")
        lines.append(f"{check:<{width}} " + "".join(f"{c:>3}" for c in cells))
    return "\n".join(lines)


def test_reference_passes_every_check(matrix: dict[str, dict[str, str]]) -> None:
    print("\n" + render(matrix))
    from conformance.adapters.reference import make_adapter

    declared = {c.value for c in make_adapter().capabilities}
    outcomes = matrix["reference"]
    bad = {c: o for c, o in outcomes.items() if o != PASS and not o.startswith(NOT_APPL)}
    assert not bad, f"the reference does not pass: {bad}"
    wrongly_skipped = {
        c: o
        for c, o in outcomes.items()
        if o.startswith(NOT_APPL) and o.split(": ", 1)[1] in declared
    }
    assert not wrongly_skipped, (
        f"skipped for a capability the reference declares: {wrongly_skipped}"
    )


@pytest.mark.parametrize("name", mutants.mutant_names())
def test_mutant_killed_by_its_check(matrix: dict[str, dict[str, str]], name: str) -> None:
    meant = mutants.load(name).KILLED_BY
    checks = by_check(matrix[name])
    assert meant in checks, f"{name}: KILLED_BY names {meant!r}, which is not a check of the suite"
    assert checks[meant] == FAIL, (
        f"mutant {name} survives {meant} ({checks[meant]}); it is killed by "
        f"{sorted(c for c, o in checks.items() if o == FAIL) or 'nothing'}"
    )


def test_every_check_kills_a_mutant(matrix: dict[str, dict[str, str]]) -> None:
    checks = set(by_check(matrix["reference"]))
    killers = {
        c
        for name in matrix
        if name != "reference"
        for c, o in by_check(matrix[name]).items()
        if o == FAIL
    }
    idle = sorted(checks - killers)
    assert not idle, f"checks that kill no mutant (add a mutant or drop the check): {idle}"
