"""Harness integrity (#12): no adapter, plugin or environment makes the suite
lie, hang, or blame the wrong thing. Each test runs the suite (in-process
with pytester, or ``python -m conformance``) against one misbehaving adapter
of ``fixtures/misbehaving`` and asserts the verdict stays right and names the
misbehaviour. Runs select a few checks with ``-k`` to stay cheap."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from inprocess import preload

import fixtures.misbehaving.bad_factories
import fixtures.misbehaving.hangs
import fixtures.misbehaving.leaks_state
import fixtures.misbehaving.mutates_stds
import fixtures.misbehaving.mutates_weights
import fixtures.misbehaving.ranks
import fixtures.misbehaving.result_dtypes  # noqa: F401
from conformance import distributed, guard
from conformance.__main__ import main
from conformance.adapter import LossResult, RegularizationSpec
from conformance.cases import main_case
from conformance.guard import ContractViolation
from conformance.isolation import GuardedAdapter, differences, validate_loss_result
from conformance.report import ReportCollector
from conformance.suite import CHECK_PROPERTY, XFAILS_UNMATCHED_PROPERTY

pytest_plugins = ("pytester",)

preload()  # before pytester snapshots sys.modules (see tests/inprocess.py)

REFERENCE = "conformance.adapters.reference:make_adapter"
M = "fixtures.misbehaving"
ROOT = Path(__file__).resolve().parents[1]


def run(pytester: pytest.Pytester, impl: str, *args: str) -> dict[str, Any]:
    """In-process run of the suite: ``{check id: (outcome, longrepr text)}``
    per check (a failure in any phase stands) and the exit code."""
    reprec = pytester.inline_run(
        "--pyargs",
        "conformance.checks",
        f"--stepoutputloss-impl={impl}",
        "-p",
        "no:cacheprovider",
        "--hypothesis-profile=stepoutputloss-no-shrink",
        *args,
    )
    out: dict[str, tuple[str, str]] = {}
    for rep in reprec.getreports("pytest_runtest_logreport"):
        cid = dict(rep.user_properties)[CHECK_PROPERTY]
        if cid in out and out[cid][0] == "failed":
            continue
        if rep.failed:
            out[cid] = ("failed", str(rep.longrepr))
        elif rep.skipped:
            out[cid] = ("skipped", str(rep.longrepr))
        elif rep.when == "call":
            out[cid] = ("passed", "")
    return {"checks": out, "ret": reprec.ret}


def failed(result: dict[str, Any]) -> dict[str, str]:
    return {c: text for c, (o, text) in result["checks"].items() if o == "failed"}


# ------------------------------------------------------------------ 1. isolation


@pytest.mark.parametrize(
    ("module", "field"),
    [("mutates_weights", "spec.main.weights"), ("mutates_stds", "spec.normalizer.stds")],
)
def test_spec_mutation_cannot_change_expected_values(
    pytester: pytest.Pytester, module: str, field: str
) -> None:
    """An adapter that mutates the spec it is handed: every check it touched
    reports the mutation, and the checks' own verdicts are those of the same
    bug without the mutation (the oracle computed from the suite's copy)."""
    result = run(pytester, f"{M}.{module}:make_adapter", "-k", "test_target_swap")
    assert result["ret"] == pytest.ExitCode.TESTS_FAILED
    bad = failed(result)
    assert set(bad) == set(result["checks"]), "every check was handed a spec and saw it mutated"
    assert all(f"modified the spec it was handed, in place: {field}" in t for t in bad.values())
    # the verdicts of the checks themselves, quoted after the mutation
    own = {c for c, t in bad.items() if "the check's own failure" in t}
    # the same wrong loss without the mutation (weights ignored / stds taken as 1)
    plain = run(pytester, f"{M}.{module}:make_plain", "-k", "test_target_swap")
    assert own == set(failed(plain)) and own, (own, set(failed(plain)))


def test_isolation_unit() -> None:
    """The proxy hands copies and names what changed; outside a check the
    mutation is raised."""
    spec = main_case().spec(exclude=())
    changed = main_case().spec(exclude=())
    changed.normalizer.stds["t"] = 1.0  # type: ignore[index]
    assert differences(spec, changed, "spec") == ["spec.normalizer.stds['t']: 4.0 -> 1.0"]
    adapter = GuardedAdapter(fixtures.misbehaving.mutates_weights.make_adapter())
    before = dict(spec.main.weights)
    with pytest.raises(ContractViolation, match=r"spec\.main\.weights"):
        adapter.build_loss(spec)
    assert dict(spec.main.weights) == before  # the suite's spec is untouched


def test_loss_mutating_its_input_mappings_is_reported(pytester: pytest.Pytester) -> None:
    """A loss writing into the ``output`` mapping it was handed (the mutant
    ``mutates_step_output``): the suite's mapping is untouched and the write
    is named."""
    result = run(
        pytester,
        "fixtures.mutants.mutates_step_output:make_adapter",
        "-k",
        "check_inputs_not_mutated",
    )
    bad = failed(result)
    assert "test_inputs_not_mutated.py::check_inputs_not_mutated[features-precorrector]" in bad
    assert all("output['ps'] was replaced by another tensor" in t for t in bad.values())


# ------------------------------------------------------------------ 2. state guard


@pytest.mark.parametrize(
    ("factory", "named"),
    [
        ("make_grad_leak", "grad mode (torch.is_grad_enabled()): True -> False (restored)"),
        (
            "make_dtype_leak",
            "default dtype (torch.get_default_dtype()): torch.float32 -> torch.float64 (restored)",
        ),
    ],
)
def test_leaked_global_state_is_named_and_contained(
    pytester: pytest.Pytester, factory: str, named: str
) -> None:
    """The check whose adapter call leaked global torch state fails naming
    it; the later training checks, which never called it, pass."""
    result = run(
        pytester,
        f"{M}.leaks_state:{factory}",
        "-k",
        "check_both_none_rejected or check_train_gradients",
    )
    bad = failed(result)
    assert list(bad) == ["test_configs.py::check_both_none_rejected"]
    text = bad["test_configs.py::check_both_none_rejected"]
    assert "adapter.build_corrector_config changed global torch state" in text and named in text
    passed = [c for c, (o, _) in result["checks"].items() if o == "passed"]
    assert len(passed) == 4 and all("check_train_gradients" in c for c in passed)
    assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32


def test_state_guard_restores_every_item() -> None:
    """Each restorable item of the state guard: changed, detected, restored."""
    flips = {
        "grad mode": lambda: torch.set_grad_enabled(False),
        "default dtype": lambda: torch.set_default_dtype(torch.float64),
        "deterministic": lambda: torch.use_deterministic_algorithms(True, warn_only=True),
        "anomaly": lambda: torch.autograd.set_detect_anomaly(True),
        "threads": lambda: torch.set_num_threads(torch.get_num_threads() + 1),
        "autocast on cpu": lambda: torch.set_autocast_enabled("cpu", True),
        "matmul precision": lambda: torch.set_float32_matmul_precision(
            "high" if torch.get_float32_matmul_precision() != "high" else "medium"
        ),
    }
    for label, flip in flips.items():
        before = guard.snapshot()
        flip()
        changes = guard.restore_changes(before)
        assert changes and all("(restored)" in c for c in changes), (label, changes)
        assert guard.snapshot() == before, label


# ------------------------------------------------------------------ 3. time bound


@pytest.mark.skipif(
    not hasattr(signal, "setitimer"), reason="the in-process time bound needs SIGALRM (POSIX)"
)
def test_hanging_call_fails_its_check_within_the_limit(pytester: pytest.Pytester) -> None:
    started = time.monotonic()
    result = run(
        pytester,
        f"{M}.hangs:make_adapter",
        "--stepoutputloss-timeout=0.5",
        "-k",
        "check_both_none_rejected or check_accepts_valid_configs",
    )
    assert time.monotonic() - started < 30
    bad = failed(result)
    assert list(bad) == ["test_configs.py::check_both_none_rejected"]
    assert (
        "timeout: adapter.build_corrector_config did not return within the check's limit of "
        "0.5 s (--stepoutputloss-timeout)" in bad["test_configs.py::check_both_none_rejected"]
    )
    assert sum(o == "passed" for o, _ in result["checks"].values()) == 3


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_stopped_run_still_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, signum: int
) -> None:
    """``python -m conformance`` stopped (SIGTERM, or Ctrl-C) while an adapter
    call hangs and no time bound is reached: exit 2 and a report of the
    checks that ran."""
    marker, report = tmp_path / "hanging", tmp_path / "r.json"
    monkeypatch.setenv(fixtures.misbehaving.hangs.MARKER_ENV, str(marker))
    if signum == signal.SIGINT:
        # as in a terminal: a job started in the background by a shell (`cmd &`,
        # nohup) inherits SIGINT ignored, and Python keeps it ignored
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))

    def stop_when_hanging() -> None:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        # to the main thread: a process-directed os.kill may be delivered to
        # another thread (this session's distributed group runs feeder
        # threads), and then the main thread sleeps on in the adapter's lock
        # wait until the check's time bound wakes it (guard.py) -- too late
        # for this test
        assert main_thread is not None
        signal.pthread_kill(main_thread, signum)

    main_thread = threading.main_thread().ident

    threading.Thread(target=stop_when_hanging, daemon=True).start()
    code = main(
        [
            "--impl",
            f"{M}.hangs:make_adapter",
            "--json",
            str(report),
            "--",
            "-k",
            "check_backward_each_step or check_both_none_rejected",
        ]
    )
    assert marker.exists() and code == pytest.ExitCode.INTERRUPTED
    checks = {c["id"]: c["outcome"] for c in json.loads(report.read_text())["checks"]}
    assert checks == {
        f"test_accumulation.py::check_backward_each_step[steps-{n}]": "passed" for n in (1, 2, 4)
    }


