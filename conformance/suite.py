"""The conformance suite's pytest machinery, registered by the light entry
plugin (:mod:`conformance.plugin`) when the suite is used.

- ``--stepoutputloss-impl pkg.module:make_adapter`` (fallback: the environment
  variable ``STEPOUTPUTLOSS_IMPL``) picks the implementation under test; a run
  that collects the suite's checks and names none is a usage error (exit 4).
  ``make_adapter()`` returns a :class:`conformance.adapter.StepOutputLossAdapter`
  and is called once per process for each spec.
- ``--stepoutputloss-xfails FILE`` lists the implementation's known failures,
  one per line: ``<check id>  # <reason>``. A check id is
  ``<module file>::<check>`` (every parametrization) or
  ``<module file>::<check>[<params>]`` (one). Listed checks are strict
  expected failures: one that passes is reported as a failure ("XPASS(strict)").
- A check whose required capability the adapter does not declare is skipped
  with the reason ``not applicable: <capability>``.
- Several implementations, comma-separated, run in one session: every check
  is parametrized by ``impl=<module:factory>`` (the mutation matrix uses it).
- ``--stepoutputloss-strict-xfails``: an xfails entry that matches no check
  of the suite fails the run (without it, such entries are listed in the
  terminal summary and the report).
- ``--stepoutputloss-timeout SECONDS`` (default 300): every check's
  wall-clock limit, enforced on the adapter's calls (:mod:`conformance.guard`);
  the distributed group's job is bounded by it too.
- ``--stepoutputloss-device DEVICE`` (default ``cpu``): the loss-level checks
  hand the adapter every tensor on ``DEVICE``.

Harness integrity: the checks hold the adapter through
:class:`conformance.isolation.GuardedAdapter` (copies of everything handed
over, mutation detection, result validation) and every check runs inside a
:class:`conformance.guard.CheckGuard` (global torch state restored and
leaks failing the check, the time bound). A guard incident fails the check's
report whatever the check itself made of it.

It only acts on the suite's own checks (``conformance/checks``).
"""

from __future__ import annotations

import collections.abc
import importlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from conformance import guard
from conformance.adapter import AdapterBase, Capability, StepOutputLossAdapter
from conformance.isolation import GuardedAdapter
from conformance.plugin import (
    DEVICE_OPTION,
    ENFORCES_MARKER,
    ENV_VAR,
    IMPL_OPTION,
    REQUIRES_MARKER,
    STRICT_XFAILS_OPTION,
    TIMEOUT_OPTION,
    XFAILS_OPTION,
)
from conformance.requirements import (
    DEVIATES,
    REQUIREMENT_OF_CAPABILITY,
    SKIP_PREFIXES,
    deviated_item,
    item_requirements,
    skip_prefix,
    validate_deviations,
)

DEFAULT_IMPL = "conformance.adapters.reference:make_adapter"
"""The embedded default of ``python -m conformance`` (never of a pytest run)."""
CHECKS_DIR = (Path(__file__).parent / "checks").resolve()

_adapters_key = pytest.StashKey["dict[str, StepOutputLossAdapter]"]()
_xfails_key = pytest.StashKey["dict[str, str]"]()
_unmatched_key = pytest.StashKey["set[str]"]()
_guarded_key = pytest.StashKey["dict[str, GuardedAdapter]"]()


# ------------------------------------------------------------------ adapter


NO_IMPL = (
    "the conformance suite needs the implementation under test: pass "
    f"{IMPL_OPTION} pkg.module:make_adapter (or set {ENV_VAR}); "
    f"to check the reference, name it: {IMPL_OPTION} {DEFAULT_IMPL}"
)


def impl_spec(config: pytest.Config, required: bool = True) -> str:
    """The ``module:factory`` string in effect (option, else env var). With
    neither, a usage error saying how to name one (``required``) or ``""``."""
    spec = config.getoption(IMPL_OPTION) or os.environ.get(ENV_VAR) or ""
    if not spec and required:
        raise pytest.UsageError(NO_IMPL)
    return spec


_loaded: dict[str, StepOutputLossAdapter] = {}


