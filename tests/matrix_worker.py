"""The mutation matrix's second worker: runs the suite against some
implementations in a subprocess (the matrix runs the rest in-process at the
same time, so both cores work) and writes every test report's outcome as
JSON for the matrix to merge.

Usage: ``python tests/matrix_worker.py OUT.json PYTEST_ARGS...``
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest


def outcome_row(report: pytest.TestReport) -> dict[str, Any]:
    """What the matrix reads from one report (see ``run_suite``)."""
    reason = ""
    if report.skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return {
        "when": report.when,
        "skipped": report.skipped,
        "failed": report.failed,
        "reason": reason,
        "xfail": hasattr(report, "wasxfail"),
        "props": {str(k): str(v) for k, v in report.user_properties},
    }


class Recorder:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.rows.append(outcome_row(report))


def main(argv: list[str]) -> int:
    out, args = argv[0], argv[1:]
    recorder = Recorder()
    code = pytest.main(args, plugins=[recorder])
    with open(out, "w", encoding="utf-8") as f:
        json.dump(recorder.rows, f)
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
