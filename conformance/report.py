"""The conformance report: checks x outcome, as Markdown and as JSON.

``python -m conformance --impl pkg.module:make_adapter --report report.md
--json report.json`` runs the suite in-process with :class:`ReportCollector`
attached and writes both files. The report is deterministic for a given
implementation and suite (no timestamps, no durations), so a committed report
can be regenerated and compared.

JSON schema (``schema_version`` 2)::

    {
      "schema": "stepoutputloss-conformance-report",
      "schema_version": 2,
      "implementation": {"name": str, "version": str, "adapter": "pkg.module:factory",
                         "capabilities": [str, ...],           # sorted
                         "deviations": {requirement id: reason}},  # the adapter's own words
      "environment": {"torch": str, "python": str},            # e.g. "2.13.0+cpu", "3.11.7"
      "summary": {"total": int, "passed": int, "failed": int, "deviates": int,
                  "not_exercised": int, "not_applicable": int, "xfailed": int,
                  "skipped": int},
      "design": [                                              # requirement table order
        {"id": "SWAP-1",                                       # conformance/requirements.py
         "kind": "seed" | "seed-deviable" | "convention" | "optional",
         "outcome": "holds" | "broken" | "deviates" | "not_exercised" | "not_applicable",
         "checks": {outcome: int, ...},                        # its checks' outcomes (nonzero)
         "detail": str}                                        # see below
      ],
      "xfails_unmatched": [str, ...],  # only when some xfails entry matches no check (sorted)
      "checks": [                                              # sorted by id
        {"id": "test_penalty.py::check_penalty_closed_form[...]",  # stable check id
         "module": "test_penalty.py",                          # the property
         "check": "check_penalty_closed_form",                 # without parameters
         "outcome": "passed" | "failed" | "deviates" | "not_exercised"
                    | "not_applicable" | "xfailed" | "skipped",
         "detail": str,                                        # see below
         "requirements": [str, ...],                           # ids it exercises
         "broke": [str, ...]}                                  # failed/xfailed: ids it breaks
      ]
    }

Check outcomes and ``detail``: ``passed`` (empty); ``failed``, the first line
of the failure (an ``XPASS(strict)`` of a listed known failure is a failure
too); ``deviates``, a capability the adapter lacks because it declares a
deviation from its requirement, or a check all of whose requirements it
deviates from (detail: the capability and ``<id>: <reason>``);
``not_exercised``, a hook the adapter does not implement (``stepper``,
``distributed``) or a #1273 capability neither declared nor deviated from
(detail: the capability); ``not_applicable``, an optional extra the adapter
does not declare (the capability); ``xfailed``, the reason from the xfails
file; ``skipped``, any other skip reason.

Design conformance (``design``), one entry per requirement: ``broken`` when a
failed or xfailed check breaks it; else ``deviates`` when the adapter
declares a deviation (detail: the reason); else ``holds`` when a check of it
passed; else ``not_exercised`` or ``not_applicable`` from its checks' skips
(``not_exercised`` when it has no check in this run, or when its checks
failed on another requirement first: "not verified"). ``detail`` of a broken
requirement lists the checks that broke it.

Which requirement a failed check breaks: the requirements its parameters
bring in (``[main-AreaWeightedMSE]`` -> ``AREA-1``), if any, else all of the
check's; of these, one that a passing parametrization of the same check also
exercises is cleared as long as another remains (see
:func:`conformance.requirements.item_requirements`).

Schema history: 1 had no ``deviations``, ``design``, ``requirements``,
``broke`` and only the outcomes passed, failed, not_applicable, xfailed,
skipped. A change to any key or meaning bumps ``schema_version``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from conformance.requirements import (
    BY_ID,
    DEVIATES,
    NOT_APPLICABLE,
    NOT_EXERCISED,
    REQUIREMENTS,
    broken_ids,
)
from conformance.suite import BLAME_PROPERTY, CHECK_PROPERTY, REQUIREMENTS_PROPERTY

SCHEMA = "stepoutputloss-conformance-report"
SCHEMA_VERSION = 2
OUTCOMES = (
    "passed",
    "failed",
    "deviates",
    "not_exercised",
    "not_applicable",
    "xfailed",
    "skipped",
)
DESIGN_OUTCOMES = ("holds", "broken", "deviates", "not_exercised", "not_applicable")
_SYMBOL = {
    "passed": "pass",
    "failed": "**FAIL**",
    "deviates": "deviates",
    "not_exercised": "not exercised",
    "not_applicable": "n/a",
    "xfailed": "xfail",
    "skipped": "skip",
}
_DESIGN_SYMBOL = {
    "holds": "holds",
    "broken": "**broken**",
    "deviates": "deviates",
    "not_exercised": "not exercised",
    "not_applicable": "n/a",
}
_SKIPS = (
    (DEVIATES, "deviates"),
    (NOT_EXERCISED, "not_exercised"),
    (NOT_APPLICABLE, "not_applicable"),
)


@dataclasses.dataclass
class CheckOutcome:
    id: str
    module: str
    check: str
    outcome: str
    detail: str = ""
    requirements: list[str] = dataclasses.field(default_factory=list)
    broke: list[str] = dataclasses.field(default_factory=list)
    blame: list[str] = dataclasses.field(default_factory=list, repr=False)
    """Candidates for ``broke`` (before siblings clear some); not in the JSON."""


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return ""


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    return str(getattr(crash, "message", None) or report.longrepr)


def _failure_line(report: pytest.TestReport) -> str:
    """The reason of a failure in one line: the suite's ``problem:`` (and
    ``diagnosis:``) lines when the message has them, else its first line."""
    message = _message(report)
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
        return detail  # whole: the reason may come late in the line
    # an implementation's error re-raised by requirements.breaking
    return re.sub(r"^AssertionError: (?=\w+(Error|Exception): )", "", _first_line(message))


def _skip_reason(report: pytest.TestReport) -> str:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason.removeprefix("Skipped: ")


def _ids(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


class ReportCollector:
    """A pytest plugin object that classifies each suite check's outcome."""

    def __init__(self) -> None:
        self.outcomes: dict[str, CheckOutcome] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # the check id and its requirements travel with the report
        # (user_properties, set in the check's setup), so reports from
        # pytest-xdist workers are counted too
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
            requirements = _ids(props.get(REQUIREMENTS_PROPERTY))
            blame = _ids(props.get(BLAME_PROPERTY))
            if outcome == "failed":  # the check may say which requirement broke
                named = [i for i in broken_ids(_message(report)) if i in requirements]
                blame = named or blame
            self.outcomes[cid] = CheckOutcome(
                cid, module, check, outcome, detail, requirements=requirements, blame=blame
            )

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
            for prefix, outcome in _SKIPS:
                if reason.startswith(prefix):
                    return outcome, reason[len(prefix) :]
            return "skipped", reason
        if report.when == "call":
            return "passed", ""
        return None, ""


