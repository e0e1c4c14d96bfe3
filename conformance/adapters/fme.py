"""The adapter for the released upstream implementation: ``fme`` 2026.10.0
(ai2cm/ace on PyPI), ``fme.core.loss.StepOutputLoss``.

Run the suite against it with::

    python -m conformance --impl conformance.adapters.fme:make_adapter

(``tox -e fme`` installs fme and does this, writing the report in ``docs/fme/``).

This is the only module of the project that imports ``fme``; importing the
``conformance`` package does not import it. ``make_adapter()`` raises a clear
``ImportError`` when fme is not installed.

How the neutral case specs of ``conformance/adapter.py`` are translated
(fme's API read from its installed source):

- **Tensors.** fme's loss takes the corrected prediction and the correction
  **deltas** (``corrected - pre-corrector``); the adapter computes
  ``deltas[k] = output[k] - uncorrected[k]`` on the suite's tensors, keeping
  the autograd graph. It then calls fme's ``StepOutputLoss`` exactly as fme's
  ``TrainStepper._accumulate_step_loss`` does: prediction and deltas unfolded
  to ``(n_batch, n_ensemble, *spatial)`` with ``fme.core.tensors.unfold_ensemble_dim``,
  the target given an ensemble dim of 1 with ``add_ensemble_dim``, and the
  stepper's ``CHANNEL_DIM = -3``. These are views: the suite's tensors
  themselves reach fme.
- **Main loss.** ``MainLossSpec`` maps 1:1 onto ``fme.core.loss.StepLossConfig``
  (``type``, ``weights``, ``sqrt_loss_step_decay_constant``), built with
  ``LatLonOperations(area_weights)`` and a ``StandardNormalizer`` of the
  case's stats (the loss normalizer defines loss-normalized space in both).
- **Pre-corrector optimization.** fme selects *opt-in*
  (``PreCorrectorOptimizationConfig.names_and_prefixes``); the adapter passes
  the suite's opt-in translation ``PreCorrectorSpec.select_names``.
- **Regularization.** fme penalizes ``norm: "L1" | "L2"`` of the normalized
  deltas of an opt-in selection; our spec penalizes *every* corrected
  channel, so the selection is the case's corrected variables
  (``LossSpec.corrected_names``), ``MSE`` -> ``"L2"`` (fme's L2 is the mean
  of squares, no root), ``L1`` -> ``"L1"``, same ``weight``. fme reports the
  penalty unweighted with its weight beside it; the adapter reports
  ``weight * penalty.total()``.
- **Empty selections.** fme rejects an empty ``names_and_prefixes`` ("a
  contradiction, not a no-op"): in fme, "swap nothing" is said by leaving
  ``precorrector_optimization`` out. So an opt-in selection that is empty
  because every corrected variable is excluded becomes
  ``precorrector_optimization=None`` (the same main loss). When the case's
  corrector modifies nothing (``corrected_names`` empty) the features stay
  configured and select the loss variables: that is what fme's trainer sees
  in an epoch whose corrector is disabled (a configured selection, empty
  deltas, which fme never resolves a selection against).
- ``needs_uncorrected_grad``: fme has no such flag (its step never detaches
  the deltas, so nothing decides detaching). The adapter does not make one
  up: it declares the deviation ``NEEDS-1`` and its property raises.
- **Training hook.** The suite step is registered as an fme step type
  (``StepSelector``) whose ``step()`` returns fme's ``StepOutput`` (corrected
  output + deltas); fme's own ``StepperConfig.get_stepper`` and
  ``TrainStepper`` train it, with fme's ``Optimization`` (Adam with lr 0, so
  the suite step's parameters stay put; ``use_gradient_accumulation`` from
  the spec). Metrics are fme's, as
  fme logs them; ``TrainOutcome.step_totals`` are fme's ``loss_step_{i}``,
  which fme defines as the step's optimized total
  (``ace/stepper/single_module.py``, ``_accumulate_step_loss``:
  ``metrics[f"loss_step_{step}"] = step_loss.total()``).
- **Plain prediction** reports fme's own deltas (``PredictedStep(deltas=...)``
  from ``Stepper.predict``'s ``step_diagnostics.delta``), never a derived
  ``output - delta``.
- **Data parallel** (``train_on_batch_distributed``): fme's own
  ``fme.core.distributed``: the suite's process group is taken over by a
  ``TorchDistributed`` backend (it joins an initialized group, reading
  ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``) swapped into fme's singleton with
  ``Distributed.replace_backend`` and entered with ``Distributed.context()``,
  as fme's training entry points do (the singleton itself is created with
  fme's documented ``FME_DISTRIBUTED_BACKEND=none``; the backend's
  ``shutdown`` leaves the group to the suite, where fme's would destroy it);
  the suite step is wrapped with
  ``dist.wrap_module`` (``DistributedDataParallel``) as fme's own
  ``SingleModuleStep`` does, and the metrics are reduced with
  ``dist.reduce_mean`` as fme's trainer logs ``batch_<metric>``.

Capabilities not declared, and why (see ``docs/fme/ANALYSIS.md``): the
#1273 designs fme replaces are declared as ``deviations`` (opt-in selection,
raising on unmatched entries, an ``L1``/``L2`` penalty with no loss type to
configure or reject, no ``needs_uncorrected_grad``); bad-input-validation and
data-mask are optional extras fme does not claim (its ``data_mask`` is a
per-sample ``[batch]`` presence mask that renormalizes, not a pointwise
validity mask whose points contribute 0).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any

import torch

from conformance.adapter import (
    AdapterBase,
    Batch,
    Capability,
    LossResult,
    LossSpec,
    PreCorrectorSpec,
    PredictedStep,
    RegularizationSpec,
    StepperSpec,
    SuiteStep,
    TensorMapping,
    TrainOutcome,
)

FME_VERSION = "2026.10.0"
"""The release this adapter was written and checked against."""

CHANNEL_DIM = -3
"""fme's ``TrainStepper.CHANNEL_DIM``: channels are packed before ``(lat, lon)``."""

