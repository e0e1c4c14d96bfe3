"""The loss objects: ``LossOutput``, ``WeightedMappingLoss``, ``StepLoss``
and the corrector-aware ``StepOutputLoss``.

Everything here works in **loss-normalized space** (see
:class:`reference.normalizer.StandardNormalizer`). This module imports no
config; configs (``reference.loss_config``, ``reference.corrector.loss``)
build these primitives.
"""

import dataclasses
import math
import numbers
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


class StepOutputLossTypeError(StepOutputLossInputError, TypeError):
    """An input of the wrong kind: not a mapping, not a floating-point torch
    tensor, a non-boolean mask, a step that is not an integer."""


class NonFiniteLossInputError(StepOutputLossInputError):
    """The loss came out NaN or infinite. The message names the variable and
    says where the non-finite values are: the model's output (before or after
    the corrector), the target, or neither (an overflow in the loss)."""


def is_number(value: object) -> bool:
    """A real number (int or float, numpy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _kind(value: object) -> str:
    """``value``'s type in plain words, for error messages."""
    if isinstance(value, str):
        return "a string"
    module = type(value).__module__.split(".")[0]
    prefix = "" if module == "builtins" else module + "."
    return f"a {prefix}{type(value).__name__}"


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
        if isinstance(out_names, str) or not all(isinstance(n, str) for n in out_names):
            raise TypeError(
                f"The loss variables (out_names) are {out_names!r}; pass a list of "
                "variable names (strings), e.g. ['ps', 'q_0']."
            )
        if not out_names:
            raise ValueError(
                "The loss has no variables (out_names is empty); pass at least one "
                "variable name (a step's out_names)."
            )
        repeated = sorted({n for n in out_names if list(out_names).count(n) > 1})
        if repeated:
            raise ValueError(
                f"The loss variables name {repeated} more than once (out_names "
                f"{list(out_names)}); each would count twice in the mean. List each once."
            )
        if not isinstance(weights, Mapping):
            raise TypeError(
                f"Loss weights are {_kind(weights)}; pass a mapping from variable name to "
                "weight, e.g. {'ps': 2.0}."
            )
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
            if not is_number(w):
                raise TypeError(
                    f"Loss weight of {name!r} is {w!r} ({_kind(w)}); it must be a number >= 0."
                )
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
        return self._of_active(values, differences)

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
        return self._of_active(values, minuend)

    def _require_difference_only(self) -> None:
        if not self.loss.difference_only:
            raise ValueError(f"{type(self.loss).__name__} is not a function of differences alone.")

    def _of_active(self, values: Mapping[str, torch.Tensor], inputs: TensorMapping) -> LossOutput:
        """A ``LossOutput`` over all channels whose active channels are exactly
        those in ``values`` (0-d losses); inactive channels hold 0. With no
        active channel the zeros take the dtype and device of ``inputs``'
        tensors (a loss on the GPU stays there), the defaults if it has none."""
        active = tuple(n in values for n in self.names)
        if not values:
            like = next(iter(inputs.values()), None)
            zeros = (
                torch.zeros(len(self.names)) if like is None else like.new_zeros(len(self.names))
            )
            return LossOutput(self.names, zeros, active)
        zero = torch.zeros_like(next(iter(values.values())))
        per_channel = torch.stack([values.get(n, zero) for n in self.names])
        return LossOutput(self.names, per_channel, active)


