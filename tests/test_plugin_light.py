"""The entry plugin (``conformance.plugin``, loaded by every pytest run in an
environment where this package is installed) costs an unrelated project
nothing heavy: a pytest run of an unrelated test directory imports neither
torch nor hypothesis nor the suite nor its checks (#11; the timing is
``benchmarks/bench_plugin_cost.py``).

Each run is a fresh interpreter (a subprocess), so what this process has
imported does not count. hypothesis's *own* pytest plugin (``hypothesispytest``,
installed with hypothesis, a dependency of this package) imports hypothesis at
the end of every run (its terminal summary, hypothesis 6.155); it is disabled
here so that the assertion is about this package's plugin alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "hypothesis", "conformance.suite", "conformance.checks")

PROBE = """
import json, sys
import pytest

class Probe:
    def pytest_configure(self, config):
        self.registered = config.pluginmanager.get_plugin("conformance.plugin") is not None
        self.at_configure = sorted(m for m in HEAVY if m in sys.modules)

probe = Probe()
rc = pytest.main(ARGS, plugins=[probe])
print(json.dumps({
    "rc": int(rc),
    "registered": probe.registered,
    "at_configure": probe.at_configure,
    "at_exit": sorted(m for m in HEAVY if m in sys.modules),
}))
"""


def _probe(project: Path, *args: str) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "STEPOUTPUTLOSS_IMPL")
    }
    code = f"HEAVY = {HEAVY!r}\nARGS = {list(args)!r}\n{PROBE}"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _unrelated_project(tmp_path: Path) -> Path:
    project = tmp_path / "unrelated"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_unrelated.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    return project


def test_an_unrelated_run_imports_nothing_heavy(tmp_path: Path) -> None:
    project = _unrelated_project(tmp_path)
    # -p conformance.plugin: loaded even where entry points are not (PYTEST_DISABLE_PLUGIN_AUTOLOAD)
    result = _probe(
        project,
        "-q",
        "-p",
        "conformance.plugin",
        "-p",
        "no:hypothesispytest",
        "-p",
        "no:cacheprovider",
    )
    assert result["rc"] == 0
    assert result["registered"], "conformance.plugin was not loaded: the probe tests nothing"
    assert result["at_configure"] == [], f"imported at pytest start-up: {result['at_configure']}"
    assert result["at_exit"] == [], f"imported by an unrelated run: {result['at_exit']}"


def test_the_options_alone_do_not_load_the_suite(tmp_path: Path) -> None:
    """``--help`` lists the suite's options (they are the light plugin's) without importing it."""
    project = _unrelated_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, pytest; pytest.main(['--help', '-p', 'conformance.plugin', "
            "'-p', 'no:hypothesispytest']); "
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--stepoutputloss-impl" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout[-2000:]
