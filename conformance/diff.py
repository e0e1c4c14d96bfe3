"""``python -m conformance diff OLD.json NEW.json``: conformance over time.

Compares two JSON reports (``python -m conformance --json``), e.g. of two
versions of one implementation, and lists

- **regressed**: checks present in both that now fail (``failed`` or a known
  failure, ``xfailed``) and did not before; requirements whose design outcome
  is now ``broken`` and was not;
- **newly pass**: checks that pass now and did not; requirements that hold now
  and did not;
- **changed**: any other change of outcome (e.g. ``passed`` -> ``not_exercised``:
  no longer checked, which is not a failure but is worth reading);
- **appeared** / **disappeared**: checks or requirements in only one report
  (a newer suite, or a different capability set), with their outcome.

Exit codes: 0 no regression, 1 a regression, 4 usage error (a file that
cannot be read, is not JSON, is not a conformance report, or whose
``schema_version`` this suite does not know). So another project's CI can gate
on "no conformance regression"::

    python -m conformance --impl mypkg.adapter:make_adapter --json new.json
    python -m conformance diff baseline.json new.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from conformance.report import SCHEMA, SCHEMA_VERSION

KNOWN_VERSIONS = (1, SCHEMA_VERSION)
"""Schema versions this suite reads (requirements only from version 2)."""
FAILING = ("failed", "xfailed")
OK, REGRESSION, USAGE = 0, 1, 4


class DiffUsageError(Exception):
    """A usage error: printed as one line, exit 4."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise DiffUsageError(f"{message} (see python -m conformance diff --help)")


def load(path: str) -> dict[str, Any]:
    """A conformance report from ``path``; any problem is a :class:`DiffUsageError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DiffUsageError(f"cannot read the report {path!r}: {err}") from err
    try:
        report = json.loads(text)
    except json.JSONDecodeError as err:
        raise DiffUsageError(f"{path!r} is not JSON: {err}") from err
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise DiffUsageError(
            f'{path!r} is not a conformance report (no "schema": {SCHEMA!r}); '
            "write one with python -m conformance --json FILE"
        )
    version = report.get("schema_version")
    if version not in KNOWN_VERSIONS:
        raise DiffUsageError(
            f"{path!r} has schema_version {version!r}; this suite reads {list(KNOWN_VERSIONS)}"
        )
    checks = report.get("checks")
    if not isinstance(checks, list) or not all(
        isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("outcome"), str)
        for c in checks
    ):
        raise DiffUsageError(f"{path!r}: 'checks' must be a list of {{id, outcome, ...}}")
    return report


@dataclasses.dataclass
class Change:
    id: str
    old: str | None
    new: str | None
    detail: str = ""

    def line(self) -> str:
        if self.old is None:
            text = f"{self.id}: {self.new}"
        elif self.new is None:
            text = f"{self.id}: was {self.old}"
        else:
            text = f"{self.id}: {self.old} -> {self.new}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclasses.dataclass
class Diff:
    """The changes between two reports, by kind (``checks`` / ``requirements``)."""

    regressed: dict[str, list[Change]]
    newly_pass: dict[str, list[Change]]
    changed: dict[str, list[Change]]
    appeared: dict[str, list[Change]]
    disappeared: dict[str, list[Change]]

    @property
    def has_regression(self) -> bool:
        return any(self.regressed.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            field.name: {
                kind: [dataclasses.asdict(c) for c in changes]
                for kind, changes in getattr(self, field.name).items()
            }
            for field in dataclasses.fields(self)
        }


def _outcomes(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in entries}


def _compare(
    old: dict[str, dict[str, Any]],
    new: dict[str, dict[str, Any]],
    bad: tuple[str, ...],
    good: str,
) -> tuple[list[Change], ...]:
    regressed, newly, changed, appeared, disappeared = [], [], [], [], []
    for cid in sorted(set(old) | set(new)):
        o, n = old.get(cid), new.get(cid)
        if o is None:
            assert n is not None
            appeared.append(Change(cid, None, n["outcome"], n.get("detail", "")))
        elif n is None:
            disappeared.append(Change(cid, o["outcome"], None))
        elif o["outcome"] != n["outcome"]:
            change = Change(cid, o["outcome"], n["outcome"], n.get("detail", ""))
            if n["outcome"] in bad and o["outcome"] not in bad:
                regressed.append(change)
            elif n["outcome"] == good:
                newly.append(change)
            else:
                changed.append(change)
    return regressed, newly, changed, appeared, disappeared


def diff(old: dict[str, Any], new: dict[str, Any]) -> Diff:
    """The changes from ``old`` to ``new`` (two loaded reports)."""
    result = Diff({}, {}, {}, {}, {})
    parts: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...], str]] = [
        ("checks", _outcomes(old["checks"]), _outcomes(new["checks"]), FAILING, "passed"),
    ]
    if "design" in old and "design" in new:
        parts.append(
            (
                "requirements",
                _outcomes(old["design"]),
                _outcomes(new["design"]),
                ("broken",),
                "holds",
            )
        )
    for kind, o, n, bad, good in parts:
        regressed, newly, changed, appeared, disappeared = _compare(o, n, bad, good)
        result.regressed[kind] = regressed
        result.newly_pass[kind] = newly
        result.changed[kind] = changed
        result.appeared[kind] = appeared
        result.disappeared[kind] = disappeared
    return result


def _label(report: dict[str, Any], path: str) -> str:
    impl = report.get("implementation", {})
    return f"{impl.get('name', '?')} {impl.get('version', '?')} ({path})"


def to_text(d: Diff, old_label: str, new_label: str) -> str:
    lines = [f"conformance diff: {old_label} -> {new_label}"]
    sections = [
        ("regressed", d.regressed),
        ("newly pass", d.newly_pass),
        ("changed", d.changed),
        ("appeared", d.appeared),
        ("disappeared", d.disappeared),
    ]
    for title, by_kind in sections:
        for kind, changes in by_kind.items():
            if changes:
                lines.append(f"{title} ({kind}, {len(changes)}):")
                lines += [f"  {c.line()}" for c in changes]
    counts = {kind: len(v) for kind, v in d.regressed.items()}
    if d.has_regression:
        lines.append("REGRESSION: " + ", ".join(f"{n} {kind}" for kind, n in counts.items() if n))
    else:
        lines.append("no regression")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    try:
        parser = _Parser(
            prog="python -m conformance diff",
            description="Compare two conformance reports (JSON); exit 1 on a regression.",
        )
        parser.add_argument("old", help="the earlier report (python -m conformance --json)")
        parser.add_argument("new", help="the later report")
        parser.add_argument("--json", default=None, help="also write the diff as JSON here")
        args = parser.parse_args(argv)
        old, new = load(args.old), load(args.new)
        d = diff(old, new)
        if args.json:
            try:
                Path(args.json).write_text(
                    json.dumps(d.to_dict(), indent=2) + "\n", encoding="utf-8"
                )
            except OSError as err:
                raise DiffUsageError(f"cannot write {args.json!r}: {err}") from err
    except DiffUsageError as err:
        print(f"python -m conformance diff: error: {err}", file=sys.stderr)
        return USAGE
    print(to_text(d, _label(old, args.old), _label(new, args.new)))
    return REGRESSION if d.has_regression else OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
