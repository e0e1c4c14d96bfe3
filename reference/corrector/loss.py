"""Configs of the corrector training features, and the builder of the one
``StepOutputLoss`` a train stepper uses.

Imports are one-way: this module imports ``reference.loss``; nothing in
``reference.loss`` imports a config.
"""

import dataclasses
import math
from collections.abc import Sequence

import torch

from reference.loss import StepLoss, StepOutputLoss, WeightedMappingLoss
from reference.loss_config import LossConfig
from reference.matching import NameMatcher


@dataclasses.dataclass
class PreCorrectorOptimizationConfig:
    """Optimize the model *before* its corrector.

    The main loss sees ``uncorrected`` (pre-correction) values in place of the
    corrected outputs for every variable the corrector modified, except those
    matched by ``exclude_names_and_prefixes`` (which keep their corrected
    values). Variables the corrector did not modify are unaffected. Rollout
    state and returned predictions stay corrected; only the loss target
    changes. Gradients flow through the pre-correction values.

    Args:
        exclude_names_and_prefixes: bare name ``x`` (``x`` and all levels
            ``x_<n>``), prefix ``x_`` (all levels), or explicit level ``x_<n>``.
            Entries that match no corrector-modified variable warn once, on
            the first step with corrections.

    Combined with ``CorrectorRegularizationConfig``: the main loss trains the
    pre-correction output toward the target, and the penalty additionally
    pulls the corrected output toward the pre-correction output.
    """

    exclude_names_and_prefixes: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        entries = self.exclude_names_and_prefixes
        if isinstance(entries, str) or not isinstance(entries, list | tuple):
            raise TypeError(
                "precorrector_optimization.exclude_names_and_prefixes must be a list of "
                f"strings, got {entries!r} ({type(entries).__name__}); write it as a list, "
                f"e.g. [{entries!r}] (a bare string would be read as its characters)."
            )
        NameMatcher(entries)  # validates each entry

    def build(self) -> NameMatcher:
        return NameMatcher(self.exclude_names_and_prefixes)


@dataclasses.dataclass
class CorrectorRegularizationConfig:
    """Penalize the magnitude of the corrector's corrections.

    ``penalty = weight * mean_{k corrected} loss(correction_k / std_k, 0)``
    with ``correction_k = output_k - uncorrected_k`` (physical units) and
    ``std_k`` the loss normalizer's std, i.e. in loss-normalized space (the
    normalizer's mean cancels).

    - The mean is over **corrected channels only**: with ``n_corrected`` of
      ``n_all`` channels corrected it is ``n_all / n_corrected`` times larger
      than a mean over all channels (weights tuned for an all-channel mean
      must be divided by that factor).
    - It carries **no step decay**: unlike the main loss's
      ``sqrt_loss_step_decay_constant``, only ``weight`` scales it.
    - Per-variable loss weights of the main loss do not apply.

    Combined with ``PreCorrectorOptimizationConfig``: both terms are summed in
    one total per step; see that config.

    Args:
        loss: the loss type. Ensemble (``EnsembleLoss``), ``NaN`` and
            global-mean losses are rejected: against a zero baseline they are
            undefined, poison the total, or divide by zero.
        weight: finite and > 0.
    """

    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.loss.is_ensemble:
            raise ValueError(
                f"Corrector regularization cannot use loss type {self.loss.type!r}: an "
                "ensemble loss has no meaning against a zero baseline. Use MSE, L1 or "
                "AreaWeightedMSE."
            )
        if self.loss.is_nan:
            raise ValueError(
                "Corrector regularization cannot use loss type 'NaN': it would make "
                "every training loss NaN. Use MSE, L1 or AreaWeightedMSE."
            )
        if self.loss.uses_global_mean:
            raise ValueError(
                f"Corrector regularization cannot use global_mean_type "
                f"{self.loss.global_mean_type!r}: a relative global-mean loss divides by "
                "the zero baseline. Set global_mean_type to null."
            )
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float):
            raise TypeError(
                f"Corrector regularization weight is {self.weight!r} "
                f"({type(self.weight).__name__}); it must be a number > 0."
            )
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(
                f"Corrector regularization weight is {self.weight}; it must be finite "
                "and > 0. To turn the penalty off, set regularization to null."
            )

    def build(
        self, step_loss: StepLoss, area_weights: torch.Tensor | None = None
    ) -> WeightedMappingLoss:
        """The penalty's loss over the step loss's channels and normalizer (weights 1)."""
        return WeightedMappingLoss(
            self.loss.build(area_weights), {}, step_loss.names, step_loss.normalizer
        )


@dataclasses.dataclass
class CorrectorLossConfig:
    """The corrector training features; at least one must be set.

    Args:
        precorrector_optimization: train the pre-correction output (see
            ``PreCorrectorOptimizationConfig``), or null.
        regularization: penalize corrections (see
            ``CorrectorRegularizationConfig``), or null.
    """

    precorrector_optimization: PreCorrectorOptimizationConfig | None = None
    regularization: CorrectorRegularizationConfig | None = None

    def __post_init__(self) -> None:
        if self.precorrector_optimization is None and self.regularization is None:
            raise ValueError(
                "CorrectorLossConfig has neither precorrector_optimization nor "
                "regularization set; set at least one, or set corrector_loss to null "
                "to train without corrector features."
            )

    def build(
        self,
        step_loss: StepLoss,
        n_ensemble: int = 1,
        area_weights: torch.Tensor | None = None,
    ) -> StepOutputLoss:
        pre = self.precorrector_optimization
        reg = self.regularization
        return StepOutputLoss(
            step_loss,
            n_ensemble=n_ensemble,
            precorrector_exclusions=None if pre is None else pre.build(),
            regularization=None if reg is None else reg.build(step_loss, area_weights),
            regularization_weight=1.0 if reg is None else reg.weight,
        )


def build_step_output_loss(
    corrector_loss: CorrectorLossConfig | None,
    step_loss: StepLoss,
    n_ensemble: int = 1,
    area_weights: torch.Tensor | None = None,
) -> StepOutputLoss:
    """The one ``StepOutputLoss`` a train stepper uses: a pass-through to
    ``step_loss`` when ``corrector_loss`` is None."""
    if corrector_loss is None:
        return StepOutputLoss(step_loss, n_ensemble=n_ensemble)
    return corrector_loss.build(step_loss, n_ensemble, area_weights)


__all__: Sequence[str] = (
    "CorrectorLossConfig",
    "CorrectorRegularizationConfig",
    "PreCorrectorOptimizationConfig",
    "build_step_output_loss",
)
