"""The pytest plugin of the conformance suite (entry point ``pytest11``:
``conformance.plugin``): the cheap part that every pytest run in an
environment with this package installed loads.

It only registers the suite's options and its marker. It imports neither
torch nor hypothesis nor the checks: those load when the suite is used, that
is when pytest collects ``conformance/checks`` (its ``conftest.py`` activates
the suite) or when one of the suite's options is given. An unrelated project's
test run pays only for this module (see ``benchmarks/bench_plugin_cost.py``).

The suite itself (adapter loading, not-applicable skips, known failures, the
terminal summary) is :mod:`conformance.suite`.
"""

from __future__ import annotations

import pytest

ENV_VAR = "STEPOUTPUTLOSS_IMPL"
IMPL_OPTION = "--stepoutputloss-impl"
XFAILS_OPTION = "--stepoutputloss-xfails"
STRICT_XFAILS_OPTION = "--stepoutputloss-strict-xfails"
TIMEOUT_OPTION = "--stepoutputloss-timeout"
DEVICE_OPTION = "--stepoutputloss-device"
REQUIRES_MARKER = "stepoutputloss_requires"
ENFORCES_MARKER = "stepoutputloss_enforces"
SUITE_PLUGIN = "conformance.suite"
# hypothesis profiles the suite registers (conformance.strategies)
SUITE_PROFILES = ("thorough", "stepoutputloss-no-shrink", "stepoutputloss-matrix")

requires = getattr(pytest.mark, REQUIRES_MARKER)
"""``@requires(Capability.X, ...)``: the check runs only if the adapter declares them all."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stepoutputloss", "StepOutputLoss conformance suite")
    group.addoption(
        IMPL_OPTION,
        default=None,
        metavar="MODULE:FACTORY",
        help=(
            "the implementation under test: a zero-argument factory returning an adapter, "
            f"as pkg.module:make_adapter (default: ${ENV_VAR}; one of the two is required "
            "to run the suite's checks)"
        ),
    )
    group.addoption(
        XFAILS_OPTION,
        default=None,
        metavar="FILE",
        help="known failures of the implementation: lines '<check id>  # <reason>' (strict xfail)",
    )
    group.addoption(
        STRICT_XFAILS_OPTION,
        action="store_true",
        default=None,
        help="fail the run when an entry of the xfails file matches no check of the suite",
    )
    group.addoption(
        TIMEOUT_OPTION,
        default=None,
        metavar="SECONDS",
        help=(
            "wall-clock limit of one check, enforced on the adapter's calls (default 300); "
            "the distributed group's jobs are bounded by it too"
        ),
    )
    group.addoption(
        DEVICE_OPTION,
        default=None,
        metavar="DEVICE",
        help="run the loss-level checks with every tensor on this torch device (default: cpu)",
    )


def activate(config: pytest.Config) -> None:
    """Register the suite (:mod:`conformance.suite`) in this session, once."""
    if config.pluginmanager.get_plugin(SUITE_PLUGIN) is None:
        from conformance import suite

        config.pluginmanager.register(suite, SUITE_PLUGIN)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{REQUIRES_MARKER}(*capabilities): a conformance check that needs adapter capabilities",
    )
    config.addinivalue_line(
        "markers",
        f"{ENFORCES_MARKER}(*requirement_ids): the requirements a conformance check enforces "
        "(conformance/requirements.py; use conformance.requirements.enforces)",
    )
    # before hypothesis's own pytest_configure loads --hypothesis-profile
    if config.getoption("hypothesis_profile", None) in SUITE_PROFILES:
        import conformance.strategies  # noqa: F401  (registers the profiles)
    if any(
        config.getoption(option) is not None
        for option in (
            IMPL_OPTION,
            XFAILS_OPTION,
            STRICT_XFAILS_OPTION,
            TIMEOUT_OPTION,
            DEVICE_OPTION,
        )
    ):
        activate(config)
