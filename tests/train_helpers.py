"""Tiny steps, batches and hand-computed losses for the train-stepper tests.

Grid 4x8; variables: ``ps`` (2D, global mean conserved), ``q_0``, ``q_1``
(levels forced positive), ``q_2`` (a level left alone), ``t`` (uncorrected),
``f`` (a forcing). So the corrector modifies exactly ``ps``, ``q_0``, ``q_1``.
"""

import dataclasses

import torch

from reference.corrector.corrector import ConservationCorrector
from reference.corrector.loss import (
    CorrectorLossConfig,
    CorrectorRegularizationConfig,
    PreCorrectorOptimizationConfig,
)
from reference.loss_config import LossConfig, StepLossConfig
from reference.normalizer import StandardNormalizer
from reference.optimization import OptimizationConfig
from reference.step import SingleModuleStep, StepABC
from reference.step_output import StepOutput
from reference.stepper import TrainStepper, TrainStepperConfig
from reference.typing_ import TensorMapping

OUT = ["ps", "q_0", "q_1", "q_2", "t"]
IN = [*OUT, "f"]
CORRECTED = ["ps", "q_0", "q_1"]
MEANS = {"ps": 100.0, "q_0": 0.05, "q_1": 0.1, "q_2": 0.5, "t": 280.0, "f": 0.0}
STDS = {"ps": 10.0, "q_0": 0.1, "q_1": 0.2, "q_2": 0.3, "t": 4.0, "f": 1.0}
GRID = (4, 8)


def normalizer() -> StandardNormalizer:
    return StandardNormalizer(MEANS, STDS)


def corrector() -> ConservationCorrector:
    return ConservationCorrector(["ps"], ["q_0", "q_1"])


def module(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Conv2d(len(IN), len(OUT), kernel_size=1)


def make_step(with_corrector: bool = True, seed: int = 0) -> SingleModuleStep:
    return SingleModuleStep(
        module(seed), normalizer(), IN, OUT, corrector() if with_corrector else None
    )


def batch(seed: int, n_batch: int = 2, n_time: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: MEANS[n] + STDS[n] * torch.randn((n_batch, n_time, *GRID), generator=g) for n in IN}


def corrector_loss(pre=None, reg_weight=None, reg_type="MSE") -> CorrectorLossConfig | None:
    if pre is None and reg_weight is None:
        return None
    return CorrectorLossConfig(
        precorrector_optimization=None
        if pre is None
        else PreCorrectorOptimizationConfig(list(pre)),
        regularization=None
        if reg_weight is None
        else CorrectorRegularizationConfig(LossConfig(type=reg_type), reg_weight),
    )


def config(
    pre=None,
    reg_weight=None,
    reg_type="MSE",
    accumulate=False,
    decay=0.0,
    optimizer="Adam",
    lr=1e-3,
) -> TrainStepperConfig:
    return TrainStepperConfig(
        loss=StepLossConfig(sqrt_loss_step_decay_constant=decay),
        corrector_loss=corrector_loss(pre, reg_weight, reg_type),
        optimization=OptimizationConfig(
            optimizer_type=optimizer, lr=lr, use_gradient_accumulation=accumulate
        ),
    )


def stepper(cfg: TrainStepperConfig, step: StepABC | None = None) -> TrainStepper:
    return cfg.build(step if step is not None else make_step(), normalizer())


def grads(step: StepABC) -> list[torch.Tensor]:
    out = []
    for p in step.parameters():
        assert p.grad is not None
        out.append(p.grad.clone())
    return out


class SpyStep(StepABC):
    """Wraps a step; records every input and ``detach_uncorrected`` flag."""

    def __init__(self, inner: StepABC):
        self.inner = inner
        self.inputs: list[dict[str, torch.Tensor]] = []
        self.flags: list[bool] = []
        self.outputs: list[StepOutput] = []

    @property
    def in_names(self) -> list[str]:
        return self.inner.in_names

    @property
    def out_names(self) -> list[str]:
        return self.inner.out_names

    @property
    def corrector_enabled(self) -> bool:
        return self.inner.corrector_enabled

    @property
    def modules(self) -> torch.nn.ModuleList:
        return self.inner.modules

    def step(self, input: TensorMapping, detach_uncorrected: bool = True) -> StepOutput:
        self.inputs.append(dict(input))
        self.flags.append(detach_uncorrected)
        out = self.inner.step(input, detach_uncorrected=detach_uncorrected)
        self.outputs.append(out)
        return out


# --- the rollout and loss by hand (no reference loss code) -------------------


def hand_step(mod: torch.nn.Module, input: TensorMapping) -> tuple[dict, dict]:
    """(corrected output, raw network output) of one step, physical units."""
    x = torch.stack([(input[n] - MEANS[n]) / STDS[n] for n in IN], dim=1)
    y = mod(x)
    gen = {n: y[:, i] * STDS[n] + MEANS[n] for i, n in enumerate(OUT)}
    out = dict(gen)
    out["ps"] = (
        gen["ps"]
        - gen["ps"].mean(dim=(-2, -1), keepdim=True)
        + input["ps"].mean(dim=(-2, -1), keepdim=True)
    )
    out["q_0"] = torch.clamp(gen["q_0"], min=0.0)
    out["q_1"] = torch.clamp(gen["q_1"], min=0.0)
    return out, gen


@dataclasses.dataclass
class HandStep:
    main_per_channel: dict[str, torch.Tensor]
    main: torch.Tensor
    regularization: torch.Tensor | None
    output: dict[str, torch.Tensor]


def hand_loss(
    out: dict,
    gen: dict,
    target: TensorMapping,
    step: int,
    swapped=(),
    reg_weight=None,
    decay=0.0,
    reg_type="MSE",
) -> HandStep:
    """The loss of one step, written from the definitions: MSE in
    loss-normalized space, mean over channels, step decay on the main loss,
    regularization = weight * mean over corrected channels, no decay."""
    w = (1.0 + decay * step) ** -0.5
    per = {}
    for n in OUT:
        pred = gen[n] if n in swapped else out[n]
        per[n] = w * (((pred - target[n]) / STDS[n]) ** 2).mean()
    main = torch.stack([per[n] for n in OUT]).mean()
    reg = None
    if reg_weight is not None:
        terms = []
        for n in CORRECTED:
            d = (out[n] - gen[n]) / STDS[n]
            terms.append((d**2).mean() if reg_type == "MSE" else d.abs().mean())
        reg = reg_weight * torch.stack(terms).mean()
    return HandStep(per, main, reg, out)


def hand_rollout(mod, data, n_steps, detach_state=False, **loss_kwargs) -> list[HandStep]:
    state = {n: data[n][:, 0] for n in OUT}
    steps = []
    for i in range(n_steps):
        input = {**state, "f": data["f"][:, i]}
        out, gen = hand_step(mod, input)
        steps.append(hand_loss(out, gen, {n: data[n][:, i + 1] for n in OUT}, i, **loss_kwargs))
        state = {n: (out[n].detach() if detach_state else out[n]) for n in OUT}
    return steps


def hand_total(steps: list[HandStep]) -> torch.Tensor:
    return torch.stack(
        [s.main + (s.regularization if s.regularization is not None else 0.0) for s in steps]
    ).sum()
