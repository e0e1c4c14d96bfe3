"""Collection of the suite's ``check_*`` functions and the ``adapter`` fixture.

Loaded by pytest when it collects this directory; this is what activates the
suite (:mod:`conformance.suite`) in a run that names no suite option.

Scoped to this directory: other test runs in the same environment are not
affected (``check_*`` helpers elsewhere are never collected). Checks are
collected through public pytest API only: the check modules are
:class:`CheckModule` instances whose function-name filter is ``check_*``, and
pytest generates their items (parametrization included) as for ``test_*``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.adapter import StepOutputLossAdapter
from conformance.plugin import activate

CHECK_PREFIX = "check_"


def pytest_configure(config: pytest.Config) -> None:
    activate(config)


class CheckModule(pytest.Module):
    """A check module: its ``check_*`` functions are the tests."""

    def funcnamefilter(self, name: str) -> bool:
        return name.startswith(CHECK_PREFIX)


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module:
    return CheckModule.from_parent(parent, path=module_path)


@pytest.fixture(scope="session")
def adapter(stepoutputloss_adapter: StepOutputLossAdapter) -> StepOutputLossAdapter:
    """The implementation under test (``--stepoutputloss-impl``)."""
    return stepoutputloss_adapter
