"""The outside user (#11): this package installed from its wheel into a fresh
virtualenv, next to a project of its own, driven by the README's commands.

Slow (a virtualenv, torch and the wheel installed: about a minute), so it is
opt-in: it runs only with ``STEPOUTPUTLOSS_OUTSIDE_USER=1``. ``.ci/run`` runs
it as its own step. Without network at test time: set
``STEPOUTPUTLOSS_WHEELHOUSE`` to a directory of wheels (``.ci/run`` fills one
with ``pip download`` at set-up) and every install, the wheel's build
environment included, is ``--no-index`` from it; without it, pip uses its
configured index.

What it shows, in a temporary directory outside this repository:

- the wheel (built from ``pyproject.toml``, ``README.md``, ``conformance/`` and
  ``reference/`` alone) installs exactly two top-level import packages,
  ``conformance`` and ``reference``; nothing named ``fixtures``;
- an adapter project (``myproj/conformance_adapter.py`` = the README's
  example, ``docs/example_adapter.py``) passes the suite with
  ``python -m pytest --pyargs conformance.checks --stepoutputloss-impl ...``;
  plain ``pytest`` cannot import an adapter module from the current directory,
  and says to use ``python -m pytest``;
- the project's unrelated test runs green with no suite option, without the
  suite (or torch) being loaded;
- the suite without an implementation is a usage error (exit 4);
- ``python -m conformance --impl ... --report r.md`` exits 0 and writes r.md;
- PyPI's ``fixtures`` (testtools) installs next to it, and both work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ENABLE = "STEPOUTPUTLOSS_OUTSIDE_USER"
WHEELHOUSE = "STEPOUTPUTLOSS_WHEELHOUSE"
REPO = Path(__file__).resolve().parents[1]
DIST = "stepoutputloss-conformance"
TORCH = "torch==2.13.0"  # the README's install line: the CPU wheel
IMPL = "myproj.conformance_adapter:make_adapter"

pytestmark = pytest.mark.skipif(
    os.environ.get(ENABLE) != "1",
    reason=f"slow (a fresh virtualenv with torch): set {ENABLE}=1 to run (.ci/run does)",
)


@dataclass
class Outside:
    """The installed environment and the adapter project."""

    python: Path  # the virtualenv's interpreter
    bin: Path
    project: Path  # the outside project (cwd of every command)
    site_packages: Path
    after_install: list[str]  # site-packages entries right after our install
    env: dict[str, str]
    pip: list[str]  # pip install, with the wheelhouse options

    def run(self, *args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _check(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"{proc.args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def _outside_env() -> dict[str, str]:
    """This process's environment without what points at this checkout."""
    drop = {
        "PYTHONPATH",
        "PYTEST_ADDOPTS",
        "PYTEST_PLUGINS",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
        "STEPOUTPUTLOSS_IMPL",
        "VIRTUAL_ENV",
        "PIP_REQUIRE_VIRTUALENV",
    }
    return {k: v for k, v in os.environ.items() if k not in drop}


def _index_options() -> list[str]:
    wheelhouse = os.environ.get(WHEELHOUSE)
    return ["--no-index", "--find-links", wheelhouse] if wheelhouse else []


