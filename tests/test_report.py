"""``python -m conformance``: the report for the reference and two mutants is
regenerated and compared with the committed examples in
``fixtures/snapshots/test_report/`` (update with ``pytest --snapshot-update``).
The environment line (torch and Python versions) is normalized, so the
examples hold on every tox env."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from snapshot_ext import SNAPSHOT_ROOT, NumericJSONSnapshot
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from conformance.__main__ import main
from conformance.report import OUTCOMES, SCHEMA, SCHEMA_VERSION

IMPLS = {
    "reference": "conformance.adapters.reference:make_adapter",
    "mutant-penalty-all-channels": "fixtures.mutants.penalty_all_channels:make_adapter",
    "mutant-exclusions-ignored": "fixtures.mutants.exclusions_ignored:make_adapter",
    "variant": "fixtures.variant.adapter:make_adapter",
}


class MarkdownSnapshot(SingleFileSnapshotExtension):
    _write_mode = WriteMode.TEXT
    file_extension = "md"

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        return str(SNAPSHOT_ROOT / test_location.basename)


def _normalize_md(text: str) -> str:
    return re.sub(r"^- torch .*, Python .*$", "- torch <torch>, Python <python>", text, flags=re.M)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, tuple[int, dict, str]]:
    out = {}
    for label, impl in IMPLS.items():
        d = tmp_path_factory.mktemp(label)
        code = main(["--impl", impl, "--report", str(d / "r.md"), "--json", str(d / "r.json")])
        out[label] = (code, json.loads((d / "r.json").read_text()), (d / "r.md").read_text())
    return out


@pytest.mark.parametrize("label", list(IMPLS))
def test_report_matches_committed_example(reports, label, snapshot):
    code, report, markdown = reports[label]
    report["environment"] = {"torch": "<torch>", "python": "<python>"}
    assert report == snapshot(name=f"{label}.json").use_extension(NumericJSONSnapshot)
    assert _normalize_md(markdown) == snapshot(name=f"{label}.md").use_extension(MarkdownSnapshot)


def test_report_schema_and_exit_codes(reports):
    outcomes = set(OUTCOMES)
    for label, (code, report, markdown) in reports.items():
        assert report["schema"] == SCHEMA and report["schema_version"] == SCHEMA_VERSION
        assert set(report) == {
            "schema",
            "schema_version",
            "implementation",
            "environment",
            "summary",
            "design",
            "checks",
        }
        assert report["implementation"]["adapter"] == IMPLS[label]
        s = report["summary"]
        assert s["total"] == len(report["checks"]) == sum(s[o] for o in outcomes)
        ids = [c["id"] for c in report["checks"]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for c in report["checks"]:
            assert c["outcome"] in outcomes
            assert bool(c["detail"]) == (c["outcome"] != "passed"), c
        assert code == (1 if s["failed"] else 0)
        assert f"{s['passed']} passed, {s['failed']} failed" in markdown
    ref = reports["reference"][1]
    assert ref["summary"]["failed"] == 0 and ref["summary"]["passed"] > 0
    # every not-applicable names the capability the reference lacks
    na = [c for c in ref["checks"] if c["outcome"] == "not_applicable"]
    assert all(c["detail"] not in ref["implementation"]["capabilities"] for c in na)


def test_mutant_reports_name_the_broken_property(reports):
    diluted = reports["mutant-penalty-all-channels"][1]
    failing = {c["id"]: c["detail"] for c in diluted["checks"] if c["outcome"] == "failed"}
    assert any("diluted" in d for d in failing.values()), failing
    ignored = reports["mutant-exclusions-ignored"][1]
    modules = {c["module"] for c in ignored["checks"] if c["outcome"] == "failed"}
    assert "test_exclusion_matching.py" in modules


def test_design_conformance(reports):
    """Every requirement has one design outcome; the reference holds every
    #1273 requirement; the mutants' failures name the requirement they broke;
    the variant's deviations are reported as deviations, in its own words."""
    from conformance.requirements import REQUIREMENTS

    for _, (_, report, markdown) in reports.items():
        assert [d["id"] for d in report["design"]] == [r.id for r in REQUIREMENTS]
        assert "## Design conformance" in markdown
        for c in report["checks"]:
            assert c["requirements"], c  # every check exercises some requirement
            assert bool(c["broke"]) == (c["outcome"] in ("failed", "xfailed")), c
            assert set(c["broke"]) <= set(c["requirements"]), c
    ref = {d["id"]: d for d in reports["reference"][1]["design"]}
    assert all(d["outcome"] == "holds" for d in ref.values() if d["kind"] != "optional"), {
        i: d for i, d in ref.items() if d["outcome"] != "holds"
    }
    assert ref["RAISE-1"]["outcome"] == "not_applicable"  # an optional extra it lacks
    diluted = {d["id"]: d for d in reports["mutant-penalty-all-channels"][1]["design"]}
    assert diluted["REG-2"]["outcome"] == "broken"
    assert diluted["SWAP-1"]["outcome"] == "holds"
    assert diluted["DIST-1"]["outcome"] == "not_exercised"  # a hook it does not declare
    ignored = {d["id"]: d for d in reports["mutant-exclusions-ignored"][1]["design"]}
    assert ignored["MATCH-1"]["outcome"] == "broken"
    variant = reports["variant"][1]
    deviations = variant["implementation"]["deviations"]
    assert set(deviations) == {"MATCH-1", "WARN-1", "REG-4", "CONFIG-2"}
    design = {d["id"]: d for d in variant["design"]}
    for rid, reason in deviations.items():
        assert design[rid]["outcome"] == "deviates" and design[rid]["detail"] == reason
    assert not [d for d in variant["design"] if d["outcome"] == "broken"]
    assert variant["summary"]["failed"] == 0 and variant["summary"]["deviates"] > 0
    assert variant["summary"]["not_applicable"] == sum(
        c["outcome"] == "not_applicable" for c in variant["checks"]
    )


