"""The pytest plugin of the conformance suite (entry point ``pytest11``:
``conformance.plugin``).

- ``--stepoutputloss-impl pkg.module:make_adapter`` (fallback: the environment
  variable ``STEPOUTPUTLOSS_IMPL``; default: the reference's adapter) picks the
  implementation under test. ``make_adapter()`` returns a
  :class:`conformance.adapter.StepOutputLossAdapter`.
- ``--stepoutputloss-xfails FILE`` lists the implementation's known failures,
  one per line: ``<check id>  # <reason>``. A check id is
  ``<module file>::<check>`` (every parametrization) or
  ``<module file>::<check>[<params>]`` (one). Listed checks are strict
  expected failures: one that passes is reported as a failure ("XPASS(strict)").
- A check whose required capability the adapter does not declare is skipped
  with the reason ``not applicable: <capability>``.
- Several implementations, comma-separated, run in one session: every check
  is parametrized by ``impl=<module:factory>`` (the mutation matrix uses it).

The plugin only acts on the suite's own checks (``conformance/checks``); in any
other test run it adds its options and nothing else.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from conformance.adapter import Capability, StepOutputLossAdapter
from conformance.strategies import THOROUGH as _THOROUGH  # noqa: F401  (registers the hypothesis profiles)

ENV_VAR = "STEPOUTPUTLOSS_IMPL"
DEFAULT_IMPL = "fixtures.adapters.reference:make_adapter"
CHECKS_DIR = (Path(__file__).parent / "checks").resolve()
REQUIRES_MARKER = "stepoutputloss_requires"
NOT_APPLICABLE = "not applicable: "

requires = getattr(pytest.mark, REQUIRES_MARKER)
"""``@requires(Capability.X, ...)``: the check runs only if the adapter declares them all."""

_adapters_key = pytest.StashKey["dict[str, StepOutputLossAdapter]"]()
_xfails_key = pytest.StashKey["dict[str, str]"]()
_used_xfails_key = pytest.StashKey["set[str]"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stepoutputloss", "StepOutputLoss conformance suite")
    group.addoption(
        "--stepoutputloss-impl",
        default=None,
        metavar="MODULE:FACTORY",
        help=(
            "the implementation under test: a zero-argument factory returning an adapter, "
            f"as pkg.module:make_adapter (default: ${ENV_VAR}, else the reference, {DEFAULT_IMPL})"
        ),
    )
    group.addoption(
        "--stepoutputloss-xfails",
        default=None,
        metavar="FILE",
        help="known failures of the implementation: lines '<check id>  # <reason>' (strict xfail)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{REQUIRES_MARKER}(*capabilities): a conformance check that needs adapter capabilities",
    )


# ------------------------------------------------------------------ adapter


def impl_spec(config: pytest.Config) -> str:
    """The ``module:factory`` string in effect (option, env var, default)."""
    return config.getoption("--stepoutputloss-impl") or os.environ.get(ENV_VAR) or DEFAULT_IMPL


def load_adapter(spec: str) -> StepOutputLossAdapter:
    """Import ``module:factory``, call the factory, check the result's shape."""
    module_name, sep, factory_name = spec.partition(":")
    if not sep or not module_name or not factory_name:
        raise pytest.UsageError(
            f"--stepoutputloss-impl / {ENV_VAR} must be 'pkg.module:make_adapter', got {spec!r}."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise pytest.UsageError(
            f"cannot import the adapter module {module_name!r} of {spec!r}: {err}. "
            "Is the package installed in this environment?"
        ) from err
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise pytest.UsageError(
            f"{module_name!r} has no callable {factory_name!r} (from {spec!r})."
        )
    adapter = factory()
    missing = [
        a for a in ("name", "version", "capabilities", "build_loss") if not hasattr(adapter, a)
    ]
    if missing:
        raise pytest.UsageError(
            f"the adapter from {spec!r} lacks {missing}; see conformance/adapter.py "
            "(StepOutputLossAdapter)."
        )
    unknown = [c for c in adapter.capabilities if not isinstance(c, Capability)]
    if unknown:
        raise pytest.UsageError(
            f"the adapter from {spec!r} declares {unknown}, which are not "
            f"conformance.adapter.Capability members ({[c.value for c in Capability]})."
        )
    return adapter


def impl_specs(config: pytest.Config) -> list[str]:
    """Every ``module:factory`` in effect: the option (or env var) may list
    several, comma-separated, to run the suite against each in one session."""
    return [s.strip() for s in impl_spec(config).split(",") if s.strip()]


def get_adapters(config: pytest.Config) -> dict[str, StepOutputLossAdapter]:
    """The adapters under test by spec, loaded once per session (lazily: test
    runs that collect no check never import an implementation)."""
    if _adapters_key not in config.stash:
        config.stash[_adapters_key] = {spec: load_adapter(spec) for spec in impl_specs(config)}
    return config.stash[_adapters_key]


def get_adapter(config: pytest.Config, spec: str | None = None) -> StepOutputLossAdapter:
    """The adapter of ``spec`` (default: the first, usually the only one)."""
    adapters = get_adapters(config)
    return adapters[spec] if spec is not None else next(iter(adapters.values()))


IMPL_PARAM = "stepoutputloss_adapter"
IMPL_ID_PREFIX = "impl="


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """With several implementations, every check runs once per implementation
    (id segment ``impl=<module:factory>``; each adapter is set up once)."""
    if IMPL_PARAM not in metafunc.fixturenames or not _in_checks(metafunc.definition.path):
        return
    specs = impl_specs(metafunc.config)
    if len(specs) > 1:
        metafunc.parametrize(
            IMPL_PARAM,
            specs,
            indirect=True,
            ids=[IMPL_ID_PREFIX + spec for spec in specs],
            scope="session",
        )


@pytest.fixture(scope="session")
def stepoutputloss_adapter(request: pytest.FixtureRequest) -> StepOutputLossAdapter:
    """The adapter under test (see ``conformance.adapter``)."""
    return get_adapter(request.config, getattr(request, "param", None))


def item_impl(item: pytest.Item) -> str | None:
    """The implementation spec an item runs against, when several are given."""
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get(IMPL_PARAM)


# ------------------------------------------------------------------ items


def _in_checks(path: Path) -> bool:
    try:
        return path.resolve().parent == CHECKS_DIR
    except OSError:  # pragma: no cover - unusual file systems
        return False


def is_check(item: pytest.Item) -> bool:
    """Whether ``item`` is one of the suite's checks."""
    return _in_checks(item.path)


def strip_impl(name: str) -> str:
    """A check's name without the ``impl=...`` id segment that
    multi-implementation runs add (specs contain no ``-``)."""
    base, bracket, params = name.partition("[")
    if not bracket:
        return name
    kept = re.sub(r"(?:^|-)" + re.escape(IMPL_ID_PREFIX) + r"[^-]*", "", params[:-1]).lstrip("-")
    return f"{base}[{kept}]" if kept else base


def check_id(item: pytest.Item) -> str:
    """The stable id of a check: ``<module file>::<check>[<params>]`` (without
    the implementation, in multi-implementation runs)."""
    return f"{item.path.name}::{strip_impl(item.name)}"


def required_capabilities(item: pytest.Item) -> list[Capability]:
    """From ``@requires(...)`` markers, then from the ``requires`` attribute of
    the check's parameter values (cases and options), in that order."""
    needed: list[Capability] = []
    for mark in item.iter_markers(REQUIRES_MARKER):
        needed.extend(mark.args)
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for value in callspec.params.values():
            needed.extend(getattr(value, "requires", ()))
    return list(dict.fromkeys(needed))


def missing_capability(item: pytest.Item, declared: Iterable[Capability]) -> Capability | None:
    have = set(declared)
    return next((c for c in required_capabilities(item) if c not in have), None)


CHECK_PROPERTY = "stepoutputloss_check"
IMPL_PROPERTY = "stepoutputloss_impl"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a not-applicable check before any of its fixtures is set up."""
    if not is_check(item):
        return
    # every report of a check carries its check id and implementation
    item.user_properties.append((CHECK_PROPERTY, check_id(item)))
    item.user_properties.append((IMPL_PROPERTY, item_impl(item) or impl_specs(item.config)[0]))
    missing = missing_capability(item, get_adapter(item.config, item_impl(item)).capabilities)
    if missing is not None:
        pytest.skip(NOT_APPLICABLE + missing.value)


# ------------------------------------------------------------------ xfails


@dataclasses.dataclass(frozen=True)
class XfailEntry:
    check: str
    reason: str


def parse_xfails(text: str, source: str = "<xfails>") -> dict[str, str]:
    """``{check id: reason}`` from the xfails file format (see module doc).

    Blank lines and lines starting with ``#`` are ignored; every other line
    must carry a reason after ``#``.
    """
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        check, sep, reason = line.partition("#")
        check, reason = check.strip(), reason.strip()
        if not sep or not reason:
            raise pytest.UsageError(
                f"{source}:{number}: {raw!r} has no reason; write '<check id>  # <reason>'."
            )
        if "::" not in check or " " in check:
            raise pytest.UsageError(
                f"{source}:{number}: {check!r} is not a check id like "
                "'test_penalty.py::check_penalty_closed_form[case-2d-and-levels-reg-MSE]'."
            )
        out[check] = reason
    return out


def xfail_reason(xfails: dict[str, str], item: pytest.Item) -> tuple[str, str] | None:
    """The matching entry (exact id first, then the check's bare name)."""
    cid = check_id(item)
    if cid in xfails:
        return cid, xfails[cid]
    bare = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
    if bare in xfails:
        return bare, xfails[bare]
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(is_check(item) for item in items):
        get_adapters(config)  # a bad --stepoutputloss-impl is a usage error, once
    path = config.getoption("--stepoutputloss-xfails")
    if not path:
        return
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise pytest.UsageError(f"cannot read --stepoutputloss-xfails {path!r}: {err}") from err
    xfails = parse_xfails(text, str(path))
    config.stash[_xfails_key] = xfails
    used: set[str] = set()
    for item in items:
        if not is_check(item):
            continue
        found = xfail_reason(xfails, item)
        if found is not None:
            used.add(found[0])
            item.add_marker(pytest.mark.xfail(reason=found[1], strict=True))
    config.stash[_used_xfails_key] = used


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if _adapters_key not in config.stash:
        return
    tr = terminalreporter
    tr.section("StepOutputLoss conformance", sep="-")
    for spec, adapter in config.stash[_adapters_key].items():
        tr.write_line(f"implementation: {adapter.name} {adapter.version} ({spec})")
        declared = sorted(c.value for c in adapter.capabilities)
        tr.write_line(f"capabilities:   {', '.join(declared) or '(none)'}")
    not_applicable: dict[str, int] = {}
    for report in tr.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        if reason.startswith("Skipped: "):
            reason = reason[len("Skipped: ") :]
        if reason.startswith(NOT_APPLICABLE):
            not_applicable[reason] = not_applicable.get(reason, 0) + 1
    for reason, count in sorted(not_applicable.items()):
        tr.write_line(f"{reason}: {count} check(s)")
    if _xfails_key in config.stash:
        used: set[str] = config.stash.get(_used_xfails_key, set())
        listed: dict[str, str] = config.stash[_xfails_key]
        unused = sorted(set(listed) - used)
        if unused:
            tr.write_line(f"xfails entries matching no collected check: {unused}")