def _build_wheel(work: Path, env: dict[str, str]) -> Path:
    """The wheel of a copy of what the package is built from, in an isolated
    build environment (setuptools from the index or the wheelhouse: this
    environment's own setuptools may be older than pyproject's build floor)."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for pkg in ("conformance", "reference"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    dist = work / "dist"
    _check(
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)]
            + _index_options(),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    (wheel,) = dist.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Outside:
    work = tmp_path_factory.mktemp("outside")
    env = _outside_env()
    wheel = _build_wheel(work, env)

    venv = work / "venv"
    _check(
        subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    )
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", *_index_options()]

    project = work / "project"
    (project / "myproj").mkdir(parents=True)
    (project / "myproj" / "__init__.py").write_text("")
    shutil.copy2(
        REPO / "docs" / "example_adapter.py", project / "myproj" / "conformance_adapter.py"
    )
    (project / "test_unrelated.py").write_text("def test_arithmetic():\n    assert 1 + 1 == 2\n")

    out = Outside(python, venv / "bin", project, Path(), [], env, pip)
    # the README's install: torch (the CPU wheel) first, then the package
    _check(out.run(*pip, TORCH))
    _check(out.run(*pip, wheel, "-c", REPO / "constraints.txt"))
    out.site_packages = Path(
        _check(out.run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
        .strip()
        .splitlines()[-1]
    )
    out.after_install = sorted(p.name for p in out.site_packages.iterdir())
    return out


def _suite(out: Outside) -> str:
    proc = out.run(
        out.python,
        "-m",
        "pytest",
        "--pyargs",
        "conformance.checks",
        "--stepoutputloss-impl",
        IMPL,
        "-p",
        "no:cacheprovider",
        "-q",
        "-rs",
    )
    text = _check(proc)
    assert " passed" in text and " failed" not in text, text[-3000:]
    # the adapter declares few capabilities: their checks are reported, not passed
    assert "not applicable: data-mask" in text, text[-3000:]
    return text


def test_exactly_two_top_level_packages(outside: Outside) -> None:
    files = json.loads(
        _check(
            outside.run(
                outside.python,
                "-c",
                "import importlib.metadata as m, json; "
                f"print(json.dumps([str(f) for f in m.distribution({DIST!r}).files]))",
            )
        )
        .strip()
        .splitlines()[-1]
    )
    top = {f.split("/")[0] for f in files if not f.split("/")[0].endswith(".dist-info")}
    top.discard("..")  # none expected (scripts); kept out of the set if any
    assert top == {"conformance", "reference"}, top
    assert not [n for n in outside.after_install if n.split(".")[0].lower() == "fixtures"], (
        outside.after_install
    )
    where = _check(
        outside.run(
            outside.python, "-c", "import conformance, reference; print(conformance.__file__)"
        )
    )
    assert str(outside.site_packages) in where, "the suite was not imported from the install"


def test_the_suite_passes_the_readme_adapter(outside: Outside) -> None:
    text = _suite(outside)
    assert "myproj" in text  # the suite's summary names the implementation


def test_plain_pytest_cannot_import_a_module_of_the_cwd(outside: Outside) -> None:
    """The README's note: plain ``pytest`` does not put the current directory on sys.path."""
    proc = outside.run(
        outside.bin / "pytest",
        "--pyargs",
        "conformance.checks",
        "--stepoutputloss-impl",
        IMPL,
        "-p",
        "no:cacheprovider",
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "python -m pytest" in proc.stdout + proc.stderr


def test_the_unrelated_test_runs_without_the_suite(outside: Outside) -> None:
    text = _check(
        outside.run(outside.python, "-m", "pytest", "test_unrelated.py", "-p", "no:cacheprovider")
    )
    assert "1 passed" in text
    probe = (
        "import sys, pytest\n"
        "rc = pytest.main(['-q', '-p', 'no:cacheprovider', 'test_unrelated.py'])\n"
        "print('LOADED', int(rc), 'conformance.plugin' in sys.modules, "
        "sorted(m for m in ('torch', 'conformance.suite', 'conformance.checks') if m in sys.modules))\n"
    )
    last = _check(outside.run(outside.python, "-c", probe)).strip().splitlines()[-1]
    # the entry plugin is loaded (installed), the suite and torch are not
    assert last == "LOADED 0 True []", last


def test_the_suite_without_an_implementation_is_a_usage_error(outside: Outside) -> None:
    proc = outside.run(
        outside.python, "-m", "pytest", "--pyargs", "conformance.checks", "-p", "no:cacheprovider"
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "--stepoutputloss-impl" in proc.stdout + proc.stderr


def test_python_m_conformance_writes_the_report(outside: Outside) -> None:
    proc = outside.run(outside.python, "-m", "conformance", "--impl", IMPL, "--report", "r.md")
    _check(proc)
    report = (outside.project / "r.md").read_text()
    assert "myproj" in report


def test_next_to_pypi_fixtures(outside: Outside) -> None:
    """PyPI's ``fixtures`` (testtools) takes the top-level name ``fixtures``:
    installed next to this package, both work."""
    _check(outside.run(*outside.pip, "fixtures", "-c", REPO / "constraints.txt"))
    where = _check(
        outside.run(
            outside.python,
            "-c",
            "import fixtures; from fixtures import Fixture, TempDir; "
            "import conformance.suite, reference; "
            "print(fixtures.__file__)",
        )
    )
    assert str(outside.site_packages / "fixtures") in where, where
    _suite(outside)