# ------------------------------------------------------------------ 4. parallel runs


def test_reports_from_other_processes_are_merged() -> None:
    """Without xdist: what a pytest-xdist controller receives (reports that
    carry the check id and the unmatched xfails in ``user_properties``, no
    item) is counted."""
    from conformance import suite

    collector = ReportCollector()
    for i, outcome in enumerate(["passed", "failed"]):
        report = pytest.TestReport(
            nodeid=f"gw{i}::whatever",
            location=("x", 0, "x"),
            keywords={},
            outcome=outcome,  # type: ignore[arg-type]
            longrepr=None if outcome == "passed" else "problem:  boom",
            when="call",
            user_properties=[
                (CHECK_PROPERTY, f"test_x.py::check_{i}"),
                (XFAILS_UNMATCHED_PROPERTY, ["test_x.py::check_typo"]),
            ],
        )
        collector.pytest_runtest_logreport(report)
    assert {c.id: c.outcome for c in collector.outcomes.values()} == {
        "test_x.py::check_0": "passed",
        "test_x.py::check_1": "failed",
    }
    assert suite.XFAILS_UNMATCHED_PROPERTY == XFAILS_UNMATCHED_PROPERTY


def test_a_run_of_no_check_is_never_green(tmp_path: Path) -> None:
    code = main(["--json", str(tmp_path / "r.json"), "--", "-k", "no_check_has_this_name"])
    assert code == pytest.ExitCode.NO_TESTS_COLLECTED


