"""Meta-tests of the plugin (``conformance.plugin``), run in-process with
pytester from a temporary directory (as another project would): choosing the
implementation, not-applicable skips, stable check ids, the xfails file, and
staying out of other projects' test runs."""

from __future__ import annotations

import pytest
from inprocess import preload

from conformance.suite import CHECK_PROPERTY, parse_xfails, strip_impl

pytest_plugins = ("pytester",)

preload()  # before pytester snapshots sys.modules (see tests/inprocess.py)

REFERENCE = "conformance.adapters.reference:make_adapter"
MUTANT = "fixtures.mutants.both_none_accepted:make_adapter"
VARIANT = "fixtures.variant.adapter:make_adapter"
CONFIGS = "conformance.checks.test_configs"  # 7 cheap checks


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    out = {}
    for rep in result.reprec.getreports("pytest_runtest_logreport"):  # type: ignore[attr-defined]
        name = rep.nodeid.split("::", 1)[1]
        if rep.skipped and isinstance(rep.longrepr, tuple):
            out[name] = rep.longrepr[2].removeprefix("Skipped: ")
        elif rep.failed:
            out[name] = "xpass-strict" if "XPASS(strict)" in str(rep.longrepr) else "failed"
        elif hasattr(rep, "wasxfail"):
            out[name] = "xfailed"
        elif rep.when == "call":
            out[name] = "passed"
    return out


def test_ids_are_stable_and_readable(pytester: pytest.Pytester) -> None:
    """Every report carries its check id ``<module file>::<check>[<params>]``,
    whatever directory the suite is run from."""
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "conformance.checks.test_target_swap",
        "-k",
        "2d-and-levels or partial",
        f"--stepoutputloss-impl={REFERENCE}",
    )
    ids = {
        dict(rep.user_properties)[CHECK_PROPERTY]
        for rep in result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
    }
    assert ids == {
        "test_target_swap.py::check_swap_uses_uncorrected[case-2d-and-levels-main-MSE]",
        "test_target_swap.py::check_swap_uses_uncorrected[case-2d-and-levels-main-L1]",
        "test_target_swap.py::check_swap_uses_uncorrected[case-2d-and-levels-main-AreaWeightedMSE]",
        "test_target_swap.py::check_swap_partial[exclude-ps]",
        "test_target_swap.py::check_swap_partial[exclude-q_1-and-q2m]",
    }


def test_no_implementation_is_a_usage_error_and_env_var_selects(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside this repository (no ini naming one) a run of the suite that
    names no implementation is a usage error saying how to name one: it never
    silently checks the reference."""
    monkeypatch.delenv("STEPOUTPUTLOSS_IMPL", raising=False)
    result = pytester.runpytest_inprocess("--pyargs", CONFIGS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*needs the implementation under test: pass --stepoutputloss-impl*"]
    )
    assert "passed" not in result.stdout.str()
    monkeypatch.setenv("STEPOUTPUTLOSS_IMPL", REFERENCE)
    result = pytester.runpytest_inprocess("--pyargs", CONFIGS)
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["implementation: reference *"])
    monkeypatch.setenv("STEPOUTPUTLOSS_IMPL", MUTANT)
    result = pytester.runpytest_inprocess("--pyargs", CONFIGS)
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(["implementation: mutant:both_none_accepted *"])
    # the option wins over the env var
    result = pytester.runpytest_inprocess("--pyargs", CONFIGS, f"--stepoutputloss-impl={REFERENCE}")
    result.assert_outcomes(passed=7)


def test_not_applicable_reason_is_exact(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--pyargs", CONFIGS, f"--stepoutputloss-impl={VARIANT}")
    got = outcomes(result)
    for param in ("EnsembleLoss", "NaN", "global-mean-LpLoss"):
        assert got[f"check_rejects_regularization_loss_type[{param}]"] == (
            "deviates: regularization-loss-types (CONFIG-2: no penalty loss type to "
            "validate (norm is L1 or L2))"
        )
    assert got["check_both_none_rejected"] == "passed"
    result.stdout.fnmatch_lines(["deviates: regularization-loss-types (CONFIG-2: *): 3 check(s)"])


def test_bad_impl_spec_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--pyargs", CONFIGS, "--stepoutputloss-impl=nocolon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*must be 'pkg.module:make_adapter', got 'nocolon'*"])
    result = pytester.runpytest_inprocess(
        "--pyargs", CONFIGS, "--stepoutputloss-impl=no_such_pkg.adapter:make_adapter"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cannot import the adapter module 'no_such_pkg.adapter'*"])


def test_xfails_file_strict(pytester: pytest.Pytester) -> None:
    xfails = pytester.path / "known.txt"
    xfails.write_text(
        "# known failures of the mutant\n"
        "test_configs.py::check_both_none_rejected  # accepts an empty config\n"
        "test_configs.py::check_accepts_valid_configs[both]  # claimed, but it passes\n"
        "test_configs.py::check_no_such_check  # a typo\n"
    )
    result = pytester.runpytest_inprocess(
        "--pyargs", CONFIGS, f"--stepoutputloss-impl={MUTANT}", f"--stepoutputloss-xfails={xfails}"
    )
    got = outcomes(result)
    assert got["check_both_none_rejected"] == "xfailed"
    assert got["check_accepts_valid_configs[both]"] == "xpass-strict"
    assert got["check_accepts_valid_configs[precorrector]"] == "passed"
    result.stdout.fnmatch_lines(
        ["xfails entries matching no collected check: ['test_configs.py::check_no_such_check']"]
    )


def test_xfails_parser_requires_reasons_and_ids() -> None:
    assert parse_xfails("a.py::check_x[p]  # why\n\n# comment\n") == {"a.py::check_x[p]": "why"}
    with pytest.raises(pytest.UsageError, match="has no reason"):
        parse_xfails("a.py::check_x\n")
    with pytest.raises(pytest.UsageError, match="is not a check id"):
        parse_xfails("check_x  # why\n")


def test_several_implementations_in_one_session(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(
        "--pyargs",
        CONFIGS,
        f"--stepoutputloss-impl=conformance.adapters.reference:make_adapter,{MUTANT}",
        "-p",
        "no:cacheprovider",
    )
    got = outcomes(result)
    assert got[f"check_both_none_rejected[impl={MUTANT}]"] == "failed"
    assert (
        got["check_both_none_rejected[impl=conformance.adapters.reference:make_adapter]"]
        == "passed"
    )
    assert len(got) == 14


def test_strip_impl() -> None:
    assert strip_impl("check_x[impl=a.b:f-steps-1]") == "check_x[steps-1]"
    assert strip_impl("check_x[case-2d-and-levels-impl=a.b:f]") == "check_x[case-2d-and-levels]"
    assert strip_impl("check_x[impl=a.b:f]") == "check_x"
    assert strip_impl("check_x") == "check_x"


def test_other_projects_check_functions_are_not_collected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_theirs="""
        def check_helper():
            raise AssertionError("a helper, not a test")

        def test_real():
            check_helper
        """
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    assert "StepOutputLoss conformance" not in result.stdout.str()
