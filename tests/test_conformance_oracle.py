"""Meta-tests of the suite's oracle (``conformance.oracle``): hand-computed
values on tiny tensors, and the name-and-prefix rules on a hand-written table.
The oracle is the suite's source of truth, so it is tested like code."""

from __future__ import annotations

import math

import pytest
import torch

from conformance import oracle
from conformance.adapter import LossSpec, MainLossSpec, NormalizerSpec, RegularizationSpec
from conformance.cases import main_case
from conformance.checks.test_exclusion_matching import RULES

MATCH_TABLE = [
    # entry, name, matches
    ("q", "q", True),
    ("q", "q_0", True),
    ("q", "q_12", True),
    ("q", "q2m", False),
    ("q", "q_a", False),
    ("q", "q_", False),
    ("q_", "q_3", True),
    ("q_", "q", False),
    ("q_", "q_x", False),
    ("q_1", "q_1", True),
    ("q_1", "q_10", False),
    ("q_1", "q_1_0", False),
    ("a.b", "aXb", False),  # literal text, not a pattern
    ("x+(1)", "x+(1)", True),
    ("t", "t2m", False),
]


@pytest.mark.parametrize("entry, name, matches", MATCH_TABLE)
def test_entry_matches_table(entry: str, name: str, matches: bool) -> None:
    assert oracle.entry_matches(entry, name) is matches


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_oracle_agrees_with_the_hand_written_exclusion_rules(rule) -> None:  # noqa: ANN001
    entries, still_swapped = rule.value
    assert set(oracle.swapped_names(entries, main_case().corrected)) == still_swapped


def test_select_for_exclusions_keeps_unmatched_entries() -> None:
    corrected = ("ps", "q_1", "q_2", "q2m")
    assert oracle.select_for_exclusions(("ps", "zz"), corrected) == ("q_1", "q_2", "q2m", "zz")
    assert oracle.select_for_exclusions((), corrected) == corrected
    assert oracle.unmatched_entries(("q_", "q_7", "q2m"), corrected) == ("q_7",)


def _t(*values: float) -> torch.Tensor:
    """``(n_batch=1, n_ensemble=1, n)``, float64."""
    return torch.tensor(values, dtype=torch.float64).reshape(1, 1, -1)


def test_channel_losses_by_hand() -> None:
    p, y = _t(1.0, -2.0), _t(0.0, 0.0)
    assert float(oracle.channel_loss("MSE", p, y)) == pytest.approx(2.5)
    assert float(oracle.channel_loss("L1", p, y)) == pytest.approx(1.5)
    w = torch.tensor([[1.0, 3.0]])
    aw = oracle.channel_loss("AreaWeightedMSE", p.reshape(1, 1, 1, 2), y.reshape(1, 1, 1, 2), w)
    assert float(aw) == pytest.approx((1 * 1 + 3 * 4) / 4)


def test_fair_crps_by_hand() -> None:
    # two members 0 and 2, target 1: skill = 1, spread sum = 2 * |0 - 2| = 4,
    # fair CRPS = 1 - 4 / (2 * 2 * 1) = 0
    members = torch.tensor([0.0, 2.0], dtype=torch.float64).reshape(1, 2, 1)
    target = torch.tensor([1.0], dtype=torch.float64).reshape(1, 1, 1)
    assert float(oracle.channel_loss("EnsembleLoss", members, target)) == pytest.approx(0.0)
    # both members at 0, target 1: skill 1, no spread
    same = torch.zeros(1, 2, 1, dtype=torch.float64)
    assert float(oracle.channel_loss("EnsembleLoss", same, target)) == pytest.approx(1.0)


def _spec(**kw) -> LossSpec:  # noqa: ANN003
    return LossSpec(
        names=("a", "b"),
        normalizer=NormalizerSpec(means={"a": 10.0, "b": 0.0}, stds={"a": 2.0, "b": 0.5}),
        **kw,
    )


def test_main_loss_by_hand() -> None:
    spec = _spec(main=MainLossSpec("MSE", weights={"b": 3.0}, sqrt_loss_step_decay_constant=1.0))
    predict = {"a": torch.tensor([[14.0]]), "b": torch.tensor([[1.0]])}
    target = {"a": torch.tensor([[10.0]]), "b": torch.tensor([[0.0]])}
    per = oracle.main_per_channel(spec, predict, target, step=3)
    decay = (1 + 3.0) ** -0.5
    assert float(per["a"]) == pytest.approx(decay * (4.0 / 2.0) ** 2)  # (14-10)/2 = 2
    assert float(per["b"]) == pytest.approx(decay * (3.0 * 1.0 / 0.5) ** 2)  # 3 * 2 = 6
    assert float(oracle.main_total(per)) == pytest.approx(decay * (4 + 36) / 2)


def test_penalty_by_hand_is_corrected_channels_only_and_unweighted() -> None:
    spec = _spec(
        main=MainLossSpec("MSE", weights={"a": 5.0}),
        regularization=RegularizationSpec("L1", weight=0.5),
    )
    output = {"a": torch.tensor([[12.0, 10.0]]), "b": torch.tensor([[0.0, 0.0]])}
    uncorrected = {"a": torch.tensor([[10.0, 10.0]])}  # correction 2 and 0, std 2
    # mean |correction / std| = (1 + 0) / 2; one corrected channel; x weight 0.5
    assert float(oracle.penalty(spec, output, uncorrected)) == pytest.approx(0.25)
    assert float(oracle.penalty(spec, output, {})) == 0.0


def test_main_prediction_swaps_only_corrected_and_not_excluded() -> None:
    from conformance.adapter import PreCorrectorSpec

    spec = _spec(precorrector=PreCorrectorSpec(exclude_names_and_prefixes=("b",)))
    output = {"a": torch.zeros(1, 1), "b": torch.zeros(1, 1)}
    uncorrected = {"a": torch.ones(1, 1), "b": torch.ones(1, 1)}
    predict = oracle.main_prediction(spec, output, uncorrected)
    assert predict["a"] is uncorrected["a"] and predict["b"] is output["b"]
    off = oracle.main_prediction(_spec(), output, uncorrected)
    assert off["a"] is output["a"]


def test_mask_zeroes_points_but_keeps_the_denominator() -> None:
    spec = _spec()
    predict = {"a": torch.tensor([[14.0, 14.0]]), "b": torch.zeros(1, 2)}
    target = {"a": torch.tensor([[10.0, 10.0]]), "b": torch.zeros(1, 2)}
    mask = {"a": torch.tensor([[True, False]])}
    per = oracle.main_per_channel(spec, predict, target, 0, mask)
    assert float(per["a"]) == pytest.approx(4.0 / 2)  # (2^2 + 0) / 2 points
    assert math.isclose(float(per["b"]), 0.0)