@pytest.mark.skipif(
    importlib.util.find_spec("xdist") is None, reason="pytest-xdist is not installed"
)
def test_xdist_run_merges_every_worker(tmp_path: Path) -> None:
    """``-n 2``: one report of every check from both workers, the right exit
    code (a failing mutant exits 1, never '0 checks' and 0)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for impl, code, failed_n in [("fixtures.mutants.both_none_accepted:make_adapter", 1, 1)]:
        report = tmp_path / "r.json"
        done = subprocess.run(
            [sys.executable, "-m", "conformance", "--impl", impl, "--json", str(report)]
            + ["--", "-n", "2", "-k", "test_configs"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=300,
        )
        summary = json.loads(report.read_text())["summary"]
        assert (done.returncode, summary["total"], summary["failed"]) == (code, 7, failed_n)


# ------------------------------------------------------------------ 5. validation


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("make_raising", "raised RuntimeError: cannot open the checkpoint /nonexistent/ckpt.pt"),
        ("make_none_capabilities", "capabilities must be a set of conformance.adapter.Capability"),
        ("make_string_capabilities", "got 'stepper'"),
        ("make_unknown_capability", "declares ['stepper'], which are not conformance.adapter"),
        ("make_missing_method", "declares 'stepper' but has no build_stepper() method"),
    ],
)
def test_broken_adapter_is_one_usage_error(
    factory: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = f"{M}.bad_factories:{factory}"
    assert main(["--impl", spec]) == pytest.ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and spec in err and message in err, err


def test_broken_adapter_is_a_usage_error_of_the_plugin(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "conformance.checks.test_configs",
        f"--stepoutputloss-impl={M}.bad_factories:make_string_capabilities",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*capabilities must be a set*got 'stepper'*"])


@pytest.mark.parametrize("factory", ["make_float16", "make_float64"])
def test_result_dtype_is_named(pytester: pytest.Pytester, factory: str) -> None:
    dtype = "torch.float16" if factory == "make_float16" else "torch.float64"
    result = run(pytester, f"{M}.result_dtypes:{factory}", "-k", "check_swap_partial")
    bad = failed(result)
    assert len(bad) == 2
    assert all(
        f"main_per_channel (all 6), main_total, total: dtype {dtype}; the contract keeps the "
        "inputs' dtype (torch.float32)" in t
        for t in bad.values()
    )


# ------------------------------------------------------------------ 6. distributed


@pytest.mark.skipif(not distributed.is_available(), reason="no torch.distributed with gloo")
def test_distributed_failures_blame_the_right_rank_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 1 raises: every distributed check fails naming rank 1 and its
    whole message (rank 0, stuck in a collective, is not blamed). Rank 1
    hangs: the job is bounded by the limit and waited for once, not per
    check."""
    monkeypatch.setattr(distributed, "_GRACE_S", 0.5)
    # groups of their own: the shared one (other tests') stays up
    monkeypatch.setattr(distributed, "_pool", None)
    error, hang = f"{M}.ranks:make_error_on_rank_1", f"{M}.ranks:make_rank_1_hangs"
    raised = list(failed(run(pytester, error, "-k", "distributed")).values())
    started = time.monotonic()
    hung = list(
        failed(run(pytester, hang, "--stepoutputloss-timeout=1", "-k", "distributed")).values()
    )
    elapsed = time.monotonic() - started
    from conformance.checks.test_distributed import CONFIGURATIONS

    declared = fixtures.misbehaving.ranks.make_error_on_rank_1().capabilities
    applicable = [c for c in CONFIGURATIONS if all(r in declared for r in c.requires)]
    assert len(raised) == len(hung) == len(applicable)
    for t in raised:
        assert "rank 1 raised" in t
        assert fixtures.misbehaving.ranks.ERROR in t  # the whole message
        assert "rank 0 raised" not in t and "rank 0 was still busy" in t
    for t in hung:
        assert "rank 1 gave no answer" in t and "in fixtures/misbehaving/ranks.py" in t
        assert "rank 0 gave no answer" in t  # waiting for rank 1 (or still starting up)
    # one 1 s wait for the hanging rank (and a start of the group), not one per check
    assert elapsed < 4 * (1 + 2), elapsed


