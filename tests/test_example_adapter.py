"""The README's adapter example is complete code that runs: the block under
"Check your implementation" is the text of ``docs/example_adapter.py``, and
that adapter passes the suite's checks (a few modules here, in-process; the
whole suite, installed from the wheel, in ``tests/test_outside_user.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from inprocess import preload

pytest_plugins = ("pytester",)

preload()  # before pytester snapshots sys.modules (see tests/inprocess.py)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "example_adapter.py"
MARKER = "<!-- the file docs/example_adapter.py -->"
MODULES = ("test_target_swap", "test_exclusion_matching", "test_penalty", "test_data_mask")


def readme_block() -> str:
    readme = (REPO / "README.md").read_text()
    assert MARKER in readme, f"README.md lost the marker {MARKER!r} above the example"
    match = re.search(r"```python\n(.*?)```", readme[readme.index(MARKER) :], re.S)
    assert match, "no ```python block after the marker"
    return match.group(1)


def test_readme_block_is_the_example_file() -> None:
    assert readme_block() == EXAMPLE.read_text(), (
        "README.md's adapter example differs from docs/example_adapter.py: copy the file "
        "into the README block verbatim"
    )


def test_the_example_adapter_passes_the_suite(pytester: pytest.Pytester) -> None:
    pkg = pytester.mkpydir("myproj")
    (pkg / "conformance_adapter.py").write_text(EXAMPLE.read_text())
    pytester.syspathinsert()
    result = pytester.runpytest_inprocess(
        "--pyargs",
        *(f"conformance.checks.{m}" for m in MODULES),
        "--stepoutputloss-impl=myproj.conformance_adapter:make_adapter",
        "-p",
        "no:cacheprovider",
        "-rs",
    )
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert outcomes.get("passed", 0) >= 20, outcomes
    # a capability the example does not declare is reported, not passed
    result.stdout.fnmatch_lines(["*not applicable: data-mask*"])
    result.stdout.fnmatch_lines(["*implementation: myproj 1.0.0*"])