def load_adapter(spec: str) -> StepOutputLossAdapter:
    """Import ``module:factory``, call the factory, check the result's shape;
    once per process for each spec (later calls return the same adapter)."""
    if spec in _loaded:
        return _loaded[spec]
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
            "Is the package installed in this environment? (An adapter module in the current "
            "directory needs `python -m pytest`: plain `pytest` does not put the current "
            "directory on sys.path.)"
        ) from err
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise pytest.UsageError(
            f"{module_name!r} has no callable {factory_name!r} (from {spec!r})."
        )
    try:
        adapter = factory()
    except Exception as err:  # the user's factory: any error is a usage error
        raise pytest.UsageError(
            f"the adapter factory {spec!r} raised {type(err).__name__}: {err}. "
            "make_adapter() must build the adapter without arguments."
        ) from err
    validate_adapter(adapter, spec)
    _loaded[spec] = adapter
    return adapter


# the capability-gated hooks of StepOutputLossAdapter
CAPABILITY_METHODS: dict[Capability, str] = {
    Capability.CORRECTOR_CONFIG: "build_corrector_config",
    Capability.STEPPER: "build_stepper",
    Capability.DISTRIBUTED: "train_on_batch_distributed",
}


def validate_adapter(adapter: object, spec: str) -> None:
    """The adapter's shape, checked before any check runs: a usage error names
    the adapter and what is wrong (see ``conformance/adapter.py``)."""
    where = f"the adapter from {spec!r}"
    missing = [
        a for a in ("name", "version", "capabilities", "build_loss") if not hasattr(adapter, a)
    ]
    if missing:
        raise pytest.UsageError(
            f"{where} lacks {missing}; see conformance/adapter.py (StepOutputLossAdapter)."
        )
    caps = adapter.capabilities  # type: ignore[attr-defined]
    if isinstance(caps, (str, bytes)) or not isinstance(caps, (set, frozenset, list, tuple)):
        raise pytest.UsageError(
            f"{where}: capabilities must be a set of conformance.adapter.Capability "
            f"members, e.g. frozenset({{Capability.STEPPER}}); got {caps!r}."
        )
    unknown = [c for c in caps if not isinstance(c, Capability)]
    if unknown:
        raise pytest.UsageError(
            f"{where} declares {unknown}, which are not "
            f"conformance.adapter.Capability members ({[c.value for c in Capability]})."
        )
    if not callable(adapter.build_loss):  # type: ignore[attr-defined]
        raise pytest.UsageError(f"{where}: build_loss is not callable.")
    try:
        deviations = validate_deviations(getattr(adapter, "deviations", None))
    except ValueError as err:
        raise pytest.UsageError(f"{where}: {err}") from err
    both = sorted(c.value for c in caps if REQUIREMENT_OF_CAPABILITY.get(c.value) in deviations)
    if both:
        raise pytest.UsageError(
            f"{where} declares {both} and a deviation from their requirement(s) "
            f"{[REQUIREMENT_OF_CAPABILITY[c] for c in both]}; declare one or the other."
        )
    for capability, method in CAPABILITY_METHODS.items():
        inherited = getattr(type(adapter), method, None) is getattr(AdapterBase, method)
        if capability in caps and (inherited or not callable(getattr(adapter, method, None))):
            raise pytest.UsageError(
                f"{where} declares {capability.value!r} but has no {method}() method; "
                "implement it or drop the capability."
            )


def impl_specs(config: pytest.Config, required: bool = True) -> list[str]:
    """Every ``module:factory`` in effect: the option (or env var) may list
    several, comma-separated, to run the suite against each in one session."""
    return [s.strip() for s in impl_spec(config, required).split(",") if s.strip()]


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
    specs = impl_specs(metafunc.config, required=False)  # none: a usage error after collection
    if len(specs) > 1:
        metafunc.parametrize(
            IMPL_PARAM,
            specs,
            indirect=True,
            ids=[IMPL_ID_PREFIX + spec for spec in specs],
            scope="session",
        )


def timeout_s(config: pytest.Config) -> float:
    """``--stepoutputloss-timeout`` in seconds (default
    :data:`conformance.guard.DEFAULT_TIMEOUT_S`); anything but a positive
    number is a usage error."""
    raw = config.getoption(TIMEOUT_OPTION)
    if raw is None:
        return guard.DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise pytest.UsageError(
            f"{TIMEOUT_OPTION} must be a positive number of seconds, got {raw!r}."
        )
    return value


