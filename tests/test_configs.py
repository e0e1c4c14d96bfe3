import math

import dacite
import pytest
import torch
from helpers import NAMES, normalizer

from reference.corrector.loss import (
    CorrectorLossConfig,
    CorrectorRegularizationConfig,
    PreCorrectorOptimizationConfig,
)
from reference.loss_config import LossConfig, StepLossConfig


def test_both_none_is_an_error():
    with pytest.raises(ValueError, match="neither precorrector_optimization nor regularization"):
        CorrectorLossConfig()


@pytest.mark.parametrize(
    "loss, match",
    [
        (LossConfig(type="EnsembleLoss"), "ensemble loss"),
        (LossConfig(type="NaN"), "'NaN'"),
        (LossConfig(type="MSE", global_mean_type="LpLoss"), "global_mean_type"),
    ],
)
def test_regularization_rejects_loss_types(loss, match):
    with pytest.raises(ValueError, match=match):
        CorrectorRegularizationConfig(loss=loss)


@pytest.mark.parametrize("weight", [0.0, -1.0, math.nan, math.inf])
def test_regularization_rejects_bad_weights(weight):
    with pytest.raises(ValueError, match="weight is"):
        CorrectorRegularizationConfig(weight=weight)


@pytest.mark.parametrize("loss_type", ["MSE", "L1", "AreaWeightedMSE"])
def test_regularization_accepts_pointwise_losses(loss_type):
    CorrectorRegularizationConfig(loss=LossConfig(type=loss_type), weight=0.5)


def test_unknown_loss_type():
    with pytest.raises(ValueError, match="Unknown loss type 'Huber'"):
        LossConfig(type="Huber")  # type: ignore[arg-type]


def test_unknown_kwargs():
    with pytest.raises(ValueError, match="takes no kwargs"):
        LossConfig(type="MSE", kwargs={"alpha": 1})


def test_bad_exclusion_entry():
    with pytest.raises(ValueError, match="Invalid name-or-prefix entry"):
        PreCorrectorOptimizationConfig(exclude_names_and_prefixes=[""])


def test_area_weighted_needs_area_weights():
    with pytest.raises(ValueError, match="needs area weights"):
        StepLossConfig(type="AreaWeightedMSE").build(NAMES, normalizer())


def test_from_dict_strict():
    data = {
        "precorrector_optimization": {"exclude_names_and_prefixes": ["q_"]},
        "regularization": {"loss": {"type": "L1"}, "weight": 0.01},
    }
    cfg = dacite.from_dict(CorrectorLossConfig, data, config=dacite.Config(strict=True))
    assert cfg.regularization is not None and cfg.regularization.weight == 0.01
    with pytest.raises(dacite.UnexpectedDataError):
        dacite.from_dict(
            CorrectorLossConfig, {**data, "typo": 1}, config=dacite.Config(strict=True)
        )


def test_area_weighted_mse_closed_form():
    from reference.loss_functions import AreaWeightedMSELoss

    w = torch.tensor([[1.0], [3.0]])
    d = torch.tensor([[[[1.0, 1.0], [2.0, 2.0]]]])  # (1, 1, 2, 2)
    assert float(AreaWeightedMSELoss(w).of_difference(d)) == pytest.approx(
        (1 * 1 * 2 + 3 * 4 * 2) / 8
    )


def test_crps_closed_form():
    from reference.loss_functions import CRPSLoss

    x = torch.tensor([0.0, 2.0]).reshape(1, 2, 1)
    y = torch.tensor([1.0]).reshape(1, 1, 1)
    # fair CRPS: mean|x-y| - sum_ij|xi-xj| / (2 m (m-1)) = 1 - 4/4 = 0
    assert float(CRPSLoss(alpha=1.0)(x, y)) == pytest.approx(0.0)
    # plain CRPS: 1 - 4/8 = 0.5
    assert float(CRPSLoss(alpha=0.0)(x, y)) == pytest.approx(0.5)


def test_ensemble_loss_needs_two_members():
    from helpers import build

    with pytest.raises(ValueError, match="ensemble loss but n_ensemble=1"):
        build(step_cfg=StepLossConfig(type="EnsembleLoss"), n_ensemble=1)
    loss, _ = build(step_cfg=StepLossConfig(type="EnsembleLoss"), n_ensemble=2)
    assert loss.n_ensemble == 2


@pytest.mark.parametrize("module", ["reference.loss", "reference.loss_functions"])
def test_primitives_import_no_config(module):
    """One-way imports: configs import the loss primitives, never the reverse."""
    import ast
    import importlib

    source = importlib.import_module(module).__file__
    assert source is not None
    with open(source) as f:
        tree = ast.parse(f.read())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    configs = {"reference.loss_config", "reference.corrector.loss", "reference.stepper"}
    assert not imported & configs, f"{module} imports {imported & configs}"