NORM_OF_LOSS_TYPE: Mapping[str, str] = {"MSE": "L2", "L1": "L1"}
"""Our regularization loss types -> fme's ``CorrectorRegularizationConfig.norm``."""


def _import_fme() -> Any:
    try:
        import fme  # type: ignore[import-not-found]
    except ImportError as err:  # pragma: no cover - exercised without fme
        raise ImportError(
            "conformance.adapters.fme needs the released fme package: "
            f"pip install torch==2.13.0 fme=={FME_VERSION} (or run `tox -e fme`)."
        ) from err
    return fme


def to_deltas(output: TensorMapping, uncorrected: TensorMapping) -> dict[str, torch.Tensor]:
    """fme's correction deltas, ``output[k] - uncorrected[k]`` (physical units,
    on the autograd graph), for every key of ``uncorrected``.

    Bad input is not judged here: where the difference is undefined (no
    ``output[k]``, or a shape that differs from ``uncorrected[k]``), fme gets a
    delta that carries the same defect -- key ``k`` with the shape of
    ``uncorrected[k]`` -- so what happens next is fme's behaviour, not the
    adapter's (no broadcasting, no error raised by the conversion itself).
    """
    deltas = {}
    for k, u in uncorrected.items():
        o = output.get(k)
        if o is None or o.shape != u.shape:
            deltas[k] = torch.zeros_like(u)
        else:
            deltas[k] = o - u
    return deltas


class FmeLoss:
    """fme's ``StepOutputLoss`` behind the suite's ``LossUnderTest``.

    Inputs are in physical units: ``output`` / ``uncorrected`` of shape
    ``(n_batch * n_ensemble, n_lat, n_lon)``, targets ``(n_batch, n_lat, n_lon)``.
    Results are in loss-normalized units.
    """

    def __init__(self, loss: Any, n_ensemble: int, regularization: RegularizationSpec | None):
        self.loss = loss
        self.n_ensemble = n_ensemble
        self.regularization = regularization

    @property
    def needs_uncorrected_grad(self) -> bool:
        raise NotImplementedError(
            "fme 2026.10.0 has no needs_uncorrected_grad (its step never detaches the "
            "deltas); the adapter declares the deviation NEEDS-1 instead of inventing one"
        )

    def __call__(
        self,
        output: TensorMapping,
        uncorrected: TensorMapping,
        target: TensorMapping,
        step: int,
        data_mask: TensorMapping | None = None,
    ) -> LossResult:
        from fme.core.tensors import add_ensemble_dim, unfold_ensemble_dim

        deltas = to_deltas(output, uncorrected)
        result = self.loss(
            unfold_ensemble_dim(dict(output), n_ensemble=self.n_ensemble),
            add_ensemble_dim(dict(target)),
            step=step,
            data_mask=data_mask,
            deltas=unfold_ensemble_dim(deltas, n_ensemble=self.n_ensemble),
        )
        per_channel = {k: info.loss for k, info in result.main.get_channel_losses().items()}
        regularization = None
        if self.regularization is not None:
            if result.corrector_penalty is None and not deltas:
                # fme's inert path (no deltas): no penalty term in total()
                regularization = torch.zeros(())
            elif result.corrector_penalty is not None:
                regularization = result.corrector_penalty_weight * result.corrector_penalty.total()
        return LossResult(
            main_per_channel=per_channel,
            main_total=result.main.total(),
            regularization=regularization,
            total=result.total(),
        )


