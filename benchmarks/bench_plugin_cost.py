"""What the installed entry plugin (``conformance.plugin``) costs a project that
does not run the suite (issue 11; target: <= 1.10x).

An unrelated one-test project is laid out in a temporary directory and its
tests are run with ``python -m pytest`` in fresh interpreters, in three
configurations, interleaved round by round (after warm-up rounds that are not
recorded):

- ``with``: as pytest starts in this environment (every entry plugin, ours included);
- ``without``: the same with ``-p no:conformance.plugin`` (ours blocked);
- ``neither``: also without hypothesis's own plugin (``-p no:hypothesispytest``),
  which hypothesis installs and which imports hypothesis at the end of every
  run (hypothesis >= 6.1xx). It is not ours, but hypothesis is a dependency
  of this package, so it is reported: it is what an unrelated project pays
  for having this package (and so hypothesis) installed.

Reported: the median wall time of each configuration, the median over
rounds of the paired ratio ``with / without`` (the plugin's cost) and
``without / neither``, and each configuration's median peak RSS (``wait4``).
It also checks, before timing, that ``with`` loads the plugin and
``without`` does not. Nothing is asserted about timings; the script reports.

Usage::

    python benchmarks/bench_plugin_cost.py             # 20 rounds
    python benchmarks/bench_plugin_cost.py --rounds 5  # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS: dict[str, list[str]] = {
    "with": [],
    "without": ["-p", "no:conformance.plugin"],
    "neither": ["-p", "no:conformance.plugin", "-p", "no:hypothesispytest"],
}
BASE = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_unrelated.py"]


def make_project(root: Path) -> Path:
    project = root / "unrelated"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_unrelated.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    return project


def clean_env() -> dict[str, str]:
    drop = ("PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_PLUGINS")
    return {k: v for k, v in os.environ.items() if k not in drop}


def run_once(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB) of one run; raises if it does not pass."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return elapsed, usage.ru_maxrss


def check_configs(cwd: Path, env: dict[str, str]) -> None:
    """``with`` registers the plugin, the others do not (else the numbers mean nothing)."""
    for name, extra in CONFIGS.items():
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "--help", *extra],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        loaded = "--stepoutputloss-impl" in out
        if loaded != (name == "with"):
            raise SystemExit(
                f"configuration {name!r}: plugin loaded = {loaded}, expected the opposite"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    env = clean_env()
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp))
        check_configs(project, env)
        times: dict[str, list[float]] = {k: [] for k in CONFIGS}
        rss: dict[str, list[int]] = {k: [] for k in CONFIGS}
        for r in range(args.warmup + args.rounds):
            # rotate the order every round so no configuration always runs first
            order = list(CONFIGS)[r % len(CONFIGS) :] + list(CONFIGS)[: r % len(CONFIGS)]
            for name in order:
                t, m = run_once(BASE + CONFIGS[name], project, env)
                if r >= args.warmup:
                    times[name].append(t)
                    rss[name].append(m)

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    import pytest

    print(
        f"python {platform.python_version()}, pytest {pytest.__version__}, "
        f"{os.cpu_count()} CPUs, {args.rounds} rounds (+{args.warmup} warm-up), "
        "one-test unrelated project, `python -m pytest`"
    )
    print()
    print("| configuration | median wall | median peak RSS |")
    print("| --- | --- | --- |")
    for name, extra in CONFIGS.items():
        flags = " ".join(extra) or "(as installed)"
        print(
            f"| {name}: {flags} | {statistics.median(times[name]) * 1000:.0f} ms "
            f"| {statistics.median(rss[name]) / 1024:.1f} MiB |"
        )
    print()
    print("| ratio (median of paired per-round ratios) | measured | target |")
    print("| --- | --- | --- |")
    print(f"| with / without (the plugin's cost) | {paired('with', 'without'):.3f} | <= 1.10 |")
    print(
        f"| without / neither (hypothesis's own plugin) | {paired('without', 'neither'):.3f} "
        "| (reported) |"
    )


if __name__ == "__main__":
    main()