class StepLoss:
    """The main loss of one step: a ``WeightedMappingLoss`` times the step decay
    ``(1 + c * step) ** -0.5`` (``c`` = ``sqrt_loss_decay_constant``, ``step``
    from 0)."""

    def __init__(self, loss: WeightedMappingLoss, sqrt_loss_decay_constant: float = 0.0):
        if not is_number(sqrt_loss_decay_constant):
            raise TypeError(
                f"sqrt_loss_step_decay_constant is {sqrt_loss_decay_constant!r} "
                f"({_kind(sqrt_loss_decay_constant)}); it must be a number >= 0."
            )
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
        """``(1 + c * step) ** -0.5``; ``step`` is an integer >= 0 (checked by
        ``StepOutputLoss``; a negative step would give a complex or infinite weight)."""
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
        if isinstance(n_ensemble, bool) or not isinstance(n_ensemble, int) or n_ensemble < 1:
            raise ValueError(f"n_ensemble must be a positive integer, got {n_ensemble!r}.")
        if not is_number(regularization_weight):
            raise TypeError(
                f"regularization weight is {regularization_weight!r} "
                f"({_kind(regularization_weight)}); it must be a number > 0."
            )
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
        # the channel losses that check the grid (area-weighted); usually none
        self._grid_losses = [
            loss.loss
            for loss in (step_loss.loss, regularization)
            if loss is not None and loss.loss.needs_grid
        ]

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

        Raises:
            StepOutputLossInputError: (a ``ValueError``) a loss variable
                missing, a shape that does not fit, a negative step, a data
                mask naming a variable that is not a loss variable.
            StepOutputLossTypeError: (also a ``TypeError``) something that is
                not a mapping, not a floating-point torch tensor (numpy arrays,
                integer, bool or complex tensors), on the meta device or on
                another device than the rest, a mask that is not boolean.
            NonFiniteLossInputError: the loss came out NaN or infinite: the
                message names the variable and whether the non-finite values
                are in the model's output before the corrector
                (``uncorrected``), after it (``output``), in the target, or in
                none of them (an overflow, e.g. in float16). With loss type
                ``NaN`` the main loss is NaN by design and is not diagnosed;
                non-finite values at points where ``data_mask`` is False do
                not reach the loss and are not reported.

        Validation is O(1) per variable (keys, shapes); tensors are scanned
        only after an operation failed or the loss came out non-finite.
        """
        self._validate(step_output, target_step)
        _validate_step(step)
        if data_mask is not None:
            self._validate_mask(data_mask, target_step)
        if self._grid_losses:
            self._validate_grid(step_output)
        try:
            main, penalty, swapped = self._compute(step_output, target_step, step, data_mask)
        except StepOutputLossInputError:
            raise
        except Exception as err:
            # something failed inside torch: find the culprit, or re-raise as is
            self._diagnose_failure(step_output, target_step, data_mask, err)
            raise
        regularization = None if penalty is None else self.regularization_weight * penalty.total()
        self._check_result(
            main, penalty, regularization, step_output, target_step, data_mask, swapped
        )
        return StepOutputLossResult(main=main, regularization=regularization)

    def _compute(
        self,
        step_output: StepOutput,
        target_step: TensorMapping,
        step: int,
        data_mask: TensorMapping | None,
    ) -> tuple[LossOutput, LossOutput | None, list[str]]:
        """The main loss, the penalty per channel (unweighted) and the swapped names."""
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
        penalty = None
        if self.regularization is not None:
            # the loss of the corrections output - uncorrected, never stored
            # (output whole: with nothing corrected, the zero penalty still
            # takes the outputs' dtype and device)
            penalty = self.regularization.of_differences_between(output, uncorrected, mask)
        return main, penalty, swapped

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
                stacklevel=4,  # the caller of __call__ (via _compute)
            )

    def _validate(self, step_output: StepOutput, target_step: TensorMapping) -> None:
        if not isinstance(step_output, StepOutput):
            raise StepOutputLossTypeError(
                f"step_output is {_kind(step_output)}; pass a StepOutput(output, uncorrected)."
            )
        output, uncorrected = step_output.output, step_output.uncorrected
        for what, mapping, fix in (
            ("step_output.output", output, "a mapping from variable name to tensor"),
            (
                "step_output.uncorrected",
                uncorrected,
                "a mapping from variable name to tensor ({} when nothing was corrected)",
            ),
            ("target_step", target_step, "a mapping from variable name to tensor"),
        ):
            if not isinstance(mapping, Mapping):
                raise StepOutputLossTypeError(f"{what} is {_kind(mapping)}; pass {fix}.")
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
            try:
                floats = value.dtype.is_floating_point
            except AttributeError:
                floats = False
            if not floats:
                self._diagnose_failure(step_output, target_step, None, None)
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
        n_ensemble = self.n_ensemble
        for name in names:
            pred, tgt = output[name], target_step[name]
            try:  # O(1): a float tensor each (int, bool, complex, numpy fail here)
                floats = pred.dtype.is_floating_point and tgt.dtype.is_floating_point
                shape, target_shape = pred.shape, tgt.shape
            except AttributeError:
                floats = False
            if not floats:
                self._diagnose_failure(step_output, target_step, None, None)
            elif n_ensemble == 1 and shape == target_shape and shape:
                continue  # the common case, no tuple built
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

    def _validate_mask(self, data_mask: TensorMapping, target_step: TensorMapping) -> None:
        """O(1) per mask: a mapping of boolean tensors, keyed by loss variables,
        each broadcastable to the variable's target ``(n_batch, *spatial)``."""
        if not isinstance(data_mask, Mapping):
            raise StepOutputLossTypeError(
                f"data_mask is {_kind(data_mask)}; pass a mapping from loss variable "
                "to a boolean mask (True = valid), or None for no mask."
            )
        names = self.step_loss.names
        for name, mask in data_mask.items():
            if name not in names:
                raise StepOutputLossInputError(
                    f"data_mask has {name!r}, which is not a loss variable {list(names)}; "
                    "a mask applies only to the loss variable it is named after, so this "
                    "one would be ignored. Fix the name or drop the entry."
                )
            if not isinstance(mask, torch.Tensor):
                raise StepOutputLossTypeError(
                    f"data_mask[{name!r}] is {_kind(mask)}; pass a boolean torch tensor "
                    "(True = valid)."
                )
            if mask.dtype != torch.bool:
                raise StepOutputLossTypeError(
                    f"data_mask[{name!r}] has dtype {mask.dtype}; it must be boolean "
                    "(True = valid point): a non-zero float such as 0.5 would count as "
                    f"valid. Pass e.g. data_mask[{name!r}] > 0.5 or .bool() of a 0/1 mask."
                )
            shape = tuple(target_step[name].shape)
            if mask.ndim > len(shape) or any(
                m != 1 and m != t for m, t in zip(reversed(mask.shape), reversed(shape))
            ):
                raise StepOutputLossInputError(
                    f"data_mask[{name!r}] has shape {tuple(mask.shape)}, which does not "
                    f"broadcast to target_step[{name!r}]'s {shape} (n_batch, *spatial); pass "
                    f"a mask of shape {shape} or of the spatial shape {shape[1:]}."
                )

    def _validate_grid(self, step_output: StepOutput) -> None:
        """Area-weighted losses only: every loss variable has the grid of the
        area weights (else they would broadcast silently or fail deep inside)."""
        for name in self.step_loss.names:
            shape = tuple(step_output.output[name].shape)
            for loss in self._grid_losses:
                problem = loss.spatial_problem(shape)
                if problem is not None:
                    raise StepOutputLossInputError(f"step_output.output[{name!r}] {problem}.")

    def _diagnose_failure(
        self,
        step_output: StepOutput,
        target_step: TensorMapping,
        data_mask: TensorMapping | None,
        err: BaseException | None,
    ) -> None:
        """After torch failed (or returned a meta or non-float result): raise a
        clear error naming the tensor that caused it, or return if none did."""
        names = self.step_loss.names
        first = step_output.output[names[0]]
        device = getattr(first, "device", None)
        groups: list[tuple[str, TensorMapping, bool]] = [
            ("step_output.output", {k: step_output.output[k] for k in names}, True),
            ("step_output.uncorrected", step_output.uncorrected, True),
            ("target_step", {k: target_step[k] for k in names}, True),
            ("data_mask", data_mask or {}, False),
        ]
        for where, mapping, values in groups:
            for name, value in mapping.items():
                if not isinstance(value, torch.Tensor):
                    raise StepOutputLossTypeError(
                        f"{where}[{name!r}] is {_kind(value)}; pass a torch tensor (e.g. "
                        "torch.from_numpy(array) or torch.as_tensor(value))."
                    ) from err
                if values and not value.dtype.is_floating_point:
                    raise StepOutputLossTypeError(
                        f"{where}[{name!r}] has dtype {value.dtype}; the loss needs "
                        "floating-point values in physical units: cast it with .float() "
                        "(integer, bool and complex tensors have no loss here)."
                    ) from err
                if value.is_meta:
                    raise StepOutputLossTypeError(
                        f"{where}[{name!r}] is on the meta device (a shape without values); "
                        "pass tensors that hold values (materialize the module, e.g. "
                        "module.to_empty(device=...) and load its weights)."
                    ) from err
                if device is not None and value.device != device:
                    raise StepOutputLossTypeError(
                        f"{where}[{name!r}] is on {value.device} but step_output.output"
                        f"[{names[0]!r}] is on {device}; put every tensor on one device "
                        f"(e.g. .to({str(device)!r}))."
                    ) from err
        for loss in (self.step_loss.loss.loss, *self._grid_losses):
            for name in names:
                problem = loss.spatial_problem(tuple(step_output.output[name].shape))
                if problem is not None:
                    raise StepOutputLossInputError(
                        f"step_output.output[{name!r}] {problem}."
                    ) from err

    def _check_result(
        self,
        main: LossOutput,
        penalty: LossOutput | None,
        regularization: torch.Tensor | None,
        step_output: StepOutput,
        target_step: TensorMapping,
        data_mask: TensorMapping | None,
        swapped: list[str],
    ) -> None:
        """One scalar check per call; the tensors are scanned only when the
        loss came out non-finite (or meta, or not floating-point)."""
        per_channel = main.per_channel
        if per_channel.is_meta or not per_channel.dtype.is_floating_point:
            self._diagnose_failure(step_output, target_step, data_mask, None)
            return
        check_main = not self.step_loss.loss.loss.is_nan  # type NaN is NaN by design
        if check_main:
            value = per_channel.detach().sum()
            if regularization is not None:
                value = value + regularization.detach()
        elif regularization is not None:
            value = regularization.detach()
        else:
            return
        if math.isfinite(float(value)):
            return
        if check_main:
            finite = torch.isfinite(per_channel.detach()).tolist()
            for name, ok, loss in zip(main.names, finite, per_channel.tolist()):
                if not ok:
                    self._raise_nonfinite_main(
                        name, loss, step_output, target_step, data_mask, swapped
                    )
        if penalty is not None and regularization is not None:
            self._raise_nonfinite_penalty(penalty, regularization, step_output, data_mask)
        raise NonFiniteLossInputError(  # the sum of finite channel losses overflowed
            f"The loss is {float(value)} although every channel's loss is finite: their "
            f"sum overflowed in {per_channel.dtype}. Compute the loss in float32 (pass "
            "tensors converted with .float())."
        )

    def _nonfinite_points(
        self, values: torch.Tensor, mask: torch.Tensor | None, is_target: bool
    ) -> int:
        """How many unmasked points of ``values`` are NaN or infinite."""
        unfolded = values.unsqueeze(1) if is_target else values.unflatten(0, (-1, self.n_ensemble))
        bad = ~torch.isfinite(unfolded.detach())
        if mask is not None:  # as _unfold_mask does
            mask = mask.unsqueeze(1) if mask.ndim == values.ndim else mask
            bad = bad & mask.to(device=bad.device)
        return int(bad.sum())

    def _overflow_message(self, what: str, value: float, dtype: torch.dtype) -> str:
        hint = (
            " (or the target's global mean is zero: global_mean_type LpLoss divides by it)"
            if self.step_loss.loss.loss.uses_global_mean
            else ""
        )
        return (
            f"{what} is {value} although its inputs are finite: the computation "
            f"overflowed in {dtype} (largest finite value {torch.finfo(dtype).max:g}){hint}. "
            "Compute the loss in float32: pass tensors converted with .float()."
        )

    def _raise_nonfinite_main(
        self,
        name: str,
        value: float,
        step_output: StepOutput,
        target_step: TensorMapping,
        data_mask: TensorMapping | None,
        swapped: list[str],
    ) -> None:
        mask = None if data_mask is None else data_mask.get(name)
        output = step_output.output[name]
        uncorrected = step_output.uncorrected.get(name)
        total = output.numel()
        if name in swapped and uncorrected is not None:
            n = self._nonfinite_points(uncorrected, mask, is_target=False)
            if n:
                raise NonFiniteLossInputError(
                    f"step_output.uncorrected[{name!r}] contains NaN or inf ({n} of {total} "
                    "points): the model's output before the corrector is non-finite, and "
                    "pre-corrector optimization trains on it. Check the model: its inputs "
                    "(e.g. the initial condition), weights and learning rate."
                )
        else:
            n = self._nonfinite_points(output, mask, is_target=False)
            if n:
                where = f"step_output.output[{name!r}] contains NaN or inf ({n} of {total} points)"
                if uncorrected is None:
                    cause = "the model's output is non-finite"
                elif self._nonfinite_points(uncorrected, mask, is_target=False):
                    cause = (
                        f"so does uncorrected[{name!r}]: the model's output before the "
                        "corrector is non-finite"
                    )
                else:
                    raise NonFiniteLossInputError(
                        f"{where}, but uncorrected[{name!r}] is finite: the corrector "
                        "produced them. Check the corrector (e.g. a division by a zero "
                        "global mean)."
                    )
                raise NonFiniteLossInputError(
                    f"{where}; {cause}. Check the model: its inputs (e.g. the initial "
                    "condition), weights and learning rate."
                )
        target = target_step[name]
        n = self._nonfinite_points(target, mask, is_target=True)
        if n:
            raise NonFiniteLossInputError(
                f"target_step[{name!r}] contains NaN or inf ({n} of {target.numel()} "
                "points): the target data are non-finite there. Fill them, or mask them "
                f"out with data_mask[{name!r}] (a boolean mask, False = ignore the point)."
            )
        raise NonFiniteLossInputError(
            self._overflow_message(f"The loss of {name!r}", value, output.dtype)
        )

    def _raise_nonfinite_penalty(
        self,
        penalty: LossOutput,
        regularization: torch.Tensor,
        step_output: StepOutput,
        data_mask: TensorMapping | None,
    ) -> None:
        finite = torch.isfinite(penalty.per_channel.detach()).tolist()
        for name, ok in zip(penalty.names, finite):
            if ok or name not in step_output.uncorrected:
                continue
            mask = None if data_mask is None else data_mask.get(name)
            uncorrected = step_output.uncorrected[name]
            n = self._nonfinite_points(uncorrected, mask, is_target=False)
            if n:
                raise NonFiniteLossInputError(
                    f"step_output.uncorrected[{name!r}] contains NaN or inf ({n} of "
                    f"{uncorrected.numel()} points): the model's output before the "
                    "corrector is non-finite, and the correction penalty uses it. Check "
                    "the model: its inputs (e.g. the initial condition), weights and "
                    "learning rate."
                )
            if self._nonfinite_points(step_output.output[name], mask, is_target=False):
                raise NonFiniteLossInputError(
                    f"step_output.output[{name!r}] contains NaN or inf but "
                    f"uncorrected[{name!r}] is finite: the corrector produced them. Check "
                    "the corrector (e.g. a division by a zero global mean)."
                )
            raise NonFiniteLossInputError(
                self._overflow_message(
                    f"The correction penalty of {name!r}",
                    float(penalty.per_channel[penalty.names.index(name)]),
                    uncorrected.dtype,
                )
            )
        raise NonFiniteLossInputError(
            self._overflow_message(
                "The correction penalty", float(regularization), penalty.per_channel.dtype
            )
        )


def _validate_step(step: object) -> None:
    """The step index: an integer >= 0 (a negative one makes the decay weight
    ``(1 + c * step) ** -0.5`` complex or a division by zero)."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise StepOutputLossTypeError(
            f"step is {step!r} ({_kind(step)}); it must be an integer >= 0, the index "
            "of the step from 0."
        )
    if step < 0:
        raise StepOutputLossInputError(
            f"step is {step}; it must be >= 0, the index of the step from 0 (the step "
            "decay (1 + c * step) ** -0.5 is undefined for negative steps)."
        )
