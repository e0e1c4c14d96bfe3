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
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENABLE = "STEPOUTPUTLOSS_MATRIX"
if os.environ.get(ENABLE) != "1":  # before the costly imports and preload()
    pytest.skip(
        f"the mutation matrix is opt-in (~25 s on 2 cores): {ENABLE}=1 pytest "
        "tests/test_mutation_matrix.py (.ci/run runs it)",
        allow_module_level=True,
    )

from inprocess import preload  # noqa: E402
from matrix_worker import outcome_row  # noqa: E402

from conformance.requirements import SKIP_PREFIXES  # noqa: E402
from conformance.suite import CHECK_PROPERTY, IMPL_PROPERTY  # noqa: E402
from fixtures import mutants  # noqa: E402
from fixtures.mutants._base import COSTLY  # noqa: E402

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
# examples few (5) and not shrunk, and no plugin the checks do not use (the unraisable-
# exception plugin alone costs a forced gc per run).
UNUSED_PLUGINS = ("cacheprovider", "syrupy", "benchmark", "xdist", "unraisableexception")
FAST_ARGS = (
    "--tb=no",
    "-q",
    "--hypothesis-profile=stepoutputloss-matrix",
    *(arg for name in UNUSED_PLUGINS for arg in ("-p", f"no:{name}")),
)


def _outcomes(rows: list[dict], impls: dict[str, str]) -> dict[str, dict[str, str]]:
    """``{name: {check id: outcome}}`` from report rows (``matrix_worker.outcome_row``)."""
    by_spec = {spec: name for name, spec in impls.items()}
    outcomes: dict[str, dict[str, str]] = {name: {} for name in impls}
    for row in rows:
        props = row["props"]
        cid, spec = props[CHECK_PROPERTY], props[IMPL_PROPERTY]
        out = outcomes[by_spec[spec]]
        if row["when"] == "setup" and row["skipped"]:
            reason = row["reason"].removeprefix("Skipped: ")
            # not applicable / not exercised / deviates: the capability is not declared
            prefix = next((p for p in SKIP_PREFIXES if reason.startswith(p)), None)
            out[cid] = (
                f"{NOT_APPL}: {reason.removeprefix(prefix).split(' ', 1)[0]}"
                if prefix is not None
                else f"skip: {reason}"
            )
        elif row["failed"]:
            out[cid] = FAIL
        elif row["when"] == "call":
            out.setdefault(cid, XFAIL if row["xfail"] else PASS)
    return outcomes


def _suite_args(impls: dict[str, str]) -> list[str]:
    return [
        "--pyargs",
        "conformance.checks",
        "--stepoutputloss-impl=" + ",".join(impls.values()),
        *FAST_ARGS,
    ]


def _split(impls: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(in-process, subprocess)`` shares of ``impls``: the subprocess takes
    about 55 % of the mutants (measured best, 0.45 to 0.6 tried: the
    in-process share also spawns the distributed group), never the reference
    nor a mutant that runs the costly distributed check (one process group
    per session: keep them in one)."""
    costly = {
        name
        for name in impls
        if name != "reference" and mutants.load(name).KILLED_BY.startswith(tuple(COSTLY.values()))
    }
    movable = [n for n in impls if n != "reference" and n not in costly]
    moved = set(movable[: int(0.55 * (len(impls) - 1))])
    return (
        {n: s for n, s in impls.items() if n not in moved},
        {n: s for n, s in impls.items() if n in moved},
    )


def run_suite(pytester: pytest.Pytester, impls: dict[str, str]) -> dict[str, dict[str, str]]:
    """``{name: {check id: outcome}}``: the suite against every implementation
    of ``impls`` (``name -> module:factory``), in two sessions at once: one
    in-process (pytester) and one in a subprocess (``tests/matrix_worker.py``)."""
    here, there = _split(impls)
    worker = None
    if there:
        out_json = pytester.path / "matrix_worker.json"
        tests = Path(__file__).resolve().parent
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(tests.parent), str(tests), *filter(None, [env.get("PYTHONPATH")])]
        )
        worker = subprocess.Popen(
            [sys.executable, str(tests / "matrix_worker.py"), str(out_json), *_suite_args(there)],
            cwd=pytester.path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    reprec = pytester.inline_run(*_suite_args(here))
    rows = [outcome_row(rep) for rep in reprec.getreports("pytest_runtest_logreport")]
    outcomes = _outcomes(rows, here)
    if worker is not None:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode in (0, 1), (
            f"the matrix worker failed ({worker.returncode}): {err.decode()[-2000:]}"
        )
        outcomes.update(_outcomes(json.loads(out_json.read_text(encoding="utf-8")), there))
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
_MATRIX_ERROR: list[BaseException] = []


@pytest.fixture
def matrix(pytester: pytest.Pytester) -> dict[str, dict[str, str]]:
    """``{implementation: {check id: outcome}}`` for the reference and every
    mutant, computed once per test session."""
    if _MATRIX_ERROR:  # computed once: a failure is not retried by every test
        raise _MATRIX_ERROR[0]
    if not _MATRIX:
        impls = {"reference": REFERENCE}
        impls.update({n: f"fixtures.mutants.{n}:make_adapter" for n in mutants.mutant_names()})
        try:
            _MATRIX.update(run_suite(pytester, impls))
        except BaseException as err:
            _MATRIX_ERROR.append(err)
            raise
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