def attribute_failures(checks: list[CheckOutcome]) -> None:
    """Fill ``broke`` of every failed / xfailed check: its blame candidates,
    less those a passing parametrization of the same check also exercises
    (as long as one remains)."""
    held: dict[str, set[str]] = {}
    for c in checks:
        if c.outcome == "passed":
            held.setdefault(f"{c.module}::{c.check}", set()).update(c.requirements)
    for c in checks:
        if c.outcome not in ("failed", "xfailed"):
            c.broke = []
            continue
        blame = c.blame or c.requirements
        cleared = [i for i in blame if i not in held.get(f"{c.module}::{c.check}", set())]
        c.broke = cleared or list(blame)


def design_conformance(
    checks: Iterable[CheckOutcome], deviations: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One entry per requirement (see the module docstring)."""
    by_req: dict[str, list[CheckOutcome]] = {}
    for c in checks:
        for rid in c.requirements:
            by_req.setdefault(rid, []).append(c)
    out = []
    for r in REQUIREMENTS:
        mine = by_req.get(r.id, [])
        counts = {o: sum(c.outcome == o for c in mine) for o in OUTCOMES}
        broke = [c.id for c in mine if r.id in c.broke]
        if broke:
            outcome = "broken"
            detail = f"{len(broke)} check(s) broke it: " + ", ".join(broke[:5])
            detail += " ..." if len(broke) > 5 else ""
        elif r.id in deviations:
            outcome, detail = "deviates", deviations[r.id]
        elif counts["passed"]:
            outcome, detail = "holds", ""
        elif counts["not_applicable"] and not counts["not_exercised"]:
            outcome, detail = "not_applicable", r.capability
        elif counts["failed"] or counts["xfailed"]:
            # its checks ran but failed on another requirement first
            outcome = "not_exercised"
            others = sorted({i for c in mine for i in c.broke})
            detail = f"not verified: its checks failed on {', '.join(others)}"
        else:
            outcome = "not_exercised"
            detail = next(
                (c.detail for c in mine if c.outcome == "not_exercised"),
                "no check of it ran" if not mine else "",
            )
            if not detail and counts["deviates"]:
                reasons = sorted({c.detail for c in mine if c.outcome == "deviates"})
                detail = "its checks are skipped by deviations: " + "; ".join(reasons)
        out.append(
            {
                "id": r.id,
                "kind": r.kind.value,
                "outcome": outcome,
                "checks": {o: n for o, n in counts.items() if n},
                "detail": detail,
            }
        )
    return out


def build_report(
    outcomes: Iterable[CheckOutcome],
    name: str,
    version: str,
    adapter: str,
    capabilities: Iterable[str],
    deviations: Mapping[str, str] | None = None,
    xfails_unmatched: Iterable[str] = (),
) -> dict[str, Any]:
    """The JSON-ready report (see the module docstring for the schema)."""
    import torch

    deviations = dict(sorted((deviations or {}).items()))
    checks = sorted(outcomes, key=lambda c: c.id)
    attribute_failures(checks)
    summary = {"total": len(checks), **{o: 0 for o in OUTCOMES}}
    for c in checks:
        summary[c.outcome] += 1
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "implementation": {
            "name": name,
            "version": version,
            "adapter": adapter,
            "capabilities": sorted(capabilities),
            "deviations": deviations,
        },
        "environment": {"torch": torch.__version__, "python": platform.python_version()},
        "summary": summary,
        "design": design_conformance(checks, deviations),
        "checks": [
            {k: v for k, v in dataclasses.asdict(c).items() if k != "blame"} for c in checks
        ],
    }
    unmatched = sorted(xfails_unmatched)
    if unmatched:
        report["xfails_unmatched"] = unmatched
    return report


def _brief(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in counts.items() if n)


def summary_line(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"{s['passed']} passed, {s['failed']} failed, {s['deviates']} deviates, "
        f"{s['not_exercised']} not exercised, {s['not_applicable']} not applicable, "
        f"{s['xfailed']} xfailed, {s['skipped']} skipped ({s['total']} checks)"
    )


def design_counts(report: dict[str, Any], kinds: Iterable[str] | None = None) -> dict[str, int]:
    wanted = None if kinds is None else set(kinds)
    counts = {o: 0 for o in DESIGN_OUTCOMES}
    for d in report["design"]:
        if wanted is None or d["kind"] in wanted:
            counts[d["outcome"]] += 1
    return counts


def design_line(report: dict[str, Any]) -> str:
    """``#1273 requirements: 18 hold, 2 broken, ...`` (seed kinds only)."""
    counts = design_counts(report, ("seed", "seed-deviable"))
    n = sum(counts.values())
    parts = [f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if v]
    return f"#1273 requirements ({n}): " + ", ".join(parts)


def to_text(report: dict[str, Any]) -> str:
    """The report for a terminal: one line per property module, then every
    check that did not pass with its detail (and the requirement a failure
    broke), the design conformance, then the summary line."""
    impl = report["implementation"]
    lines = [f"StepOutputLoss conformance: {impl['name']} {impl['version']} ({impl['adapter']})"]
    modules: dict[str, dict[str, int]] = {}
    for c in report["checks"]:
        counts = modules.setdefault(c["module"], {o: 0 for o in OUTCOMES})
        counts[c["outcome"]] += 1
    width = max((len(m) for m in modules), default=0)
    for module, counts in modules.items():
        lines.append(f"  {module:<{width}}  {_brief(counts)}")
    others = [c for c in report["checks"] if c["outcome"] != "passed"]
    if others:
        lines.append("not passed:")
        for c in others:
            broke = f" [broke {', '.join(c['broke'])}]" if c["broke"] else ""
            lines.append(f"  {_SYMBOL[c['outcome']]:<8} {c['id']}{broke}: {c['detail']}")
    not_holding = [d for d in report["design"] if d["outcome"] != "holds"]
    if not_holding:
        lines.append("requirements that do not hold:")
        for d in not_holding:
            lines.append(f"  {d['outcome'].replace('_', ' '):<14} {d['id']}: {d['detail']}")
    lines.append(design_line(report))
    if report.get("xfails_unmatched"):
        lines.append(f"xfails entries matching no check: {report['xfails_unmatched']}")
    lines.append(summary_line(report))
    return "\n".join(lines)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: dict[str, Any]) -> str:
    """Summary, design conformance (one row per requirement), the failures
    grouped by the requirement they broke, then one table per property
    module: check (case) x outcome x requirements."""
    impl, env = report["implementation"], report["environment"]
    lines = [
        f"# StepOutputLoss conformance report: {impl['name']} {impl['version']}",
        "",
        f"- adapter: `{impl['adapter']}`",
        f"- capabilities: {', '.join(impl['capabilities']) or '(none)'}",
    ]
    if impl["deviations"]:
        lines.append("- declared deviations from #1273:")
        lines += [f"  - `{i}`: {r}" for i, r in impl["deviations"].items()]
    lines += [
        f"- torch {env['torch']}, Python {env['python']}",
        f"- **{summary_line(report)}**",
        f"- **{design_line(report)}**",
    ]
    if report.get("xfails_unmatched"):
        unmatched = ", ".join(f"`{_cell(e)}`" for e in report["xfails_unmatched"])
        lines.append(f"- xfails entries matching no check: {unmatched}")
    lines += [
        "",
        "## Design conformance",
        "",
        "Every requirement of the suite's table (`docs/requirements.md`) is one of:",
        "**holds**, **broken** (a check of it failed), **deviates** (the adapter",
        "declares a deviation, in its own words), **not exercised** (the adapter does",
        "not implement the hook, or declares neither support nor a deviation), **n/a**",
        "(an optional extra the implementation does not have). *checks* counts every",
        "check that exercises the requirement; a failed one counts against the",
        "requirement it broke (see *Failures by requirement*).",
        "",
        "| requirement | kind | outcome | checks | detail |",
        "| --- | --- | --- | --- | --- |",
    ]
    for d in report["design"]:
        tally = ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in d["checks"].items())
        lines.append(
            f"| `{d['id']}` | {d['kind']} | {_DESIGN_SYMBOL[d['outcome']]} | {tally} | "
            f"{_cell(d['detail'])} |"
        )
    lines.append("")
    broken = [d for d in report["design"] if d["outcome"] == "broken"]
    if broken:
        lines += ["## Failures by requirement", ""]
        for d in broken:
            lines += [f"### {d['id']} ({d['kind']}): {BY_ID[d['id']].text}", ""]
            for c in report["checks"]:
                if d["id"] in c["broke"]:
                    lines.append(f"- `{c['id']}` ({c['outcome']}): {_cell(c['detail'])}")
            lines.append("")
    lines += ["## Checks", ""]
    modules: dict[str, list[dict[str, Any]]] = {}
    for c in report["checks"]:
        modules.setdefault(c["module"], []).append(c)
    for module, checks in modules.items():
        counts = {o: sum(c["outcome"] == o for c in checks) for o in OUTCOMES}
        lines += [
            f"### {module} ({_brief(counts)})",
            "",
            "| check | outcome | requirements | detail |",
            "| --- | --- | --- | --- |",
        ]
        for c in checks:
            case = c["id"].split("::", 1)[1]
            reqs = ", ".join(f"**{i}**" if i in c["broke"] else i for i in c["requirements"])
            lines.append(
                f"| `{_cell(case)}` | {_SYMBOL[c['outcome']]} | {reqs} | {_cell(c['detail'])} |"
            )
        lines.append("")
    return "\n".join(lines)
