"""The train stepper: rolls a step out over a batch and trains on it.

Public API
----------
::

    @dataclass
    class TrainStepperConfig:
        loss: StepLossConfig = StepLossConfig()
        n_ensemble: int = 1
        corrector_loss: CorrectorLossConfig | None = None
        optimization: OptimizationConfig = OptimizationConfig()  # incl. use_gradient_accumulation

        def build(self, step: StepABC, normalizer: StandardNormalizer,
                  area_weights: torch.Tensor | None = None,
                  distributed: Distributed | None = None) -> TrainStepper
        @classmethod
        def from_dict(cls, data: Mapping) -> TrainStepperConfig   # dacite, strict

    class TrainStepper:
        config, step, normalizer (the loss normalizer), loss (the one
        StepOutputLoss), optimization, distributed
        train_on_batch(data: TensorMapping, data_mask: TensorMapping | None = None) -> TrainOutput
        predict(data: TensorMapping) -> list[StepOutput]   # plain: uncorrected detached
        get_aggregator() -> TrainAggregator
        get_state() -> dict;  TrainStepper.from_state(state, step, area_weights=None)

``train_on_batch(data)``: ``data[name]`` in physical units with shape
``(n_batch, n_time, *spatial)`` for every name of ``step.in_names`` and
``step.out_names``; time 0 is the initial condition and times
``1..n_time-1`` are the targets of ``n_forward_steps = n_time - 1`` steps.
Forcings (``step.forcing_names``) are read at the step's input time. The
initial condition and forcings are repeated ``n_ensemble`` times (members of
one sample adjacent). Each step's *corrected* output feeds the next step.

It returns a :class:`TrainOutput` whose ``metrics`` (detached 0-d tensors) are

- ``loss``: the optimized loss, ``sum_i result_i.total()``;
- ``loss_step_{i}``: ``result_i.main.total()`` (the step-decayed main loss);
- ``loss/{name}``: per-channel main loss summed over steps (active channels);
- ``corrector_regularization_step_{i}``: ``result_i.regularization`` and
  ``corrector_regularization``: their sum over steps (the penalty's share of
  ``loss``), only when regularization is configured. So
  ``loss == sum_i loss_step_{i} + corrector_regularization``.

``gen_data`` (corrected predictions), ``target_data`` and ``step_outputs``
(each step's ``StepOutput``, detached) let callers check the rollout. After
the call each parameter's ``.grad`` holds this batch's gradient.
:class:`reference.aggregator.TrainAggregator` averages the metrics over an
epoch (``corrector_regularization`` included); :mod:`reference.trainer`
logs batch metrics as ``batch_<name>``.

Data parallelism (:mod:`reference.distributed`): built inside an initialized
``torch.distributed`` process group (or given a ``Distributed``), each rank
passes ``train_on_batch`` its own share of the global batch. The step runs
inside ``DistributedDataParallel``; every metric is reduced to its
whole-batch value (the sample-weighted mean over ranks: every metric is a
mean over samples), identical on every rank; ``TrainOutput.n_batch`` is the
global batch's samples; gradients equal one process's on the whole batch
(each rank's loss is scaled by ``n_local * world_size / n_total`` for DDP's
mean); with gradient accumulation all but the last backward run under
``no_sync`` (one gradient all-reduce per optimizer step); warnings are shown
on rank 0 only. ``gen_data``, ``target_data`` and ``step_outputs`` stay this
rank's share.

Loss integration (the design of upstream #1273): the stepper always builds
**one** ``StepOutputLoss`` with ``build_step_output_loss`` (a pass-through to
``StepLoss`` when ``corrector_loss`` is None), calls it at one call site,
accumulates ``result.total()`` once per optimized step, and asks the step for
``detach_uncorrected = not loss.needs_uncorrected_grad``.
"""

import dataclasses
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dacite
import torch

from reference import config_errors
from reference.aggregator import TrainAggregator
from reference.corrector.loss import CorrectorLossConfig, build_step_output_loss
from reference.distributed import Distributed
from reference.loss import NonFiniteLossInputError, UnmatchedExclusionWarning
from reference.loss_config import StepLossConfig
from reference.normalizer import StandardNormalizer
from reference.optimization import OptimizationConfig
from reference.step import PASS_THROUGH, StepABC, StepModuleError
from reference.step_output import StepOutput, is_detached
from reference.typing_ import TensorDict, TensorMapping


class BatchError(ValueError):
    """A training batch that does not fit the step; the message names the
    variable (or the shape) and the fix."""


class EmptyUncorrectedWarning(UserWarning):
    """A corrector ran but returned no pre-correction values."""


