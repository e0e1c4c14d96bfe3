"""``python -m conformance``: run the suite against one implementation and
write the conformance report.

    python -m conformance --impl pkg.module:make_adapter \\
        [--xfails known_failures.txt] [--report report.md] [--json report.json] \\
        [-- extra pytest arguments]

Prints the summary line; exits 0 when no check failed, 1 otherwise, and with
pytest's own code for usage or internal errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from conformance.plugin import CHECKS_DIR, DEFAULT_IMPL, load_adapter
from conformance.report import ReportCollector, build_report, summary_line, to_json, to_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--impl", default=DEFAULT_IMPL, help=f"module:factory (default {DEFAULT_IMPL})"
    )
    parser.add_argument("--xfails", default=None, help="known-failures file (strict xfails)")
    parser.add_argument("--report", default=None, help="write the Markdown report here")
    parser.add_argument("--json", default=None, help="write the JSON report here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    adapter = load_adapter(args.impl)
    collector = ReportCollector()
    pytest_args = [
        str(CHECKS_DIR),
        "-q",
        "-p",
        "no:cacheprovider",
        "--stepoutputloss-impl",
        args.impl,
    ]
    if args.xfails:
        pytest_args += ["--stepoutputloss-xfails", args.xfails]
    code = pytest.main(pytest_args + list(args.pytest_args), plugins=[collector])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return int(code)
    report = build_report(
        collector.outcomes.values(),
        name=adapter.name,
        version=adapter.version,
        adapter=args.impl,
        capabilities=[c.value for c in adapter.capabilities],
    )
    if args.report:
        Path(args.report).write_text(to_markdown(report))
    if args.json:
        Path(args.json).write_text(to_json(report))
    line = summary_line(report)
    print(f"{adapter.name} {adapter.version}: {line}")
    return 1 if report["summary"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
