"""``python -m conformance``: run the suite against one implementation and
write the conformance report.

    python -m conformance [--impl pkg.module:make_adapter] \\
        [--xfails known_failures.txt] [--strict-xfails] [--report report.md] \\
        [--json report.json] [--timeout SECONDS] [--device DEVICE] \\
        [-- extra pytest arguments]

Without ``--impl`` it checks the reference (the embedded default,
``conformance.adapters.reference:make_adapter``) and says so in its first line.
Prints the report (per property module, then every check that did not pass,
then the summary line). Exit codes follow pytest's: 0 every check passed or is
not applicable, 1 a check failed (or, with ``--strict-xfails``, an xfails
entry matches no check), 2 interrupted (Ctrl-C or SIGTERM: the report is
still written for the checks that ran), 3 internal error, 4 usage error (one line, no
traceback: a bad ``--impl``, an unreadable xfails file, a report path that
cannot be written — all checked before anything runs), 5 no check ran.

``python -m conformance diff OLD.json NEW.json`` compares two reports
(:mod:`conformance.diff`): exit 0 no regression, 1 a regression, 4 usage error.

Property checks run under the ``stepoutputloss-no-shrink`` hypothesis profile
unless the extra arguments name a ``--hypothesis-profile``: a report needs
each check's outcome, not a minimal falsifying example. For the minimal
example of a failing property, run that check with pytest directly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

USAGE_ERROR = int(pytest.ExitCode.USAGE_ERROR)
HYPOTHESIS_STORAGE = "HYPOTHESIS_STORAGE_DIRECTORY"


class UsageError(Exception):
    """A usage error of ``python -m conformance``: printed as one line, exit 4."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own exit code 2 means "interrupted"
        raise UsageError(f"{message} (see python -m conformance --help)")


def _writable_file(path: str, option: str) -> Path:
    """``path`` can be written: its directory exists and is writable, and it is
    not a directory itself. Checked before the run, not after it."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise UsageError(f"{option} {path!r} is a directory; give a file path.")
    if not parent.is_dir():
        raise UsageError(f"{option} {path!r}: the directory {str(parent)!r} does not exist.")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"{option} {path!r} is not writable.")
    return target


def _check_xfails(path: str) -> None:
    from conformance.suite import read_xfails

    try:
        read_xfails(path)
    except pytest.UsageError as err:
        raise UsageError(str(err)) from err


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["diff"]:  # python -m conformance diff OLD.json NEW.json
        from conformance.diff import main as diff_main

        return diff_main(argv[1:])
    try:
        return _main(argv)
    except UsageError as err:
        print(f"python -m conformance: error: {err}", file=sys.stderr)
        return USAGE_ERROR


def _main(argv: list[str]) -> int:
    from conformance.suite import DEFAULT_IMPL

    parser = _Parser(prog="python -m conformance", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--impl",
        default=None,
        help=f"module:factory of the implementation's adapter (default: the reference, {DEFAULT_IMPL})",
    )
    parser.add_argument("--xfails", default=None, help="known-failures file (strict xfails)")
    parser.add_argument(
        "--strict-xfails",
        action="store_true",
        help="fail the run when an xfails entry matches no check of the suite",
    )
    parser.add_argument(
        "--timeout",
        default=None,
        metavar="SECONDS",
        help="wall-clock limit of one check, enforced on the adapter's calls (default 300)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device of the loss-level checks' tensors (default cpu)",
    )
    parser.add_argument("--report", default=None, help="write the Markdown report here")
    parser.add_argument("--json", default=None, help="write the JSON report here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    # everything that can be wrong with the command line, before anything runs
    report_path = _writable_file(args.report, "--report") if args.report else None
    json_path = _writable_file(args.json, "--json") if args.json else None
    if args.xfails:
        _check_xfails(args.xfails)
    impl = args.impl or DEFAULT_IMPL
    if args.impl:
        print(f"StepOutputLoss conformance suite: checking {impl}", flush=True)
    else:
        print(
            f"StepOutputLoss conformance suite: checking the reference ({impl}, the default; "
            "name yours with --impl pkg.module:make_adapter)",
            flush=True,
        )
    from conformance.plugin import DEVICE_OPTION, STRICT_XFAILS_OPTION, TIMEOUT_OPTION

    extra = list(args.pytest_args)
    if args.strict_xfails:
        extra.append(STRICT_XFAILS_OPTION)
    if args.timeout is not None:
        extra += [TIMEOUT_OPTION, args.timeout]
    if args.device is not None:
        extra += [DEVICE_OPTION, args.device]
    if os.environ.get(HYPOTHESIS_STORAGE):  # the user asked for a place: use it
        return run(impl, args.xfails, extra, report_path, json_path)
    # otherwise hypothesis's files (.hypothesis/) go to a temporary directory,
    # not the user's working directory
    with tempfile.TemporaryDirectory(prefix="stepoutputloss-hypothesis-") as storage:
        os.environ[HYPOTHESIS_STORAGE] = storage
        try:
            return run(impl, args.xfails, extra, report_path, json_path)
        finally:
            del os.environ[HYPOTHESIS_STORAGE]


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a CI job cancelled, ``kill``) interrupts the run like Ctrl-C,
    so the report of the checks that ran is still written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Session:
    """Keeps the session's config, to read what the suite learned after the run."""

    config: pytest.Config | None = None

    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config


