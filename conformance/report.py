"""The conformance report: checks x outcome, as Markdown and as JSON.

``python -m conformance --impl pkg.module:make_adapter --report report.md
--json report.json`` runs the suite in-process with :class:`ReportCollector`
attached and writes both files. The report is deterministic for a given
implementation and suite (no timestamps, no durations), so a committed report
can be regenerated and compared.

JSON schema (``schema_version`` 1)::

    {
      "schema": "stepoutputloss-conformance-report",
      "schema_version": 1,
      "implementation": {"name": str, "version": str, "adapter": "pkg.module:factory",
                         "capabilities": [str, ...]},          # sorted
      "environment": {"torch": str, "python": str},            # e.g. "2.13.0+cpu", "3.11.7"
      "summary": {"total": int, "passed": int, "failed": int,
                  "not_applicable": int, "xfailed": int, "skipped": int},
      "checks": [                                              # sorted by id
        {"id": "test_penalty.py::check_penalty_closed_form[...]",  # stable check id
         "module": "test_penalty.py",                          # the property
         "check": "check_penalty_closed_form",                 # without parameters
         "outcome": "passed" | "failed" | "not_applicable" | "xfailed" | "skipped",
         "detail": str}                                        # see below
      ]
    }

``detail``: empty for ``passed``; the first line of the failure for
``failed`` (an ``XPASS(strict)`` of a listed known failure is a failure too);
the capability (e.g. ``"stepper"``) for ``not_applicable``; the reason from
the xfails file for ``xfailed``; the skip reason for ``skipped``. A change to
any of these keys or meanings bumps ``schema_version``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from collections.abc import Iterable
from typing import Any

import pytest

from conformance.suite import CHECK_PROPERTY, NOT_APPLICABLE

SCHEMA = "stepoutputloss-conformance-report"
SCHEMA_VERSION = 1
OUTCOMES = ("passed", "failed", "not_applicable", "xfailed", "skipped")
_SYMBOL = {
    "passed": "pass",
    "failed": "**FAIL**",
    "not_applicable": "n/a",
    "xfailed": "xfail",
    "skipped": "skip",
}


@dataclasses.dataclass
class CheckOutcome:
    id: str
    module: str
    check: str
    outcome: str
    detail: str = ""


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return ""


def _failure_line(report: pytest.TestReport) -> str:
    """The reason of a failure in one line: the suite's ``problem:`` (and
    ``diagnosis:``) lines when the message has them, else its first line."""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = str(getattr(crash, "message", None) or report.longrepr)
    fields = {}
    for line in message.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in (
            "assertionerror: property",
            "property",
            "problem",
            "diagnosis",
        ):
            fields[key.strip().lower().removeprefix("assertionerror: ")] = value.strip()
    if "problem" in fields:
        detail = fields["problem"]
        if "diagnosis" in fields:
            detail += f" ({fields['diagnosis']})"
        return detail[:300]
    return _first_line(message)


def _skip_reason(report: pytest.TestReport) -> str:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason.removeprefix("Skipped: ")


class ReportCollector:
    """A pytest plugin object that classifies each suite check's outcome."""

    def __init__(self) -> None:
        self.outcomes: dict[str, CheckOutcome] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # the check id travels with the report (user_properties, set in the
        # check's setup), so reports from pytest-xdist workers are counted too
        props = dict(report.user_properties)
        cid = props.get(CHECK_PROPERTY)
        if not isinstance(cid, str):
            return
        module, _, rest = cid.partition("::")
        check = rest.partition("[")[0]
        current = self.outcomes.get(cid)
        if current is not None and current.outcome == "failed":
            return  # a failure in any phase stands
        outcome, detail = self._classify(report)
        if outcome is None:
            return
        if current is None or outcome == "failed" or current.outcome == "passed":
            self.outcomes[cid] = CheckOutcome(cid, module, check, outcome, detail)

    @staticmethod
    def _classify(report: pytest.TestReport) -> tuple[str | None, str]:
        wasxfail = getattr(report, "wasxfail", None)
        if report.failed:
            if report.when == "call" and wasxfail is not None:
                return "failed", f"XPASS(strict): listed as a known failure ({wasxfail}) but passed"
            return "failed", _failure_line(report)
        if report.skipped:
            if wasxfail is not None:
                return "xfailed", wasxfail.removeprefix("reason: ")
            reason = _skip_reason(report)
            if reason.startswith(NOT_APPLICABLE):
                return "not_applicable", reason[len(NOT_APPLICABLE) :]
            return "skipped", reason
        if report.when == "call":
            return "passed", ""
        return None, ""


