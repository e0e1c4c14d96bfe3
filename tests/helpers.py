"""Hand-built tensors for the reference's own tests."""

import torch

from reference.corrector.loss import (
    CorrectorLossConfig,
    CorrectorRegularizationConfig,
    PreCorrectorOptimizationConfig,
)
from reference.loss_config import LossConfig, StepLossConfig
from reference.normalizer import StandardNormalizer
from reference.step_output import StepOutput

NAMES = ["ps", "q_0", "q_1", "t"]
MEANS = {"ps": 100.0, "q_0": 1.0, "q_1": 2.0, "t": 280.0}
STDS = {"ps": 10.0, "q_0": 0.5, "q_1": 2.0, "t": 4.0}
SHAPE = (2, 3, 4)


def normalizer() -> StandardNormalizer:
    return StandardNormalizer(MEANS, STDS)


def tensors(seed: int, shape=SHAPE) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: MEANS[n] + STDS[n] * torch.randn(shape, generator=g) for n in NAMES}


def step_output(corrected=("ps", "q_1"), seed=0, shape=SHAPE) -> StepOutput:
    """Corrected outputs, with uncorrected = output - known correction."""
    out = tensors(seed, shape)
    g = torch.Generator().manual_seed(seed + 1000)
    unc = {n: out[n] - torch.randn(shape, generator=g) for n in corrected}
    return StepOutput(output=out, uncorrected=unc)


def build(pre=None, reg_type=None, weight=1.0, step_cfg=None, n_ensemble=1, area_weights=None):
    step_cfg = step_cfg or StepLossConfig()
    step_loss = step_cfg.build(NAMES, normalizer(), area_weights)
    if pre is None and reg_type is None:
        from reference.corrector.loss import build_step_output_loss

        return build_step_output_loss(None, step_loss, n_ensemble), step_loss
    cfg = CorrectorLossConfig(
        precorrector_optimization=None
        if pre is None
        else PreCorrectorOptimizationConfig(list(pre)),
        regularization=None
        if reg_type is None
        else CorrectorRegularizationConfig(LossConfig(type=reg_type), weight),
    )
    return cfg.build(step_loss, n_ensemble, area_weights), step_loss


def unfold(d, n_ensemble=1):
    return {k: v.reshape(v.shape[0] // n_ensemble, n_ensemble, *v.shape[1:]) for k, v in d.items()}


def target_of(d):
    return {k: v.unsqueeze(1) for k, v in d.items()}
