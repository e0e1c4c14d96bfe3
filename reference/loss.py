"""The loss objects: ``LossOutput``, ``WeightedMappingLoss``, ``StepLoss``
and the corrector-aware ``StepOutputLoss``.

Everything here works in **loss-normalized space** (see
:class:`reference.normalizer.StandardNormalizer`). This module imports no
config; configs (``reference.loss_config``, ``reference.corrector.loss``)
build these primitives.
"""

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence

import torch

from reference.loss_functions import ChannelLoss
from reference.matching import NameMatcher
from reference.normalizer import StandardNormalizer
from reference.step_output import StepOutput
from reference.typing_ import TensorDict, TensorMapping


class StepOutputLossInputError(ValueError):
    """Bad input to a loss call; the message names the variable and the fix."""


class UnmatchedExclusionWarning(UserWarning):
    """An exclusion entry matched no corrector-modified variable."""


@dataclasses.dataclass(frozen=True)
class LossOutput:
    """Per-channel losses of one step, in loss-normalized units.

    Attributes:
        names: channel (variable) names, shape ``(n_channels,)``.
        per_channel: each channel's loss, a tensor of shape ``(n_channels,)``;
            inactive channels hold 0.
        active: which channels count, or None when all do.
    """

    names: tuple[str, ...]
    per_channel: torch.Tensor
    active: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        if self.per_channel.shape != (len(self.names),):
            raise ValueError(
                f"per_channel has shape {tuple(self.per_channel.shape)}, expected "
                f"({len(self.names)},) for channels {list(self.names)}."
            )
        if self.active is not None and len(self.active) != len(self.names):
            raise ValueError("active must have one entry per channel")

    @property
    def active_names(self) -> tuple[str, ...]:
        if self.active is None:
            return self.names
        return tuple(n for n, a in zip(self.names, self.active) if a)

    def total(self) -> torch.Tensor:
        """Mean over the active channels (0-d tensor); 0 when none is active."""
        if self.active is None:
            return self.per_channel.mean()
        index = [i for i, a in enumerate(self.active) if a]
        if not index:
            return self.per_channel.sum() * 0.0
        if len(index) == len(self.names):
            return self.per_channel.mean()
        return self.per_channel[index].mean()

    def channel_losses(self) -> dict[str, torch.Tensor]:
        """Active channels' losses by name (0-d tensors, graph kept)."""
        return {
            n: self.per_channel[i]
            for i, n in enumerate(self.names)
            if self.active is None or self.active[i]
        }

    def scale(self, factor: float | torch.Tensor) -> "LossOutput":
        """Every channel multiplied by ``factor``."""
        return dataclasses.replace(self, per_channel=self.per_channel * factor)


