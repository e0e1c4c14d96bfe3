"""``python -m conformance``: run the suite against one implementation and
write the conformance report.

    python -m conformance --impl pkg.module:make_adapter \\
        [--xfails known_failures.txt] [--report report.md] [--json report.json] \\
        [-- extra pytest arguments]

Prints the report (per property module, then every check that did not
pass, then the summary line); exits 0 when no check failed, 1 otherwise, and with
pytest's own code for usage or internal errors.

Property checks run under the ``stepoutputloss-no-shrink`` hypothesis profile
unless the extra arguments name a ``--hypothesis-profile``: a report needs
each check's outcome, not a minimal falsifying example. For the minimal
example of a failing property, run that check with pytest directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from conformance.plugin import CHECKS_DIR, DEFAULT_IMPL, load_adapter
from conformance.report import ReportCollector, build_report, to_json, to_markdown, to_text
from conformance.strategies import NO_SHRINK


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
    if not any(a.startswith("--hypothesis-profile") for a in args.pytest_args):
        pytest_args += ["--hypothesis-profile", NO_SHRINK]
    profile = settings.get_current_profile_name()
    try:
        code = pytest.main(pytest_args + list(args.pytest_args), plugins=[collector])
    finally:  # --hypothesis-profile loads a profile globally; restore the caller's
        settings.load_profile(profile)
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
    print(to_text(report))
    return 1 if report["summary"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