def test_report_line_keeps_the_reason() -> None:
    from conformance.report import _failure_line

    reason = "x" * 400 + " THE-REASON"
    report = pytest.TestReport(
        "n", ("x", 0, "x"), {}, "failed", f"check\nproblem:  {reason}\n", "call"
    )
    assert _failure_line(report).endswith("THE-REASON")


# ------------------------------------------------------------------ 7. xfails


def test_non_utf8_xfails_file_is_a_usage_error(
    pytester: pytest.Pytester, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    xfails = tmp_path / "known.txt"
    xfails.write_bytes("test_configs.py::check_both_none_rejected  # caf\u00e9\n".encode("latin-1"))
    assert main(["--xfails", str(xfails)]) == pytest.ExitCode.USAGE_ERROR
    assert "is not UTF-8 text" in capsys.readouterr().err
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "conformance.checks.test_configs",
        f"--stepoutputloss-impl={REFERENCE}",
        f"--stepoutputloss-xfails={xfails}",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is not UTF-8 text*save it as UTF-8*"])


def test_unmatched_xfails_are_reported_and_strict_fails(
    tmp_path: Path, pytester: pytest.Pytester
) -> None:
    xfails = tmp_path / "known.txt"
    xfails.write_text(
        "test_configs.py::check_both_none_rejected  # known\n"
        "test_configs.py::check_no_such_check  # a typo\n",
        encoding="utf-8",
    )
    mutant = "fixtures.mutants.both_none_accepted:make_adapter"
    out = tmp_path / "r.json"
    args = ["--impl", mutant, "--xfails", str(xfails), "--json", str(out), "--strict-xfails"]
    # every check passes or is a known failure: only the typo fails the run
    # (without --strict-xfails the entry is listed and the run passes:
    # tests/test_conformance_plugin.py::test_xfails_file_strict)
    assert main([*args, "--", "-k", "check_both_none_rejected"]) == 1
    report = json.loads(out.read_text())
    assert report["xfails_unmatched"] == ["test_configs.py::check_no_such_check"]
    assert report["summary"]["xfailed"] == 1 and report["summary"]["failed"] == 0
    # the pytest plugin alike
    for strict, code in [((), pytest.ExitCode.OK), (("--stepoutputloss-strict-xfails",), 1)]:
        result = pytester.runpytest_inprocess(
            "--pyargs",
            "conformance.checks.test_configs",
            f"--stepoutputloss-impl={mutant}",
            f"--stepoutputloss-xfails={xfails}",
            "-k",
            "check_both_none_rejected",
            *strict,
        )
        assert result.ret == code
        result.stdout.fnmatch_lines(["xfails entries matching no collected check: *check_no_such*"])


# ------------------------------------------------------------------ 8. device


def test_device_option_is_checked(pytester: pytest.Pytester) -> None:
    args = ("--pyargs", "conformance.checks.test_configs", f"--stepoutputloss-impl={REFERENCE}")
    result = pytester.runpytest_inprocess(*args, "--stepoutputloss-device=nosuchdevice")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--stepoutputloss-device 'nosuchdevice' is not a torch device*"])
    if not torch.cuda.is_available():
        result = pytester.runpytest_inprocess(*args, "--stepoutputloss-device=cuda")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*CUDA is not available*"])


def test_loss_checks_run_on_the_requested_device(pytester: pytest.Pytester) -> None:
    """``--stepoutputloss-device cpu`` runs (CI has no other device); a
    result on another device than the inputs' is named."""
    result = run(pytester, REFERENCE, "--stepoutputloss-device=cpu", "-k", "check_swap_partial")
    assert [o for o, _ in result["checks"].values()] == ["passed", "passed"]
    inputs = [torch.zeros(2, requires_grad=True)]
    on_meta = LossResult(
        main_per_channel={"x": torch.zeros((), device="meta")},
        main_total=torch.zeros((), device="meta"),
        regularization=None,
        total=torch.zeros((), device="meta"),
    )
    with pytest.raises(ContractViolation, match="device meta; the inputs are on cpu"):
        validate_loss_result(on_meta, "loss", inputs, torch.device("cpu"))


def test_reference_penalty_with_nothing_corrected_follows_the_inputs() -> None:
    """Found by ``--stepoutputloss-device cuda`` on an H200: the reference's
    penalty with nothing corrected was a fresh CPU float32 zero. It now takes
    the inputs' dtype and device (checked here with float64, on the CPU)."""
    from conformance.adapters.reference import make_adapter
    from conformance.cases import nothing_corrected_case

    case = nothing_corrected_case()
    spec = case.spec(regularization=RegularizationSpec("MSE", weight=0.7))
    output, uncorrected, target = ({k: v.double() for k, v in m.items()} for m in case.fresh())
    result = make_adapter().build_loss(spec)(output, uncorrected, target, 0)
    assert result.regularization is not None
    assert result.regularization.dtype == torch.float64 and float(result.regularization) == 0.0