def _broadcast_mask(value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return value
    return torch.where(mask.to(device=value.device, dtype=torch.bool), value, 0.0)


class WeightedMappingLoss:
    """Normalize, weight per variable, and take a per-channel loss.

    Mathematically ``loss(w_k * normalize(x)[k], w_k * normalize(y)[k])`` for
    every channel ``k`` of ``out_names`` (the "stack channels" of upstream is a
    loop over channels here: same values, no packed copy).

    Args:
        loss: the per-channel loss (see ``reference.loss_functions``).
        weights: per-variable weights; variables not named get 1.0.
        out_names: the channels, in order.
        normalizer: defines loss-normalized space; must cover ``out_names``.
    """

    def __init__(
        self,
        loss: ChannelLoss,
        weights: Mapping[str, float],
        out_names: Sequence[str],
        normalizer: StandardNormalizer,
    ):
        missing = [n for n in out_names if n not in normalizer.stds]
        if missing:
            raise ValueError(
                f"The loss normalizer has no statistics for {missing}; add them "
                "to the normalizer or drop them from the loss's out_names."
            )
        unknown = sorted(set(weights) - set(out_names))
        if unknown:
            raise ValueError(
                f"Loss weights name {unknown}, which are not loss variables "
                f"{list(out_names)}; remove them or fix the names."
            )
        for name, w in weights.items():
            if not (math.isfinite(float(w)) and float(w) >= 0):
                raise ValueError(f"Loss weight of {name!r} is {w}; it must be finite and >= 0.")
        self.loss = loss
        self.names: tuple[str, ...] = tuple(out_names)
        self.normalizer = normalizer
        self.weights = {n: float(weights.get(n, 1.0)) for n in self.names}
        # weight / std: the one per-channel factor from physical differences
        # to weighted loss-normalized differences.
        self._scale = {n: self.weights[n] / normalizer.stds[n] for n in self.names}

    def _channel(
        self, name: str, predict: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        scale = self._scale[name]
        if self.loss.difference_only:
            if mask is None:  # the common case: no scaled difference is stored
                return self.loss.of_scaled_difference(predict, target, scale)
            return self.loss.of_difference(_broadcast_mask((predict - target) * scale, mask))
        mean = self.normalizer.means[name]
        p = _broadcast_mask((predict - mean) * scale, mask)
        t = _broadcast_mask((target - mean) * scale, mask)
        return self.loss(p, t)

    def __call__(
        self,
        predict: TensorMapping,
        target: TensorMapping,
        data_mask: TensorMapping | None = None,
    ) -> LossOutput:
        """Per-channel loss of every channel.

        Args:
            predict: physical units, ``(n_batch, n_ensemble, *spatial)``.
            target: physical units, ``(n_batch, 1, *spatial)``.
            data_mask: optional per-variable masks broadcastable to the
                values; points where the mask is False contribute 0.
        """
        mask = data_mask or {}
        values = [self._channel(n, predict[n], target[n], mask.get(n)) for n in self.names]
        return LossOutput(self.names, torch.stack(values))

    def of_differences(
        self, differences: TensorMapping, data_mask: TensorMapping | None = None
    ) -> LossOutput:
        """``loss(w_k * d_k / std_k, 0)`` for the channels present in ``differences``.

        Args:
            differences: physical-unit differences (e.g. corrections
                ``output - uncorrected``), ``(n_batch, n_ensemble, *spatial)``,
                for a subset of the channels.

        Returns:
            A ``LossOutput`` over all channels whose active channels are
            exactly those in ``differences``; its ``total()`` is the mean
            over those channels only.
        """
        self._require_difference_only()
        mask = data_mask or {}
        values = {
            name: self.loss.of_difference(
                _broadcast_mask(differences[name] * self._scale[name], mask.get(name))
            )
            for name in self.names
            if name in differences
        }
        return self._of_active(values)

    def of_differences_between(
        self,
        minuend: TensorMapping,
        subtrahend: TensorMapping,
        data_mask: TensorMapping | None = None,
    ) -> LossOutput:
        """``of_differences({k: minuend[k] - subtrahend[k]})`` for the channels in
        ``subtrahend``, without storing the differences.

        Args:
            minuend, subtrahend: physical units, ``(n_batch, n_ensemble,
                *spatial)``; e.g. ``output`` and ``uncorrected``, whose
                differences are the corrections.
        """
        self._require_difference_only()
        mask = data_mask or {}
        values = {
            name: self._channel(name, minuend[name], subtrahend[name], mask.get(name))
            for name in self.names
            if name in subtrahend
        }
        return self._of_active(values)

    def _require_difference_only(self) -> None:
        if not self.loss.difference_only:
            raise ValueError(f"{type(self.loss).__name__} is not a function of differences alone.")

    def _of_active(self, values: Mapping[str, torch.Tensor]) -> LossOutput:
        """A ``LossOutput`` over all channels whose active channels are exactly
        those in ``values`` (0-d losses); inactive channels hold 0."""
        active = tuple(n in values for n in self.names)
        if not values:
            return LossOutput(self.names, torch.zeros(len(self.names)), active)
        zero = torch.zeros_like(next(iter(values.values())))
        per_channel = torch.stack([values.get(n, zero) for n in self.names])
        return LossOutput(self.names, per_channel, active)


class StepLoss:
    """The main loss of one step: a ``WeightedMappingLoss`` times the step decay
    ``(1 + c * step) ** -0.5`` (``c`` = ``sqrt_loss_decay_constant``, ``step``
    from 0)."""

    def __init__(self, loss: WeightedMappingLoss, sqrt_loss_decay_constant: float = 0.0):
        if not (math.isfinite(sqrt_loss_decay_constant) and sqrt_loss_decay_constant >= 0):
            raise ValueError(
                f"sqrt_loss_step_decay_constant is {sqrt_loss_decay_constant}; it must be finite and >= 0."
            )
        self.loss = loss
        self.sqrt_loss_decay_constant = sqrt_loss_decay_constant

    @property
    def names(self) -> tuple[str, ...]:
        return self.loss.names

    @property
    def normalizer(self) -> StandardNormalizer:
        return self.loss.normalizer

    def step_weight(self, step: int) -> float:
        return (1.0 + self.sqrt_loss_decay_constant * step) ** -0.5

    def __call__(
        self,
        predict: TensorMapping,
        target: TensorMapping,
        step: int,
        data_mask: TensorMapping | None = None,
    ) -> LossOutput:
        """Per-channel losses times the step weight.

        ``predict``: physical units, ``(n_batch, n_ensemble, *spatial)``;
        ``target``: physical units, ``(n_batch, 1, *spatial)``.
        """
        return self.loss(predict, target, data_mask).scale(self.step_weight(step))


@dataclasses.dataclass(frozen=True)
class StepOutputLossResult:
    """The loss of one step.

    Attributes:
        main: the main loss (``StepLoss``, step-decayed), per channel.
        regularization: ``weight * mean over corrected channels of
            loss(correction / std, 0)`` (0-d tensor, not step-decayed), or
            None when regularization is not configured.
    """

    main: LossOutput
    regularization: torch.Tensor | None = None

    def total(self) -> torch.Tensor:
        """``main.total() + regularization`` (just ``main.total()`` without it)."""
        if self.regularization is None:
            return self.main.total()
        return self.main.total() + self.regularization


def unfold_ensemble(data: TensorMapping, n_ensemble: int) -> TensorDict:
    """``(n_batch * n_ensemble, *spatial)`` -> ``(n_batch, n_ensemble, *spatial)`` (views)."""
    return {k: v.unflatten(0, (-1, n_ensemble)) for k, v in data.items()}


def _unfold_mask(data_mask: TensorMapping | None, target: TensorMapping) -> TensorDict | None:
    """``target``: ``(n_batch, *spatial)``, before the ensemble dim is unfolded."""
    if data_mask is None:
        return None
    out = {}
    for k, m in data_mask.items():
        # a mask shaped like the target gains the ensemble dim; a spatial one broadcasts
        out[k] = m.unsqueeze(1) if k in target and m.ndim == target[k].ndim else m
    return out


class StepOutputLoss:
    """``StepLoss`` plus the two corrector features, on a ``StepOutput``.

    Args:
        step_loss: the main loss, used unchanged.
        n_ensemble: ensemble members per sample; predictions have leading
            dimension ``n_batch * n_ensemble``, targets ``n_batch``.
        precorrector_exclusions: None turns pre-corrector optimization off.
            Otherwise it is on, and the main loss sees ``uncorrected[k]`` in
            place of ``output[k]`` for every corrected ``k`` this matcher does
            *not* match. Entries matching no corrected variable warn once.
        regularization: None turns the correction penalty off. Otherwise the
            loss of ``correction / std`` against 0, per corrected channel.
        regularization_weight: finite and > 0; multiplies the penalty.

    With both None this is a pass-through to ``step_loss``.
    """

    def __init__(
        self,
        step_loss: StepLoss,
        n_ensemble: int = 1,
        precorrector_exclusions: NameMatcher | None = None,
        regularization: WeightedMappingLoss | None = None,
        regularization_weight: float = 1.0,
    ):
        if not isinstance(n_ensemble, int) or n_ensemble < 1:
            raise ValueError(f"n_ensemble must be a positive integer, got {n_ensemble!r}.")
        if not (math.isfinite(regularization_weight) and regularization_weight > 0):
            raise ValueError(
                f"regularization weight is {regularization_weight}; it must be finite and > 0 "
                "(to turn the penalty off, leave regularization unset)."
            )
        if step_loss.loss.loss.is_ensemble and n_ensemble < 2:
            raise ValueError(
                f"The main loss is an ensemble loss but n_ensemble={n_ensemble}; set "
                "n_ensemble >= 2 or use a deterministic loss type."
            )
        if regularization is not None and regularization.names != step_loss.names:
            raise ValueError(
                "The regularization loss must cover the same channels as the step loss."
            )
        self.step_loss = step_loss
        self.n_ensemble = n_ensemble
        self.precorrector_exclusions = precorrector_exclusions
        self.regularization = regularization
        self.regularization_weight = float(regularization_weight)
        self._exclusions_checked = False

    @property
    def needs_uncorrected_grad(self) -> bool:
        """True iff either feature is on: both differentiate through ``uncorrected``."""
        return self.precorrector_exclusions is not None or self.regularization is not None

    def __call__(
        self,
        step_output: StepOutput,
        target_step: TensorMapping,
        step: int,
        data_mask: TensorMapping | None = None,
    ) -> StepOutputLossResult:
        """The loss of one step.

        Args:
            step_output: corrected ``output`` and ``uncorrected`` values,
                physical units, ``(n_batch * n_ensemble, *spatial)``.
            target_step: targets, physical units, ``(n_batch, *spatial)``.
            step: the step index from 0 (for the main loss's decay only).
            data_mask: optional per-variable masks (True = valid), broadcastable
                to ``(n_batch, *spatial)``; masked points contribute 0 to both
                the main loss and the penalty.

        ``step_output`` and ``target_step`` are not modified.
        """
        self._validate(step_output, target_step)
        names = self.step_loss.names
        # views (n_batch, n_ensemble, *spatial); the main loss and the penalty
        # share them, so their gradients meet in one buffer
        output = unfold_ensemble({k: step_output.output[k] for k in names}, self.n_ensemble)
        # (the pass-through reads no uncorrected value)
        used = step_output.uncorrected if self.needs_uncorrected_grad else {}
        uncorrected = unfold_ensemble(
            {k: v for k, v in used.items() if k in names}, self.n_ensemble
        )
        swapped: list[str] = []
        if self.precorrector_exclusions is not None and uncorrected:
            self._warn_unmatched_once(list(uncorrected))
            swapped = [k for k in uncorrected if not self.precorrector_exclusions.matches(k)]
        predict = {k: (uncorrected[k] if k in swapped else output[k]) for k in names}
        target = {k: target_step[k].unsqueeze(1) for k in names}
        mask = _unfold_mask(data_mask, target_step)
        main = self.step_loss(predict, target, step, mask)
        regularization = None
        if self.regularization is not None:
            # the loss of the corrections output - uncorrected, never stored
            penalty = self.regularization.of_differences_between(
                {k: output[k] for k in uncorrected}, uncorrected, mask
            )
            regularization = self.regularization_weight * penalty.total()
        self._diagnose_nonfinite(main, regularization, step_output, swapped)
        return StepOutputLossResult(main=main, regularization=regularization)

    def _warn_unmatched_once(self, corrected: list[str]) -> None:
        if self._exclusions_checked or self.precorrector_exclusions is None:
            return
        self._exclusions_checked = True
        unmatched = self.precorrector_exclusions.unmatched(corrected)
        if unmatched:
            warnings.warn(
                f"precorrector_optimization.exclude_names_and_prefixes entries {unmatched} "
                f"match no corrector-modified variable (modified: {sorted(corrected)}); "
                "they have no effect. Fix the names or remove the entries.",
                UnmatchedExclusionWarning,
                stacklevel=3,
            )

    def _validate(self, step_output: StepOutput, target_step: TensorMapping) -> None:
        output, uncorrected = step_output.output, step_output.uncorrected
        names = self.step_loss.names
        for name in names:
            if name not in output:
                raise StepOutputLossInputError(
                    f"step_output.output has no {name!r}, a loss variable; the step "
                    f"must predict every loss variable (got {sorted(output)})."
                )
            if name not in target_step:
                raise StepOutputLossInputError(
                    f"target_step has no {name!r}, a loss variable; pass the target "
                    f"for every loss variable (got {sorted(target_step)})."
                )
        for name, value in uncorrected.items():
            if name not in output:
                raise StepOutputLossInputError(
                    f"step_output.uncorrected has {name!r}, which is not in "
                    "step_output.output; uncorrected must hold pre-correction values "
                    "of output variables only."
                )
            if value.shape != output[name].shape:
                raise StepOutputLossInputError(
                    f"step_output.uncorrected[{name!r}] has shape {tuple(value.shape)} but "
                    f"output[{name!r}] has {tuple(output[name].shape)}; they must match."
                )
            if self.needs_uncorrected_grad and name not in names:
                raise StepOutputLossInputError(
                    f"The corrector modified {name!r}, which is not a loss variable "
                    f"({list(names)}); the corrector features cannot use it. Add it "
                    "to the loss variables (normalizer) or stop correcting it."
                )
        for name in names:
            pred, tgt = output[name], target_step[name]
            if pred.ndim == 0 or pred.shape[0] % self.n_ensemble != 0:
                raise StepOutputLossInputError(
                    f"step_output.output[{name!r}] has leading dimension "
                    f"{tuple(pred.shape)[:1]}, not divisible by n_ensemble={self.n_ensemble}; "
                    "stack the ensemble members of each sample along dim 0."
                )
            expected = (pred.shape[0] // self.n_ensemble, *pred.shape[1:])
            if tuple(tgt.shape) != expected:
                raise StepOutputLossInputError(
                    f"target_step[{name!r}] has shape {tuple(tgt.shape)}, expected "
                    f"{expected} for output shape {tuple(pred.shape)} and "
                    f"n_ensemble={self.n_ensemble}."
                )

    def _diagnose_nonfinite(
        self,
        main: LossOutput,
        regularization: torch.Tensor | None,
        step_output: StepOutput,
        swapped: list[str],
    ) -> None:
        """Name the variable when a NaN in ``uncorrected`` reached the loss.

        Only scalars are inspected on the normal path; the tensors are scanned
        only after something came out non-finite.
        """
        suspects = list(swapped)
        if regularization is not None:
            suspects += [k for k in step_output.uncorrected if k not in suspects]
        if not suspects:
            return
        checks = [main.per_channel[[main.names.index(k) for k in swapped]]] if swapped else []
        if regularization is not None:
            checks.append(regularization.reshape(1))
        if bool(torch.isfinite(torch.cat([c.detach().reshape(-1) for c in checks])).all()):
            return
        for name in suspects:
            if not bool(torch.isfinite(step_output.uncorrected[name]).all()):
                raise StepOutputLossInputError(
                    f"step_output.uncorrected[{name!r}] contains NaN or inf; the "
                    "pre-correction values must be finite. Check the model output "
                    "before the corrector."
                )