def device(config: pytest.Config) -> str:
    """``--stepoutputloss-device`` (default ``cpu``), checked: a usage error
    names a device torch does not know or cannot use here."""
    import torch

    raw = config.getoption(DEVICE_OPTION) or "cpu"
    try:
        parsed = torch.device(raw)
    except (RuntimeError, ValueError) as err:
        raise pytest.UsageError(
            f"{DEVICE_OPTION} {raw!r} is not a torch device ({err}); e.g. cpu, cuda, cuda:1."
        ) from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(
            f"{DEVICE_OPTION} {raw!r}: CUDA is not available in this torch build or machine."
        )
    try:
        torch.zeros(1, device=parsed)
    except Exception as err:  # noqa: BLE001 - any failure means the device is unusable
        raise pytest.UsageError(f"{DEVICE_OPTION} {raw!r} cannot be used: {err}") from err
    return raw


@pytest.fixture(scope="session")
def stepoutputloss_adapter(request: pytest.FixtureRequest) -> StepOutputLossAdapter:
    """The adapter under test (see ``conformance.adapter``), behind the
    suite's isolation proxy (:class:`conformance.isolation.GuardedAdapter`)."""
    config = request.config
    spec = getattr(request, "param", None)
    key = spec or impl_specs(config)[0]
    guarded = config.stash.setdefault(_guarded_key, {})
    if key not in guarded:
        guarded[key] = GuardedAdapter(get_adapter(config, spec), device(config))
    return guarded[key]  # type: ignore[return-value]


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


def adapter_deviations(adapter: object) -> dict[str, str]:
    """The adapter's validated ``deviations`` (``{requirement id: reason}``)."""
    return validate_deviations(getattr(adapter, "deviations", None))


def param_capabilities(item: pytest.Item) -> list[Capability]:
    """The capabilities the item's parameter values need (not its markers)."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return []
    return [c for value in callspec.params.values() for c in getattr(value, "requires", ())]


def requirement_ids(item: pytest.Item) -> tuple[list[str], list[str]]:
    """The requirements an item exercises and those to blame if it fails
    (see :func:`conformance.requirements.item_requirements`)."""
    enforced = [i for mark in item.iter_markers(ENFORCES_MARKER) for i in mark.args]
    callspec = getattr(item, "callspec", None)
    parametrized = callspec is not None and any(k != IMPL_PARAM for k in callspec.params)
    declared = None if parametrized else get_adapter(item.config, item_impl(item)).capabilities
    return item_requirements(
        enforced, required_capabilities(item), param_capabilities(item), declared
    )


CHECK_PROPERTY = "stepoutputloss_check"
IMPL_PROPERTY = "stepoutputloss_impl"
REQUIREMENTS_PROPERTY = "stepoutputloss_requirements"
BLAME_PROPERTY = "stepoutputloss_blame"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Open the check's guard (time bound, global state), then skip a
    not-applicable check before any of its fixtures is set up."""
    if not is_check(item):
        return
    guard.begin(check_id(item), timeout_s(item.config))
    # every report of a check carries its check id and implementation
    item.user_properties.append((CHECK_PROPERTY, check_id(item)))
    item.user_properties.append((IMPL_PROPERTY, item_impl(item) or impl_specs(item.config)[0]))
    ids, blame = requirement_ids(item)
    item.user_properties.append((REQUIREMENTS_PROPERTY, ids))
    item.user_properties.append((BLAME_PROPERTY, blame))
    adapter = get_adapter(item.config, item_impl(item))
    deviations = adapter_deviations(adapter)
    missing = missing_capability(item, adapter.capabilities)
    if missing is not None:
        prefix, detail = skip_prefix(missing, deviations)
        pytest.skip(prefix + detail)
    deviated = deviated_item(ids, deviations)
    if deviated is not None:
        pytest.skip(DEVIATES + deviated)


INCIDENT_PROPERTY = "harness contract"


