"""Snapshot of the reference trainer's metrics: a deterministic run of 2
batches x 3 steps for every feature combination, with and without gradient
accumulation. Keys must match exactly; numbers within the extension's
tolerance (see ``snapshot_ext``)."""

import pytest
import torch
from snapshot_ext import NumericJSONSnapshot
from train_helpers import batch, config, make_step, normalizer

from reference.trainer import Trainer

pytest_plugins = ("pytester",)

FEATURES = {
    "none": {},
    "precorrector": {"pre": ["q_1"]},
    "regularization": {"reg_weight": 0.5},
    "both": {"pre": ["q_1"], "reg_weight": 0.5},
}


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(NumericJSONSnapshot)


def run_metrics(features: str, accumulate: bool) -> dict:
    torch.manual_seed(0)
    cfg = config(**FEATURES[features], accumulate=accumulate, decay=0.5, optimizer="SGD", lr=0.01)
    stepper = cfg.build(make_step(seed=3), normalizer())
    trainer = Trainer(stepper)
    trainer.train_one_epoch([batch(seed=21), batch(seed=22)])
    return {"batches": trainer.logged[:-1], "epoch": trainer.logged[-1]}


@pytest.mark.parametrize("accumulate", [False, True], ids=["full-graph", "grad-accumulation"])
@pytest.mark.parametrize("features", list(FEATURES))
def test_training_metrics_snapshot(snapshot_json, features, accumulate):
    assert run_metrics(features, accumulate) == snapshot_json


DRIFT_TEST = """
import pytest
from pathlib import Path
from snapshot_ext import NumericJSONSnapshot

class Here(NumericJSONSnapshot):
    root = Path(__file__).parent / "snaps"

METRICS = {"batch_loss": 1.25, "batch_corrector_regularization": 0.0625}

@pytest.fixture
def snap(snapshot):
    return snapshot.use_extension(Here)

def test_metrics(snap):
    assert METRICS == snap
"""


def test_snapshot_drift_is_red_with_a_readable_diff(pytester):
    pytester.makepyfile(test_drift=DRIFT_TEST)
    pytester.runpytest_inprocess("--snapshot-update").assert_outcomes(passed=1)
    # within tolerance (float32 noise): still green
    pytester.makepyfile(test_drift=DRIFT_TEST.replace("1.25", "1.2500001"))
    pytester.runpytest_inprocess().assert_outcomes(passed=1)
    # one metric drifts: red, and the diff names the metric with both values
    pytester.makepyfile(test_drift=DRIFT_TEST.replace("0.0625", "0.07"))
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r".*-.*batch_corrector_regularization.*0\.0625", r".*\+.*0\.07"])
    # a renamed key is red too (keys are exact)
    pytester.makepyfile(test_drift=DRIFT_TEST.replace('"batch_loss"', '"batch_loss_total"'))
    pytester.runpytest_inprocess().assert_outcomes(failed=1)