# ------------------------------------------------------------ the training hook

SUITE_STEP_TYPE = "conformance_suite_step"
"""The name the suite step is registered under in fme's ``StepSelector`` registry."""


@functools.cache
def _suite_step_config_class() -> type:
    """An fme ``StepConfigABC`` whose step runs a suite-provided step module,
    registered in fme's step registry (defined on first use: subclassing fme
    must not happen at import). fme calls it like any of its own steps: the
    ``Stepper`` feeds it the prognostic state and reads its ``StepOutput``
    (corrected output + correction deltas)."""
    from fme.core.corrector.output import CorrectorDiagnostics
    from fme.core.normalizer import StandardNormalizer
    from fme.core.step.output import StepOutput
    from fme.core.step.step import StepABC, StepConfigABC, StepSelector

    @dataclasses.dataclass
    class SuiteStepConfig(StepConfigABC):
        names: list[str]
        means: dict[str, float]
        stds: dict[str, float]
        module: Any = None  # the suite step (a torch module), like fme's "prebuilt"

        def get_step(self, dataset_info: Any, init_weights: Any) -> Any:
            from fme.core.distributed import Distributed

            init_weights([self.module])
            # as fme's SingleModuleStep: the module behind the data-parallel
            # wrapper of fme's distributed backend (a no-op wrapper when not
            # distributed)
            return SuiteStepWrapper(self, Distributed.get_instance().wrap_module(self.module))

        @property
        def n_ic_timesteps(self) -> int:
            return 1

        @property
        def input_names(self) -> frozenset[str]:
            return frozenset(self.names)

        @property
        def output_names(self) -> frozenset[str]:
            return frozenset(self.names)

        @property
        def next_step_input_names(self) -> frozenset[str]:
            return frozenset()

        @property
        def loss_names(self) -> list[str]:
            return list(self.names)

        def get_next_step_forcing_names(self) -> list[str]:
            return []

        def get_loss_normalizer(
            self, extra_names: Any = None, extra_residual_scaled_names: Any = None
        ) -> Any:
            return StandardNormalizer(
                means={k: torch.tensor(float(v)) for k, v in self.means.items()},
                stds={k: torch.tensor(float(v)) for k, v in self.stds.items()},
            )

        def replace_ocean(self, ocean: Any) -> None:
            if ocean is not None:
                raise ValueError("the suite step has no ocean")

        def get_ocean(self) -> None:
            return None

        def replace_prescribed_prognostic_names(self, names: list[str]) -> None:
            if names:
                raise ValueError("the suite step prescribes nothing")

        def get_prescribed_prognostic_names(self) -> list[str]:
            return []

        def replace_corrector(self, corrector: Any) -> None:
            raise ValueError("the suite step's corrector is part of the suite step")

        @property
        def allow_missing_variables(self) -> bool:
            return False

        def load(self) -> None:
            return None

        @classmethod
        def remove_deprecated_keys(cls, state: Any) -> dict[str, Any]:
            return dict(state)

    class SuiteStepWrapper(StepABC):
        def __init__(self, config: SuiteStepConfig, wrapped: torch.nn.Module):
            super().__init__()
            self._config = config
            self._modules = torch.nn.ModuleList([wrapped])

        @property
        def config(self) -> SuiteStepConfig:
            return self._config

        @property
        def modules(self) -> torch.nn.ModuleList:
            return self._modules

        @property
        def normalizer(self) -> Any:
            return self._config.get_loss_normalizer()

        @property
        def surface_temperature_name(self) -> None:
            return None

        @property
        def ocean_fraction_name(self) -> None:
            return None

        def prescribe_sst(self, mask_data: Any, gen_data: Any, target_data: Any) -> Any:
            return dict(gen_data)

        def get_regularizer_loss(self) -> torch.Tensor:
            return torch.tensor(0.0)

        def step(self, args: Any, wrapper: Any = lambda x: x) -> Any:
            output, uncorrected = wrapper(self._modules[0])(args.input)
            # fme's corrector reports corrected - pre-corrector, on the graph
            delta = {k: output[k] - uncorrected[k] for k in uncorrected}
            return StepOutput(output=output, corrector_diagnostics=CorrectorDiagnostics(delta))

        def get_state(self) -> dict[str, Any]:
            return {}

        def load_state(self, state: dict[str, Any]) -> None:
            return None

    StepSelector.register(SUITE_STEP_TYPE)(SuiteStepConfig)
    return SuiteStepConfig


