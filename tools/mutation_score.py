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
    killed_now = {n for n, s in results.items() if s == "killed"}
    # a triaged mutant that mutmut kills now counts as killed, whatever its verdict
    excluded = {n for n, v in verdicts.items() if v in EXCLUDED and n not in killed_now}
    by_triage = {n for n, v in verdicts.items() if v == "killed" and n not in killed_now}
    stale = sorted(n for n in verdicts if n in killed_now)
    untriaged = sorted(set(results) - killed_now - set(verdicts))
    denominator = len(results) - len(excluded)
    killed = len(killed_now) + len(by_triage)
    print(f"triaged: {dict(sorted(collections.Counter(verdicts.values()).items()))}")
    score = 100.0 * killed / denominator if denominator else 0.0
    print(
        f"score: {len(killed_now)} killed by mutmut + {len(by_triage)} by the full suite "
        f"(verified) = {killed} of {denominator} non-equivalent, reachable mutants "
        f"= {score:.1f} %"
    )
    if stale:
        print(f"triaged, and now killed by mutmut itself ({len(stale)}): {stale}")
    if untriaged:
        print(f"untriaged survivors ({len(untriaged)}):")
        for name in untriaged:
            print(f"  {name}: {results[name]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
