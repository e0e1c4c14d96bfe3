"""The mechanical mutation score (``tox -e mutation``; docs/mutation.md).

Reads mutmut's results (``mutmut results --all=true``, run in the repository
root after ``mutmut run``) and the triage of the survivors
(``docs/mutation_triage.tsv``: ``<mutant>\\t<verdict>\\t<reason>``, verdict
``equivalent``, ``unreachable`` -- both left out of the score -- or ``killed``:
a mutmut survivor that the full conformance suite kills, verified by running
it with ``MUTANT_UNDER_TEST`` set), and prints

- the counts by mutmut status;
- the score: killed / (mutants - triaged equivalent - triaged unreachable);
- every survivor (or no-tests mutant) the triage does not cover.

Exit status 0; 1 when a survivor is untriaged (a stale triage after an edit
of the reference renumbers mutmut's mutants: re-triage).
"""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRIAGE = ROOT / "docs" / "mutation_triage.tsv"
VERDICTS = ("equivalent", "unreachable", "killed")
EXCLUDED = ("equivalent", "unreachable")


def mutmut_results() -> dict[str, str]:
    """``{mutant: status}`` from ``mutmut results --all=true``."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all=true"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    results = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            results[name] = status
    return results


def triage() -> dict[str, tuple[str, str]]:
    """``{mutant: (verdict, reason)}``."""
    out = {}
    for line in TRIAGE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, verdict, reason = line.split("\t", 2)
        if verdict not in VERDICTS:
            raise ValueError(f"{TRIAGE}: {name}: verdict {verdict!r} is not one of {VERDICTS}")
        out[name] = (verdict, reason)
    return out


def main() -> int:
    results = mutmut_results()
    triaged = triage()
    counts = collections.Counter(results.values())
    print("mutmut results:", dict(sorted(counts.items())))
    verdicts = {n: v for n, (v, _) in triaged.items() if n in results}
    excluded = {n: v for n, v in verdicts.items() if v in EXCLUDED}
    not_killed = {n for n, s in results.items() if s != "killed"}
    wrongly = sorted(n for n in verdicts if results[n] == "killed")
    untriaged = sorted(not_killed - set(verdicts))
    denominator = len(results) - len(excluded)
    killed = counts.get("killed", 0) + sum(1 for v in verdicts.values() if v == "killed")
    by_verdict = collections.Counter(verdicts.values())
    print(f"triaged: {dict(sorted(by_verdict.items()))}")
    score = 100.0 * killed / denominator if denominator else 0.0
    print(
        f"score: {killed} killed of {denominator} non-equivalent, reachable mutants = {score:.1f} %"
    )
    if wrongly:
        print(f"triaged as not killable but killed ({len(wrongly)}): {wrongly}")
    if untriaged:
        print(f"untriaged survivors ({len(untriaged)}):")
        for name in untriaged:
            print(f"  {name}: {results[name]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