def batch_data(batch: Batch) -> Any:
    """fme's ``BatchData``: each variable ``(n_batch, 1 + n_forward_steps,
    n_lat, n_lon)`` (the initial state, then the targets), with placeholder
    (zero) time coordinates, epoch 0."""
    import numpy as np
    import xarray as xr
    from fme.ace.data_loading.batch_data import BatchData

    data = {
        k: torch.stack([v, *(t[k] for t in batch.targets)], dim=1)
        for k, v in batch.initial_state.items()
    }
    n_batch, n_time = next(iter(data.values())).shape[:2]
    time = xr.DataArray(np.zeros((n_batch, n_time)), dims=["sample", "time"])
    return BatchData.new_on_cpu(data=data, time=time, epoch=0)


class FmeStepper:
    """fme's ``TrainStepper`` around a suite step (``StepperUnderTest``)."""

    def __init__(self, train_stepper: Any, stepper: Any, step: SuiteStep, accumulate: bool):
        self.train_stepper = train_stepper
        self.stepper = stepper
        self.step = step
        self.accumulate = accumulate

    def train_on_batch(self, batch: Batch) -> TrainOutcome:
        from fme.core.optimization import OptimizationConfig

        # lr 0 (as the reference adapter): the suite reads the gradients and
        # computes its expectations from the step's parameters, which stay put
        optimization = OptimizationConfig(lr=0.0, use_gradient_accumulation=self.accumulate).build(
            modules=self.train_stepper.modules, max_epochs=1
        )
        gradients: dict[str, torch.Tensor | None] = {}
        apply_update = optimization._step_weights

        def record_then_update() -> None:
            # fme has no public hook between the backward pass(es) and the
            # optimizer update: record the suite step's gradients here
            for name, p in self.step.named_parameters():
                gradients[name] = None if p.grad is None else p.grad.detach().clone()
            apply_update()

        optimization._step_weights = record_then_update
        out = self.train_stepper.train_on_batch(batch_data(batch), optimization=optimization)
        metrics = {k: v.detach() for k, v in out.metrics.items()}
        if self.reduce_metrics is not None:  # as fme's trainer logs batch_<metric>
            metrics = {k: self.reduce_metrics(v) for k, v in metrics.items()}
        floats = {k: float(v) for k, v in metrics.items()}
        # fme's loss_step_{i} is the step's optimized total (main + weight * penalty)
        totals = [floats[f"loss_step_{i}"] for i in range(len(batch.targets))]
        return TrainOutcome(metrics=floats, gradients=gradients, step_totals=totals)

    reduce_metrics: Any = None
    """``dist.reduce_mean`` of fme's distributed backend, in data-parallel runs."""

    def predict(self, batch: Batch) -> list[PredictedStep]:
        """fme's ``Stepper.predict``: each step's output and fme's own deltas
        (its step diagnostics), as fme returns them."""
        data = batch_data(batch)
        names = list(batch.initial_state)
        out, _ = self.stepper.predict(data.get_start(names, 1), data)
        deltas = {} if out.step_diagnostics is None else dict(out.step_diagnostics.delta)
        return [
            PredictedStep(
                output={k: out.data[k][:, i] for k in names},
                deltas={k: d[:, i] for k, d in deltas.items()},
            )
            for i in range(len(batch.targets))
        ]