class AttachedGraphWarning(UserWarning):
    """The step detached ``uncorrected`` although asked not to."""


ONCE_WARNINGS: tuple[type[Warning], ...] = (
    EmptyUncorrectedWarning,
    AttachedGraphWarning,
    UnmatchedExclusionWarning,
)
"""The warn-once warnings of training: about the configuration, which every
rank shares, so under data parallelism only rank 0 shows them."""


def _to_float(value: Any) -> Any:
    # YAML writes 1 for 1.0; accept ints (not bools) where a float is expected.
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


DACITE_CONFIG = dacite.Config(strict=True, type_hooks={float: _to_float})


@dataclasses.dataclass
class TrainStepperConfig:
    """Configuration of a train stepper.

    Args:
        loss: the main loss (``StepLossConfig``).
        n_ensemble: ensemble members per sample, >= 1.
        corrector_loss: the corrector training features, or None (the
            default: train on the corrected output exactly as before the
            features existed). Needs a step whose ``corrector_enabled`` is True.
        optimization: optimizer and ``use_gradient_accumulation``.
    """

    loss: StepLossConfig = dataclasses.field(default_factory=StepLossConfig)
    n_ensemble: int = 1
    corrector_loss: CorrectorLossConfig | None = None
    optimization: OptimizationConfig = dataclasses.field(default_factory=OptimizationConfig)

    def __post_init__(self) -> None:
        if isinstance(self.n_ensemble, bool) or not (
            isinstance(self.n_ensemble, int) and self.n_ensemble >= 1
        ):
            raise ValueError(f"n_ensemble is {self.n_ensemble!r}; it must be an integer >= 1.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainStepperConfig":
        """From plain data (e.g. parsed YAML); unknown keys are errors.

        Raises:
            ConfigTypeError: (a ``dacite.WrongTypeError`` and a ``TypeError``)
                a field of the wrong type; the message names the field path
                (``corrector_loss.precorrector_optimization.exclude_names_and_prefixes``),
                the expected type in plain words ("a list of strings") and the
                value given.
            dacite.UnexpectedDataError: an unknown key.
        """
        return config_errors.from_dict(cls, data, DACITE_CONFIG)

    def build(
        self,
        step: StepABC,
        normalizer: StandardNormalizer,
        area_weights: torch.Tensor | None = None,
        distributed: Distributed | None = None,
    ) -> "TrainStepper":
        """The train stepper.

        Args:
            step: the step to train; its ``out_names`` are the loss variables.
            normalizer: the *loss* normalizer (defines loss-normalized space);
                must cover ``step.out_names``.
            area_weights: ``(n_lat, n_lon)`` or ``(n_lat, 1)``, for area-weighted
                losses.
            distributed: the data-parallel context; default
                ``Distributed.current()`` (the default process group if one
                is initialized, else one process). Under data parallelism
                every rank must build its stepper (DDP's build is a collective).

        Raises:
            ValueError: ``corrector_loss`` is set but ``step.corrector_enabled``
                is False.
        """
        return TrainStepper(self, step, normalizer, area_weights, distributed)


@dataclasses.dataclass
class TrainOutput:
    """What ``train_on_batch`` returns (everything detached).

    Attributes:
        metrics: see the module docstring; 0-d tensors.
        gen_data: corrected predictions, physical units,
            ``(n_batch * n_ensemble, n_forward_steps, *spatial)``.
        target_data: targets, physical units, ``(n_batch, n_forward_steps, *spatial)``.
        step_outputs: each step's ``StepOutput`` (output and uncorrected), detached.
        n_batch: samples in the batch (the aggregator's weight); under data
            parallelism, in the *global* batch (``metrics`` are whole-batch
            values, while ``gen_data``, ``target_data`` and ``step_outputs``
            are this rank's share).
    """

    metrics: dict[str, torch.Tensor]
    gen_data: TensorDict
    target_data: TensorDict
    step_outputs: list[StepOutput]
    n_batch: int


def _detached(step_output: StepOutput) -> StepOutput:
    return StepOutput(
        output={k: v.detach() for k, v in step_output.output.items()},
        uncorrected={k: v.detach() for k, v in step_output.uncorrected.items()},
    )


class TrainStepper:
    """Trains a step with one ``StepOutputLoss``; build with ``TrainStepperConfig.build``."""

    def __init__(
        self,
        config: TrainStepperConfig,
        step: StepABC,
        normalizer: StandardNormalizer,
        area_weights: torch.Tensor | None = None,
        distributed: Distributed | None = None,
    ):
        if config.corrector_loss is not None and not step.corrector_enabled:
            raise ValueError(
                f"corrector_loss is configured but the step ({type(step).__name__}) has no "
                "corrector (corrector_enabled is False), so there is nothing for the "
                "corrector features to act on. Configure a corrector on the step, or set "
                "corrector_loss to null."
            )
        self.config = config
        self.step = step
        self.normalizer = normalizer
        self.area_weights = area_weights
        step_loss = config.loss.build(step.out_names, normalizer, area_weights)
        self.loss = build_step_output_loss(
            config.corrector_loss, step_loss, config.n_ensemble, area_weights
        )
        self.optimization = config.optimization.build(step.parameters())
        self._detach_uncorrected = not self.loss.needs_uncorrected_grad
        self.distributed = distributed if distributed is not None else Distributed.current()
        # DDP around the step's modules (None on one process); a collective
        self._ddp = self.distributed.wrap(step)
        self._warned_empty = False
        self._warned_detached = False

    @property
    def n_ensemble(self) -> int:
        return self.config.n_ensemble

    def get_aggregator(self) -> TrainAggregator:
        """A fresh epoch aggregator of ``TrainOutput.metrics``."""
        return TrainAggregator()

    def _validate_batch(self, data: TensorMapping) -> tuple[int, int]:
        if not isinstance(data, Mapping):
            raise BatchError(
                f"The batch is a {type(data).__name__}; pass a mapping from variable name "
                "to a tensor of shape (n_batch, n_time, *spatial)."
            )
        names = list(dict.fromkeys([*self.step.in_names, *self.step.out_names]))
        missing = [n for n in names if n not in data]
        if missing:
            raise BatchError(
                f"The batch lacks {missing}; it needs every input and output variable "
                f"of the step ({names})."
            )
        for name in names:
            value = data[name]
            if not isinstance(value, torch.Tensor):
                raise BatchError(
                    f"batch[{name!r}] is a {type(value).__module__}.{type(value).__name__}; "
                    "pass a torch tensor (e.g. torch.from_numpy(array))."
                )
            if not value.dtype.is_floating_point:
                raise BatchError(
                    f"batch[{name!r}] has dtype {value.dtype}; pass floating-point values in "
                    "physical units (cast with .float())."
                )
        shape = tuple(data[names[0]].shape)
        for name in names:
            if tuple(data[name].shape) != shape:
                raise BatchError(
                    f"batch[{name!r}] has shape {tuple(data[name].shape)} but "
                    f"batch[{names[0]!r}] has {shape}; all variables must share "
                    "(n_batch, n_time, *spatial)."
                )
        weights = self.area_weights
        if (
            isinstance(weights, torch.Tensor)
            and weights.ndim == 2
            and len(shape) >= 2
            and (len(shape) < 4 or shape[-2] != weights.shape[0])
        ):
            raise BatchError(
                f"Batch tensors have shape {shape}, which does not end in the grid of the "
                f"area weights ({weights.shape[0]} latitudes); the batch needs "
                "(n_batch, n_time, n_lat, n_lon). If it lacks the time dimension, add "
                "one: time 0 is the initial condition, times 1.. the targets."
            )
        if len(shape) < 2 or shape[1] < 2:
            raise BatchError(
                f"Batch tensors have shape {shape}; they need (n_batch, n_time, *spatial) "
                "with n_time >= 2 (an initial condition and at least one target)."
            )
        return shape[0], shape[1] - 1

    def _next_step(self, rollout: Iterator[StepOutput], data: TensorMapping, i: int) -> StepOutput:
        """Step ``i`` of ``rollout``; a failure of the step is reworded to say
        what was passed (out-of-memory and the like pass through unchanged)."""
        try:
            return next(rollout)
        except PASS_THROUGH:
            raise
        except (RuntimeError, StepModuleError) as err:  # say what was passed
            if isinstance(err, StepModuleError) and not err.failed:
                raise  # the module's output channels: clear as it is
            raise self._step_failure(data, i, err) from err

    def _step_failure(self, data: TensorMapping, i: int, err: Exception) -> BatchError:
        """The error for a step that failed inside torch at step ``i``."""
        shape = tuple(data[self.step.in_names[0]].shape)
        return BatchError(
            f"Step {i} failed ({type(err).__name__}: {err}). Its inputs were read from "
            f"batch tensors of shape {shape} as (n_batch, n_time, *spatial) = "
            f"({shape[0]}, {shape[1]}, *{shape[2:]}). If the batch has no time "
            "dimension, add one: (n_batch, n_time, n_lat, n_lon), time 0 the initial "
            "condition. Otherwise check that the step's module takes "
            f"(n_samples, {len(self.step.in_names)} channels, *spatial) for in_names "
            f"{self.step.in_names}."
        )

    def _diagnose_nonfinite_batch(
        self, data: TensorMapping, i: int, err: NonFiniteLossInputError
    ) -> None:
        """After step ``i``'s loss came out non-finite: raise naming the batch
        variable if the step's input from the batch (the initial condition at
        step 0, the forcings) was already non-finite. Scans only on failure."""
        step = self.step
        inputs = [(n, 0, "the initial condition") for n in step.prognostic_names if i == 0]
        inputs += [(n, i, f"a forcing at time {i}") for n in step.forcing_names]
        for name, time, role in inputs:
            values = data[name][:, time]
            n_bad = int((~torch.isfinite(values)).sum())
            if n_bad:
                raise NonFiniteLossInputError(
                    f"batch[{name!r}][:, {time}] ({role}) contains NaN or inf ({n_bad} of "
                    f"{values.numel()} points), so step {i}'s output is non-finite "
                    f"(the loss reported: {err}). Fill the non-finite input values: a "
                    "data_mask masks only the loss, not the step's inputs."
                ) from err

    def _check_step_output(self, step_output: StepOutput) -> None:
        if not self.step.corrector_enabled or self._detach_uncorrected:
            return
        if not step_output.uncorrected:
            if not self._warned_empty:
                self._warned_empty = True
                warnings.warn(
                    f"The step's corrector is enabled but {type(self.step).__name__}.step "
                    "returned an empty `uncorrected`, so corrector_loss has no effect. "
                    "Return the pre-correction values of the modified variables, or set "
                    "corrector_loss to null.",
                    EmptyUncorrectedWarning,
                    stacklevel=3,
                )
        elif (
            not self._warned_detached
            and is_detached(step_output.uncorrected)
            and not is_detached(step_output.output)
        ):
            self._warned_detached = True
            warnings.warn(
                f"{type(self.step).__name__}.step returned `uncorrected` detached although "
                "called with detach_uncorrected=False. If the pre-correction values depend "
                "on trainable parameters, gradients through the correction are then wrong: "
                "detach only when detach_uncorrected is True.",
                AttachedGraphWarning,
                stacklevel=3,
            )

    def _rollout(
        self,
        data: TensorMapping,
        n_forward_steps: int,
        detach_uncorrected: bool,
        prepare_state: Callable[[TensorMapping], TensorDict] = dict,
        call_step: Callable[..., StepOutput] | None = None,
    ) -> Iterator[StepOutput]:
        """The predict generator: yields each step's ``StepOutput``.

        The initial condition and forcings are repeated ``n_ensemble`` times;
        each step's corrected prognostic outputs, passed through
        ``prepare_state``, are the next step's input. ``call_step`` (default
        ``step.step``) runs one step; training passes the DDP module.
        """
        step = self.step
        call = step.step if call_step is None else call_step

        def members(x: torch.Tensor) -> torch.Tensor:
            return x.repeat_interleave(self.n_ensemble, dim=0)

        state: TensorDict = {n: members(data[n][:, 0]) for n in step.prognostic_names}
        for i in range(n_forward_steps):
            input = {**state, **{n: members(data[n][:, i]) for n in step.forcing_names}}
            step_output = call(input, detach_uncorrected=detach_uncorrected)
            yield step_output
            state = prepare_state({n: step_output.output[n] for n in step.prognostic_names})

    def predict(self, data: TensorMapping) -> list[StepOutput]:
        """Plain prediction: a rollout with ``detach_uncorrected=True``.

        Args:
            data: as for ``train_on_batch`` (targets are not used).

        Returns:
            Each step's ``StepOutput`` as the step returned it (``uncorrected``
            detached; wrap in ``torch.no_grad()`` for inference).
        """
        _, n_forward_steps = self._validate_batch(data)
        rollout = self._rollout(data, n_forward_steps, detach_uncorrected=True)
        outputs = []
        for i in range(n_forward_steps):
            outputs.append(self._next_step(rollout, data, i))
        return outputs

    def train_on_batch(
        self, data: TensorMapping, data_mask: TensorMapping | None = None
    ) -> TrainOutput:
        """Roll out, take the loss of every step, and step the optimizer.

        Args:
            data: physical units, ``(n_batch, n_time, *spatial)``; see the
                module docstring.
            data_mask: optional per-variable masks (True = valid),
                broadcastable to ``(n_batch, *spatial)``.

        Raises:
            BatchError: a batch that does not fit the step (a missing
                variable, a non-float or non-tensor value, mismatched shapes,
                no time dimension, or the step failing inside torch on it).
            StepModuleError: the step's module returned the wrong channels.
            NonFiniteLossInputError: a step's loss came out NaN or infinite;
                names the batch variable when the initial condition or a
                forcing was already non-finite, else what the loss found.
            StepOutputLossInputError: other bad input to the loss (e.g. the
                data mask), see ``StepOutputLoss.__call__``.
        """
        n_local, n_forward_steps = self._validate_batch(data)
        distributed = self.distributed
        sizes = distributed.batch_sizes(n_local, n_forward_steps)
        # DDP averages gradients over ranks; this makes them the whole batch's
        scale = distributed.gradient_scale(sizes)
        optimization = self.optimization
        self.step.modules.train()
        optimization.zero_grad()
        metrics: dict[str, torch.Tensor] = {}
        channel_sums: dict[str, torch.Tensor] = {}
        regularization_sum: torch.Tensor | None = None
        loss_sum: torch.Tensor | None = None
        step_outputs: list[StepOutput] = []
        rollout = self._rollout(
            data,
            n_forward_steps,
            detach_uncorrected=self._detach_uncorrected,
            prepare_state=optimization.detach_if_using_gradient_accumulation,
            call_step=self._ddp,
        )
        with distributed.root_warnings_only(ONCE_WARNINGS):
            for i in range(n_forward_steps):
                # accumulating, each step back-propagates at once: gradients
                # are all-reduced at the batch's last backward only
                sync = not optimization.use_gradient_accumulation or i == n_forward_steps - 1
                with distributed.gradient_sync(self._ddp, sync):
                    step_output = self._next_step(rollout, data, i)
                    self._check_step_output(step_output)
                    target = {n: data[n][:, i + 1] for n in self.step.out_names}
                    try:
                        result = self.loss(step_output, target, step=i, data_mask=data_mask)
                    except NonFiniteLossInputError as err:
                        self._diagnose_nonfinite_batch(data, i, err)
                        raise
                    total = result.total()
                    optimization.accumulate_loss(total if scale == 1.0 else total * scale)
                loss_sum = total.detach() if loss_sum is None else loss_sum + total.detach()
                metrics[f"loss_step_{i}"] = result.main.total().detach()
                for name, value in result.main.channel_losses().items():
                    value = value.detach()
                    channel_sums[name] = (
                        channel_sums[name] + value if name in channel_sums else value
                    )
                if result.regularization is not None:
                    reg = result.regularization.detach()
                    metrics[f"corrector_regularization_step_{i}"] = reg
                    regularization_sum = (
                        reg if regularization_sum is None else regularization_sum + reg
                    )
                step_outputs.append(_detached(step_output))
        optimization.step_weights()
        assert loss_sum is not None  # n_forward_steps >= 1
        metrics["loss"] = loss_sum
        if regularization_sum is not None:
            metrics["corrector_regularization"] = regularization_sum
        metrics.update({f"loss/{n}": v for n, v in channel_sums.items()})
        # every metric is a mean over samples: the whole batch's value
        metrics = distributed.reduce_sample_means(metrics, sizes)
        out_names = self.step.out_names
        gen = {n: torch.stack([s.output[n] for s in step_outputs], 1) for n in out_names}
        target_data = {n: data[n][:, 1:] for n in out_names}
        return TrainOutput(metrics, gen, target_data, step_outputs, sizes.total)

    def get_state(self) -> dict[str, Any]:
        """Config (plain data), loss normalizer, step weights and optimizer state."""
        return {
            "config": dataclasses.asdict(self.config),
            "normalizer": self.normalizer.get_state(),
            "step": self.step.get_state(),
            "optimization": self.optimization.get_state(),
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        step: StepABC,
        area_weights: torch.Tensor | None = None,
    ) -> "TrainStepper":
        """Rebuild from ``get_state()`` output (or an older checkpoint).

        ``step`` must have the architecture the weights were saved from; its
        weights are overwritten. The config is loaded strictly, so a config
        written before a field existed gets that field's default (e.g.
        ``corrector_loss`` None). A missing ``optimization`` entry leaves a
        fresh optimizer.
        """
        config = TrainStepperConfig.from_dict(state["config"])
        step.load_state(state["step"])
        stepper = config.build(
            step, StandardNormalizer.from_state(state["normalizer"]), area_weights
        )
        if "optimization" in state:
            stepper.optimization.load_state(state["optimization"])
        return stepper
