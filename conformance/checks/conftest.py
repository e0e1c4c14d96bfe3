"""Collection of the suite's ``check_*`` functions and the ``adapter`` fixture.

Scoped to this directory: other test runs in the same environment are not
affected (``check_*`` helpers elsewhere are never collected).
"""

from __future__ import annotations

import inspect

import pytest

from conformance.adapter import StepOutputLossAdapter


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> object:
    if (
        name.startswith("check_")
        and inspect.isfunction(obj)
        and isinstance(collector, pytest.Module)
    ):
        return list(collector._genfunctions(name, obj))  # the same path as test_* functions
    return None


@pytest.fixture(scope="session")
def adapter(stepoutputloss_adapter: StepOutputLossAdapter) -> StepOutputLossAdapter:
    """The implementation under test (``--stepoutputloss-impl``)."""
    return stepoutputloss_adapter