class FmeAdapter(AdapterBase):
    """The adapter for ``fme`` (see the module docstring for the translation)."""

    name = "fme"
    capabilities = frozenset(
        {
            Capability.RAISE_ON_UNMATCHED,
            Capability.CORRECTOR_CONFIG,
            Capability.ENSEMBLE,
            Capability.AREA_WEIGHTED,
            Capability.STEPPER,
            Capability.GRADIENT_ACCUMULATION,
            Capability.DISTRIBUTED,
            Capability.TRAIN_ENSEMBLE,
        }
    )
    # fme's own design where it replaces #1273's (sources: docs/fme/ANALYSIS.md)
    deviations = {
        "MATCH-1": "opt-in selection (names_and_prefixes) instead of exclusions",
        "WARN-1": "raises on an entry that matches no corrected variable instead of warning once",
        "REG-4": "the penalty is norm L1 | L2 of the normalized deltas, not a loss config",
        "CONFIG-2": "no penalty loss type to validate (norm is a Literal['L1', 'L2'])",
        "NEEDS-1": "no needs_uncorrected_grad: fme's step never detaches the deltas",
    }

    def __init__(self) -> None:
        fme = _import_fme()
        self.version = str(fme.__version__)

    # ---- translation of the neutral specs into fme's configs

    @staticmethod
    def normalizer(spec: LossSpec) -> Any:
        from fme.core.normalizer import StandardNormalizer

        means = {k: torch.tensor(float(v)) for k, v in spec.normalizer.means.items()}
        stds = {k: torch.tensor(float(v)) for k, v in spec.normalizer.stds.items()}
        return StandardNormalizer(means=means, stds=stds)

    @staticmethod
    def gridded_operations(spec: LossSpec) -> Any:
        from fme.core.gridded_ops import LatLonOperations

        if spec.area_weights is None:
            return None
        return LatLonOperations(spec.area_weights)

    @staticmethod
    def precorrector_config(names: tuple[str, ...]) -> Any:
        from fme.core.corrector.loss_config import PreCorrectorOptimizationConfig

        return PreCorrectorOptimizationConfig(names_and_prefixes=list(names))

    @staticmethod
    def regularization_config(reg: RegularizationSpec, names: tuple[str, ...]) -> Any:
        from fme.core.corrector.loss_config import CorrectorRegularizationConfig

        norm = NORM_OF_LOSS_TYPE.get(reg.loss_type)
        if norm is None or reg.global_mean_type is not None:
            raise ValueError(
                f"fme's corrector regularization has norm 'L1' | 'L2' only; "
                f"loss type {reg.loss_type!r} (global_mean_type={reg.global_mean_type!r}) "
                "has no fme equivalent."
            )
        return CorrectorRegularizationConfig(
            names_and_prefixes=list(names), norm=norm, weight=reg.weight
        )

    def corrector_config(
        self,
        precorrector: tuple[str, ...] | None,
        regularization: RegularizationSpec | None,
        penalized: tuple[str, ...],
    ) -> Any:
        """fme's ``CorrectorLossConfig`` (its ``__post_init__`` validates).

        Args:
            precorrector: the opt-in selection of pre-corrector optimization,
                or None (off).
            regularization: the penalty, or None (off).
            penalized: the penalty's selection.
        """
        from fme.core.corrector.loss_config import CorrectorLossConfig

        return CorrectorLossConfig(
            precorrector_optimization=None
            if precorrector is None
            else self.precorrector_config(precorrector),
            regularization=None
            if regularization is None
            else self.regularization_config(regularization, penalized),
        )

    def build_corrector_config(
        self,
        precorrector: PreCorrectorSpec | None,
        regularization: RegularizationSpec | None,
    ) -> Any:
        """Without a case there are no corrected variables to select: the
        selections are a stand-in name (``CorrectorLossConfig`` validates
        which features are on, not the names; names are checked by ``build``)."""
        stand_in = ("corrected",)
        return self.corrector_config(
            None if precorrector is None else (precorrector.select_names or stand_in),
            regularization,
            stand_in,
        )

    @staticmethod
    def step_loss_config(spec: LossSpec) -> Any:
        from fme.core.loss import StepLossConfig

        return StepLossConfig(
            type=spec.main.loss_type,
            weights=dict(spec.main.weights),
            sqrt_loss_step_decay_constant=spec.main.sqrt_loss_step_decay_constant,
        )

    def corrector_loss_config(self, spec: LossSpec) -> Any:
        """fme's ``CorrectorLossConfig`` for a case, or None (no corrector loss)."""
        # A case whose corrector modifies nothing: the features stay
        # configured, selecting the loss variables -- what fme's trainer sees
        # in an epoch whose corrector is disabled (a selection and empty
        # deltas, which fme never resolves it against).
        inert = spec.names if not spec.corrected_names else None
        selected = None
        if spec.precorrector is not None:
            # An empty opt-in selection (every corrected variable excluded) is
            # fme's "feature off": fme rejects an empty names_and_prefixes as
            # "a contradiction, not a no-op".
            selected = inert or spec.precorrector.select_names or None
        if selected is None and spec.regularization is None:
            return None
        return self.corrector_config(selected, spec.regularization, inert or spec.corrected_names)

    def build_loss(self, spec: LossSpec) -> FmeLoss:
        from fme.core.loss import StepOutputLoss

        normalizer = self.normalizer(spec)
        step_loss = self.step_loss_config(spec).build(
            self.gridded_operations(spec),
            out_names=list(spec.names),
            normalizer=normalizer,
            channel_dim=CHANNEL_DIM,
        )
        config = self.corrector_loss_config(spec)
        corrector_loss = None
        if config is not None:
            corrector_loss = config.build(
                list(spec.names), normalizer=normalizer, channel_dim=CHANNEL_DIM
            )
        return FmeLoss(
            StepOutputLoss(step_loss, corrector_loss), spec.n_ensemble, spec.regularization
        )

    def build_stepper(self, spec: StepperSpec, step: SuiteStep) -> FmeStepper:
        """fme's ``TrainStepper`` around ``step``, built the public way:
        ``StepperConfig(step=StepSelector(<the suite step>)).get_stepper(dataset_info)``
        and ``TrainStepper(stepper, TrainStepperConfig(loss, corrector_loss))``.
        fme has no ``corrector_enabled``: nothing here raises for a step
        without a corrector (fme's behaviour is what the suite sees)."""
        import datetime

        from fme.ace.stepper.single_module import StepperConfig, TrainStepper, TrainStepperConfig
        from fme.core.coordinates import NullVerticalCoordinate
        from fme.core.dataset_info import DatasetInfo
        from fme.core.step.step import StepSelector

        loss = spec.loss
        _suite_step_config_class()  # registered in fme's step registry
        step_config = {  # not dataclasses.asdict: that would deep-copy the step
            "names": list(loss.names),
            "means": dict(loss.normalizer.means),
            "stds": dict(loss.normalizer.stds),
            "module": step,
        }
        stepper_config = StepperConfig(step=StepSelector(type=SUITE_STEP_TYPE, config=step_config))
        gridded = self.gridded_operations(loss)
        dataset_info = DatasetInfo(
            gridded_operations=gridded,
            img_shape=None if gridded is None else tuple(loss.area_weights.shape),  # type: ignore[union-attr]
            vertical_coordinate=NullVerticalCoordinate(),
            timestep=datetime.timedelta(hours=6),
        )
        stepper = stepper_config.get_stepper(dataset_info)
        train_config = TrainStepperConfig(
            loss=self.step_loss_config(loss),
            n_ensemble=loss.n_ensemble,
            corrector_loss=self.corrector_loss_config(loss),
        )
        return FmeStepper(
            TrainStepper(stepper=stepper, config=train_config),
            stepper,
            step,
            spec.use_gradient_accumulation,
        )

    def train_on_batch_distributed(
        self, spec: StepperSpec, step: SuiteStep, batch: Batch
    ) -> TrainOutcome:
        """fme's data parallelism (``fme.core.distributed``) on the suite's
        process group: see the module docstring."""
        os.environ.setdefault("FME_DISTRIBUTED_BACKEND", "none")
        from fme.core.distributed import Distributed

        with (
            Distributed.replace_backend(_suite_group_backend()()),
            Distributed.context(handle_signals=False),
        ):
            dist = Distributed.get_instance()
            stepper = self.build_stepper(spec, step)
            stepper.reduce_metrics = dist.reduce_mean
            return stepper.train_on_batch(batch)


@functools.cache
def _suite_group_backend() -> type:
    """fme's ``TorchDistributed`` backend on the suite's process group: it joins
    the initialized group as fme does under torchrun (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``), but leaves the group to the suite when fme's
    ``Distributed.context()`` shuts down (fme would destroy it)."""
    from fme.core.distributed.torch_distributed import TorchDistributed

    class SuiteGroupBackend(TorchDistributed):  # type: ignore[misc]
        def shutdown(self) -> None:
            return None

    return SuiteGroupBackend


def make_adapter() -> FmeAdapter:
    return FmeAdapter()


__all__ = ["FME_VERSION", "FmeAdapter", "FmeLoss", "FmeStepper", "make_adapter", "to_deltas"]