def test_xfails_file_is_reported(tmp_path):
    xfails = tmp_path / "known.txt"
    xfails.write_text(
        "test_penalty.py::check_penalty_closed_form  # diluted over all channels (known bug)\n"
        "test_decomposition.py::check_total_is_main_plus_regularization  # not a failure: XPASS\n"
    )
    out = tmp_path / "r.json"
    code = main(
        [
            "--impl",
            IMPLS["mutant-penalty-all-channels"],
            "--xfails",
            str(xfails),
            "--json",
            str(out),
        ]
    )
    checks = {c["id"]: c for c in json.loads(out.read_text())["checks"]}
    closed_form = [
        c for i, c in checks.items() if i.startswith("test_penalty.py::check_penalty_closed_form")
    ]
    assert closed_form and all(c["outcome"] == "xfailed" for c in closed_form)
    assert all(c["detail"] == "diluted over all channels (known bug)" for c in closed_form)
    features_none = checks[
        "test_decomposition.py::check_total_is_main_plus_regularization[features-none]"
    ]
    assert features_none["outcome"] == "failed" and "XPASS(strict)" in features_none["detail"]
    assert code == 1


USAGE = int(pytest.ExitCode.USAGE_ERROR)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--impl", "no_colon_here"], "must be 'pkg.module:make_adapter'"),
        (["--impl", "no_such_pkg.adapter:make_adapter"], "cannot import the adapter module"),
        (["--report", "{tmp}/missing/r.md"], "the directory '{tmp}/missing' does not exist"),
        (["--json", "{tmp}"], "is a directory"),
        (["--xfails", "{tmp}/none.txt"], "cannot read the xfails file"),
        (["--xfails", "{tmp}/latin1.txt"], "is not UTF-8 text"),
        (["--xfails", "{tmp}/noreason.txt"], "has no reason"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
    ids=[
        "impl-spec",
        "impl-import",
        "report-dir",
        "json-is-dir",
        "xfails-missing",
        "xfails-not-utf8",
        "xfails-syntax",
        "unknown-option",
    ],
)
def test_usage_errors_exit_4_in_one_line_before_running(tmp_path, capsys, argv, message):
    """Every usage error is found before any check runs (nothing is printed
    on stdout but the first line), exits 4 and is one line on stderr."""
    (tmp_path / "latin1.txt").write_bytes("test_x.py::check_y  # caf\xe9\n".encode("latin-1"))
    (tmp_path / "noreason.txt").write_text("test_x.py::check_y\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == USAGE
    out, err = capsys.readouterr()
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "passed" not in out and "checks)" not in out


def test_first_line_names_the_default_implementation(tmp_path, capsys):
    """Without --impl the embedded default is the reference, said first."""
    code = main(["--json", str(tmp_path / "r.json"), "--", "-k", "check_both_none_rejected"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith(
        "StepOutputLoss conformance suite: checking the reference "
        "(conformance.adapters.reference:make_adapter, the default"
    )
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["passed"] == 1


def test_no_check_ran_is_not_a_pass(tmp_path):
    assert main(["--", "-k", "no_check_has_this_name"]) == int(pytest.ExitCode.NO_TESTS_COLLECTED)


def test_examples_are_linked_from_readme():
    """Every committed example report is linked from the README, and every
    link to one points at a file that exists."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    links = re.findall(r"\]\((fixtures/snapshots/test_report/[^)]+)\)", readme)
    targets = {link.replace("%5B", "[").replace("%5D", "]") for link in links}
    for target in targets:
        assert (root / target).is_file(), f"README links {target}, which does not exist"
    for md in (root / "fixtures/snapshots/test_report").glob("*.md"):
        assert md.relative_to(root).as_posix() in targets, f"{md.name} is not linked"


def test_the_users_pytest_config_and_conftest_do_not_reach_the_suite(tmp_path):
    """A virtualenv inside the user's project (the uv/poetry default): the
    project's pyproject.toml (addopts, filterwarnings = error) and its root
    conftest.py must not apply to ``python -m conformance``'s run."""
    root = Path(__file__).resolve().parent.parent
    project = tmp_path / "proj"
    site = project / ".venv" / "site"
    site.mkdir(parents=True)
    for package in ("conformance", "reference"):
        shutil.copytree(
            root / package, site / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\naddopts = "-x --no-such-option"\nfilterwarnings = ["error"]\n'
    )
    (project / "conftest.py").write_text(
        "import pytest\n\n@pytest.fixture(autouse=True)\ndef boom():\n"
        "    raise RuntimeError('the user project conftest was loaded')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, "-m", "conformance", "--", "-k", "check_both_none_rejected"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "1 passed, 0 failed" in run.stdout
