"""``python -m conformance diff OLD.json NEW.json``: regressions, newly passing
checks and requirements, appeared / disappeared checks, and the exit codes
(0 no regression, 1 regression, 4 usage error)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from conformance.__main__ import main
from conformance.report import SCHEMA, SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = ROOT / "fixtures" / "snapshots" / "test_report"


def committed(label: str) -> dict[str, Any]:
    """A committed example report (schema 2), e.g. the reference's."""
    path = SNAPSHOTS / f"test_report_matches_committed_example[{label}].json"
    return json.loads(path.read_text(encoding="utf-8"))


def write(tmp_path: Path, name: str, report: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(report), encoding="utf-8")
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["diff", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_same_report_no_regression(tmp_path, capsys) -> None:
    ref = write(tmp_path, "ref.json", committed("reference"))
    code, out, _ = run(capsys, ref, ref)
    assert code == 0
    assert out.strip().endswith("no regression")


def test_regression_of_a_check_and_its_requirement(tmp_path, capsys) -> None:
    """The reference -> a mutant that dilutes the penalty: checks that passed
    now fail, REG-2 is now broken: exit 1, both listed."""
    old = write(tmp_path, "old.json", committed("reference"))
    new = write(tmp_path, "new.json", committed("mutant-penalty-all-channels"))
    code, out, _ = run(capsys, old, new)
    assert code == 1
    assert "regressed (checks," in out and "regressed (requirements," in out
    assert "test_penalty.py::check_penalty_corrected_channels_only[case-one-corrected]: " in out
    assert "  REG-2: holds -> broken" in out
    assert out.strip().splitlines()[-1].startswith("REGRESSION: ")
    # the other way round, the same checks newly pass: no regression
    code, out, _ = run(capsys, new, old)
    assert code == 0
    assert "newly pass (checks," in out and "  REG-2: broken -> holds" in out


def test_appeared_disappeared_and_changed(tmp_path, capsys) -> None:
    old = committed("reference")
    new = copy.deepcopy(old)
    gone = new["checks"].pop(0)
    new["checks"].append(
        {**gone, "id": "test_new.py::check_new", "outcome": "failed", "detail": "boom"}
    )
    first_pass = next(c for c in new["checks"] if c["outcome"] == "passed")
    first_pass["outcome"], first_pass["detail"] = "not_exercised", "stepper"
    json_out = tmp_path / "diff.json"
    code, out, _ = run(
        capsys,
        write(tmp_path, "o.json", old),
        write(tmp_path, "n.json", new),
        "--json",
        str(json_out),
    )
    assert code == 0  # a new check that fails is listed, but is not a regression
    assert f"disappeared (checks, 1):\n  {gone['id']}: was passed" in out
    assert "appeared (checks, 1):\n  test_new.py::check_new: failed (boom)" in out
    assert f"changed (checks, 1):\n  {first_pass['id']}: passed -> not_exercised (stepper)" in out
    data = json.loads(json_out.read_text())
    assert data["appeared"]["checks"][0]["id"] == "test_new.py::check_new"


def test_xfail_counts_as_failing(tmp_path, capsys) -> None:
    old = committed("reference")
    new = copy.deepcopy(old)
    new["checks"][0]["outcome"] = "xfailed"
    code, out, _ = run(capsys, write(tmp_path, "o.json", old), write(tmp_path, "n.json", new))
    assert code == 1 and f"  {old['checks'][0]['id']}: passed -> xfailed" in out


def test_schema_1_reports_compare_by_check(tmp_path, capsys) -> None:
    old = committed("reference")
    old["schema_version"] = 1
    del old["design"]
    code, out, _ = run(
        capsys, write(tmp_path, "o.json", old), write(tmp_path, "n.json", committed("reference"))
    )
    assert code == 0 and "requirements" not in out


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read the report"),
        ("{not json", "is not JSON"),
        ('{"schema": "something-else"}', "is not a conformance report"),
        (json.dumps({"schema": SCHEMA, "schema_version": 99}), "has schema_version 99"),
        (json.dumps({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "checks": 3}), "'checks'"),
    ],
    ids=["missing", "not-json", "not-a-report", "unknown-schema", "bad-checks"],
)
def test_usage_errors_exit_4(tmp_path, capsys, content, message) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content, encoding="utf-8")
    good = write(tmp_path, "good.json", committed("reference"))
    code, out, err = run(capsys, good, str(bad))
    assert code == 4
    assert message in err and len(err.strip().splitlines()) == 1 and not out


def test_wrong_arguments_exit_4(capsys) -> None:
    code, _, err = run(capsys, "only-one.json")
    assert code == 4 and "the following arguments are required: new" in err