def _incident_text(item: pytest.Item, incidents: list[str]) -> str:
    return "\n".join(
        [
            check_id(item),
            f"property: {INCIDENT_PROPERTY}",
            f"problem:  {' | '.join(incidents)}",
        ]
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> collections.abc.Generator[None, pytest.TestReport, pytest.TestReport]:
    """A guard incident (timeout, leaked state, mutated input, wrong result
    type) fails the phase it happened in, with the incident as the reason,
    whatever the check made of the exception; the check's own failure, if
    any, follows (quoted). The teardown report closes the guard."""
    report = yield
    current = guard.current()
    if not is_check(item) or current is None:
        return report
    if call.when == "teardown":
        guard.end()
    incidents = current.unreported()
    if not incidents:
        return report
    text = _incident_text(item, incidents)
    if report.failed:
        quoted = "\n".join("> " + line for line in str(report.longrepr).splitlines())
        text += "\n\nthe check's own failure:\n" + quoted
    report.outcome = "failed"
    report.longrepr = text
    if hasattr(report, "wasxfail"):
        del report.wasxfail
    return report


# ------------------------------------------------------------------ xfails


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


def read_xfails(path: str | Path) -> dict[str, str]:
    """Read and parse a known-failures file (UTF-8); any problem is a usage error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise pytest.UsageError(
            f"the xfails file {str(path)!r} is not UTF-8 text ({err.reason} at byte "
            f"{err.start}); save it as UTF-8."
        ) from err
    except OSError as err:
        raise pytest.UsageError(f"cannot read the xfails file {str(path)!r}: {err}") from err
    return parse_xfails(text, str(path))


def xfail_reason(xfails: dict[str, str], item: pytest.Item) -> tuple[str, str] | None:
    """The matching entry (exact id first, then the check's bare name)."""
    cid = check_id(item)
    if cid in xfails:
        return cid, xfails[cid]
    bare = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
    if bare in xfails:
        return bare, xfails[bare]
    return None


XFAILS_UNMATCHED_PROPERTY = "stepoutputloss_xfails_unmatched"


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect: entries match the whole suite
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(is_check(item) for item in items):
        get_adapters(config)  # a bad --stepoutputloss-impl is a usage error, once
        timeout_s(config)  # and so is a bad limit or device
        device(config)
    path = config.getoption(XFAILS_OPTION)
    if not path:
        return
    xfails = read_xfails(path)
    config.stash[_xfails_key] = xfails
    used: set[str] = set()
    checks = [item for item in items if is_check(item)]
    for item in checks:
        found = xfail_reason(xfails, item)
        if found is not None:
            used.add(found[0])
            item.add_marker(pytest.mark.xfail(reason=found[1], strict=True))
    unmatched = sorted(set(xfails) - used)
    config.stash[_unmatched_key] = set(unmatched)
    # every check's reports carry the list, so that a pytest-xdist controller
    # (which collects nothing itself) and the report writer learn it too
    for item in checks:
        item.user_properties.append((XFAILS_UNMATCHED_PROPERTY, unmatched))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Under pytest-xdist the controller learns the unmatched xfails entries
    from the workers' reports."""
    props = dict(report.user_properties)
    unmatched = props.get(XFAILS_UNMATCHED_PROPERTY)
    if isinstance(unmatched, list) and _config is not None:
        _config.stash.setdefault(_unmatched_key, set()).update(str(e) for e in unmatched)


_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


def pytest_unconfigure(config: pytest.Config) -> None:
    global _config
    if _config is config:
        _config = None


def unmatched_xfails(config: pytest.Config) -> list[str]:
    """xfails entries that match no check of the suite (collected or, under
    pytest-xdist, reported by the workers)."""
    found: set[str] = config.stash.get(_unmatched_key, set())
    return sorted(found)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """``--stepoutputloss-strict-xfails``: unmatched entries fail a run that
    would otherwise pass."""
    config = session.config
    if (
        config.getoption(STRICT_XFAILS_OPTION)
        and unmatched_xfails(config)
        and exitstatus == pytest.ExitCode.OK
    ):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    unmatched = unmatched_xfails(config)
    if unmatched:
        strict = (
            " (--stepoutputloss-strict-xfails: the run fails)"
            if config.getoption(STRICT_XFAILS_OPTION)
            else ""
        )
        terminalreporter.write_line(
            f"xfails entries matching no collected check: {unmatched}{strict}",
            red=bool(strict),
            yellow=not strict,
        )
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
        if reason.startswith(SKIP_PREFIXES):
            not_applicable[reason] = not_applicable.get(reason, 0) + 1
    for reason, count in sorted(not_applicable.items()):
        tr.write_line(f"{reason}: {count} check(s)")