def run(
    impl: str,
    xfails: str | None,
    extra: list[str],
    report_path: Path | None,
    json_path: Path | None,
) -> int:
    from hypothesis import settings

    from conformance.report import ReportCollector, build_report, to_json, to_markdown, to_text
    from conformance.strategies import NO_SHRINK
    from conformance.suite import CHECKS_DIR, adapter_deviations, load_adapter, unmatched_xfails

    try:
        adapter = load_adapter(impl)  # built once per process: the run reuses it
    except pytest.UsageError as err:
        raise UsageError(str(err)) from err
    collector = ReportCollector()
    pytest_args = [
        str(CHECKS_DIR),
        # the suite's own settings only: not the pytest config file or the
        # conftest.py files of the project the user runs this from (a
        # virtualenv inside the project would otherwise pick up its
        # filterwarnings = error, addopts, autouse fixtures, ...)
        "-c",
        os.devnull,
        "--rootdir",
        str(CHECKS_DIR.parent),
        "--confcutdir",
        str(CHECKS_DIR.parent),
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
        "--stepoutputloss-impl",
        impl,
    ]
    if xfails:
        pytest_args += ["--stepoutputloss-xfails", xfails]
    if not any(a.startswith("--hypothesis-profile") for a in extra):
        pytest_args += ["--hypothesis-profile", NO_SHRINK]
    profile = settings.get_current_profile_name()
    session = _Session()
    try:
        with _sigterm_interrupts():
            code = pytest.ExitCode(
                pytest.main(pytest_args + list(extra), plugins=[collector, session])
            )
    finally:  # --hypothesis-profile loads a profile globally; restore the caller's
        settings.load_profile(profile)
    unmatched = [] if session.config is None else unmatched_xfails(session.config)
    if code not in (
        pytest.ExitCode.OK,
        pytest.ExitCode.TESTS_FAILED,
        pytest.ExitCode.INTERRUPTED,
    ):
        return int(code)
    report = build_report(
        collector.outcomes.values(),
        name=adapter.name,
        version=adapter.version,
        adapter=impl,
        capabilities=[c.value for c in adapter.capabilities],
        deviations=adapter_deviations(adapter),
        xfails_unmatched=unmatched,
    )
    if report_path is not None:
        report_path.write_text(to_markdown(report), encoding="utf-8")
    if json_path is not None:
        json_path.write_text(to_json(report), encoding="utf-8")
    print(to_text(report))
    if code == pytest.ExitCode.INTERRUPTED:
        print("interrupted: the report covers the checks that ran", file=sys.stderr)
        return int(code)
    if report["summary"]["failed"] or code == pytest.ExitCode.TESTS_FAILED:
        if unmatched and not report["summary"]["failed"]:
            print(
                f"xfails entries matching no check (--strict-xfails): {unmatched}", file=sys.stderr
            )
        return int(pytest.ExitCode.TESTS_FAILED)
    if report["summary"]["total"] == 0:
        print("no check ran: nothing was verified", file=sys.stderr)
        return int(pytest.ExitCode.NO_TESTS_COLLECTED)
    return int(pytest.ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
