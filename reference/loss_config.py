"""Configs that build the loss primitives of ``reference.loss``."""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from reference.loss import StepLoss, WeightedMappingLoss
from reference.loss_functions import (
    AreaWeightedMSELoss,
    ChannelLoss,
    CRPSLoss,
    GlobalMeanLpLoss,
    L1Loss,
    MSELoss,
    NaNLoss,
    WeightedSumLoss,
)
from reference.normalizer import StandardNormalizer

LossType = Literal["MSE", "L1", "AreaWeightedMSE", "NaN", "EnsembleLoss"]
LOSS_TYPES: tuple[str, ...] = ("MSE", "L1", "AreaWeightedMSE", "NaN", "EnsembleLoss")
GLOBAL_MEAN_TYPES: tuple[str, ...] = ("LpLoss",)

_KWARGS: dict[str, tuple[str, ...]] = {
    "MSE": (),
    "L1": (),
    "AreaWeightedMSE": (),
    "NaN": (),
    "EnsembleLoss": ("alpha",),
}


def _require_number(field: str, value: object) -> None:
    """``TypeError`` naming ``field`` unless ``value`` is a number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Loss {field} is {value!r} ({type(value).__name__}); it must be a number.")


@dataclasses.dataclass
class LossConfig:
    """A per-channel loss, in loss-normalized space.

    Args:
        type: ``MSE``, ``L1``, ``AreaWeightedMSE`` (needs area weights),
            ``NaN`` (a placeholder that is NaN everywhere) or ``EnsembleLoss``
            (CRPS over the ensemble dimension; kwarg ``alpha``, default 1.0 =
            fair CRPS; needs ``n_ensemble >= 2``).
        kwargs: options of the chosen type.
        global_mean_type: ``LpLoss`` adds a relative Lp loss of each sample's
            area-weighted global mean (kwarg ``p``), times ``global_mean_weight``.
        global_mean_kwargs: options of the global-mean loss.
        global_mean_weight: its weight, finite and >= 0.
    """

    type: LossType = "MSE"
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    global_mean_type: Literal["LpLoss"] | None = None
    global_mean_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    global_mean_weight: float = 1.0

    def __post_init__(self) -> None:
        for field in ("kwargs", "global_mean_kwargs"):
            if not isinstance(getattr(self, field), Mapping):
                raise TypeError(
                    f"Loss {field} is {getattr(self, field)!r}; it must be a mapping of "
                    "option names to values, e.g. {alpha: 0.95}."
                )
        if not isinstance(self.type, str) or self.type not in LOSS_TYPES:
            raise ValueError(f"Unknown loss type {self.type!r}; choose one of {list(LOSS_TYPES)}.")
        unknown = sorted(set(self.kwargs) - set(_KWARGS[self.type]))
        if unknown:
            raise ValueError(
                f"Loss type {self.type!r} takes no kwargs {unknown}; it takes "
                f"{list(_KWARGS[self.type])}."
            )
        if self.global_mean_type is not None and self.global_mean_type not in GLOBAL_MEAN_TYPES:
            raise ValueError(
                f"Unknown global_mean_type {self.global_mean_type!r}; choose one of "
                f"{list(GLOBAL_MEAN_TYPES)} or null."
            )
        if sorted(set(self.global_mean_kwargs) - {"p"}):
            raise ValueError(
                f"global_mean_kwargs takes only 'p', got {sorted(self.global_mean_kwargs)}."
            )
        _require_number("global_mean_weight", self.global_mean_weight)
        if not (math.isfinite(self.global_mean_weight) and self.global_mean_weight >= 0):
            raise ValueError(
                f"global_mean_weight is {self.global_mean_weight}; it must be finite and >= 0."
            )

    @property
    def is_ensemble(self) -> bool:
        return self.type == "EnsembleLoss"

    @property
    def is_nan(self) -> bool:
        return self.type == "NaN"

    @property
    def uses_global_mean(self) -> bool:
        return self.global_mean_type is not None

    def build(self, area_weights: torch.Tensor | None = None) -> ChannelLoss:
        """The per-channel loss. ``area_weights``: ``(n_lat, n_lon)`` or ``(n_lat, 1)``."""

        def need_area_weights(what: str) -> torch.Tensor:
            if area_weights is None:
                raise ValueError(f"{what} needs area weights; pass area_weights to build().")
            return area_weights

        loss: ChannelLoss
        if self.type == "MSE":
            loss = MSELoss()
        elif self.type == "L1":
            loss = L1Loss()
        elif self.type == "AreaWeightedMSE":
            loss = AreaWeightedMSELoss(need_area_weights("AreaWeightedMSE"))
        elif self.type == "NaN":
            loss = NaNLoss()
        else:
            loss = CRPSLoss(**self.kwargs)
        if self.global_mean_type is None:
            return loss
        global_mean = GlobalMeanLpLoss(
            need_area_weights("global_mean_type"), **self.global_mean_kwargs
        )
        return WeightedSumLoss([loss, global_mean], [1.0, self.global_mean_weight])


@dataclasses.dataclass
class StepLossConfig(LossConfig):
    """The main loss of a train stepper: a ``LossConfig`` plus per-variable
    weights and the step decay.

    Args:
        sqrt_loss_step_decay_constant: ``c`` in ``(1 + c * step) ** -0.5``,
            step from 0; finite and >= 0.
        weights: per-variable weights applied to loss-normalized values
            (1.0 for variables not named).
    """

    sqrt_loss_step_decay_constant: float = 0.0
    weights: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        c = self.sqrt_loss_step_decay_constant
        _require_number("sqrt_loss_step_decay_constant", c)
        if not isinstance(self.weights, Mapping):
            raise TypeError(
                f"Loss weights are {self.weights!r}; they must be a mapping from variable "
                "name to a number, e.g. {ps: 2.0}."
            )
        for name, weight in self.weights.items():
            _require_number(f"weights[{name!r}]", weight)
        if not (math.isfinite(c) and c >= 0):
            raise ValueError(f"sqrt_loss_step_decay_constant is {c}; it must be finite and >= 0.")

    def loss_config(self) -> LossConfig:
        return LossConfig(
            type=self.type,
            kwargs=self.kwargs,
            global_mean_type=self.global_mean_type,
            global_mean_kwargs=self.global_mean_kwargs,
            global_mean_weight=self.global_mean_weight,
        )

    def build(  # type: ignore[override]
        self,
        out_names: Sequence[str],
        normalizer: StandardNormalizer,
        area_weights: torch.Tensor | None = None,
    ) -> StepLoss:
        mapping_loss = WeightedMappingLoss(
            self.loss_config().build(area_weights), self.weights, out_names, normalizer
        )
        return StepLoss(mapping_loss, self.sqrt_loss_step_decay_constant)