def build_report(
    outcomes: Iterable[CheckOutcome],
    name: str,
    version: str,
    adapter: str,
    capabilities: Iterable[str],
) -> dict[str, Any]:
    """The JSON-ready report (see the module docstring for the schema)."""
    import torch

    checks = sorted(outcomes, key=lambda c: c.id)
    summary = {"total": len(checks), **{o: 0 for o in OUTCOMES}}
    for c in checks:
        summary[c.outcome] += 1
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "implementation": {
            "name": name,
            "version": version,
            "adapter": adapter,
            "capabilities": sorted(capabilities),
        },
        "environment": {"torch": torch.__version__, "python": platform.python_version()},
        "summary": summary,
        "checks": [dataclasses.asdict(c) for c in checks],
    }


def summary_line(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"{s['passed']} passed, {s['failed']} failed, {s['not_applicable']} not applicable, "
        f"{s['xfailed']} xfailed, {s['skipped']} skipped ({s['total']} checks)"
    )


def to_text(report: dict[str, Any]) -> str:
    """The report for a terminal: one line per property module, then every
    check that did not pass with its detail, then the summary line."""
    impl = report["implementation"]
    lines = [f"StepOutputLoss conformance: {impl['name']} {impl['version']} ({impl['adapter']})"]
    modules: dict[str, dict[str, int]] = {}
    for c in report["checks"]:
        counts = modules.setdefault(c["module"], {o: 0 for o in OUTCOMES})
        counts[c["outcome"]] += 1
    width = max((len(m) for m in modules), default=0)
    for module, counts in modules.items():
        brief = ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in counts.items() if n)
        lines.append(f"  {module:<{width}}  {brief}")
    others = [c for c in report["checks"] if c["outcome"] != "passed"]
    if others:
        lines.append("not passed:")
        lines += [f"  {_SYMBOL[c['outcome']]:<8} {c['id']}: {c['detail']}" for c in others]
    lines.append(summary_line(report))
    return "\n".join(lines)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: dict[str, Any]) -> str:
    """Summary, then one table per property module: check (case) x outcome."""
    impl, env = report["implementation"], report["environment"]
    lines = [
        f"# StepOutputLoss conformance report: {impl['name']} {impl['version']}",
        "",
        f"- adapter: `{impl['adapter']}`",
        f"- capabilities: {', '.join(impl['capabilities']) or '(none)'}",
        f"- torch {env['torch']}, Python {env['python']}",
        f"- **{summary_line(report)}**",
        "",
    ]
    modules: dict[str, list[dict[str, Any]]] = {}
    for c in report["checks"]:
        modules.setdefault(c["module"], []).append(c)
    for module, checks in modules.items():
        counts = {o: sum(c["outcome"] == o for c in checks) for o in OUTCOMES}
        brief = ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in counts.items() if n)
        lines += [
            f"## {module} ({brief})",
            "",
            "| check | outcome | detail |",
            "| --- | --- | --- |",
        ]
        for c in checks:
            case = c["id"].split("::", 1)[1]
            lines.append(f"| `{_cell(case)}` | {_SYMBOL[c['outcome']]} | {_cell(c['detail'])} |")
        lines.append("")
    return "\n".join(lines)
