"""The adapter for the released upstream implementation: ``fme`` 2026.10.0
(ai2cm/ace on PyPI), ``fme.core.loss.StepOutputLoss``.

Run the suite against it with::

    pytest conformance/checks --stepoutputloss-impl conformance.fme_adapter:make_adapter

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
  deltas). The adapter reports fme's own state, ``corrector_loss is not None``
  on the built ``StepOutputLoss`` (whether the deltas are consumed at all).

Capabilities not declared, and why (see ``docs/fme/ANALYSIS.md``):
exclusion-matcher and warn-once-unmatched (fme selects opt-in and raises on
unmatched entries), loss-config-regularization and regularization-loss-types
(fme's penalty is ``norm: L1 | L2``, there is no loss type to configure or
reject), data-mask (fme's ``data_mask`` is a per-sample ``[batch]`` presence
mask that renormalizes, not a pointwise validity mask whose points contribute
0), stepper and gradient-accumulation (see :func:`stepper_not_applicable`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from conformance.adapter import (
    AdapterBase,
    Capability,
    LossResult,
    LossSpec,
    PreCorrectorSpec,
    RegularizationSpec,
    TensorMapping,
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
            "conformance.fme_adapter needs the released fme package: "
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
        return self.loss.corrector_loss is not None

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


def stepper_not_applicable() -> str:
    """Why the training hook (stepper, gradient-accumulation) is not declared."""
    return (
        "fme's TrainStepper is built only from a registered StepConfigABC through "
        "StepperConfig.get_stepper(dataset_info) and trains on BatchData "
        "(xarray time coordinates, n_ic_timesteps, forcing/prognostic name sets); "
        "a suite-provided torch step cannot be wrapped without re-implementing fme's "
        "step registry, Stepper and data layer in the adapter."
    )


class FmeAdapter(AdapterBase):
    """The adapter for ``fme`` (see the module docstring for the translation)."""

    name = "fme"
    capabilities = frozenset(
        {
            Capability.RAISE_ON_UNMATCHED,
            Capability.CORRECTOR_CONFIG,
            Capability.ENSEMBLE,
            Capability.AREA_WEIGHTED,
            Capability.BAD_INPUT_VALIDATION,
        }
    )

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

    def build_loss(self, spec: LossSpec) -> FmeLoss:
        from fme.core.loss import StepLossConfig, StepOutputLoss

        normalizer = self.normalizer(spec)
        step_loss = StepLossConfig(
            type=spec.main.loss_type,
            weights=dict(spec.main.weights),
            sqrt_loss_step_decay_constant=spec.main.sqrt_loss_step_decay_constant,
        ).build(
            self.gridded_operations(spec),
            out_names=list(spec.names),
            normalizer=normalizer,
            channel_dim=CHANNEL_DIM,
        )
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
        corrector_loss = None
        if selected is not None or spec.regularization is not None:
            config = self.corrector_config(
                selected, spec.regularization, inert or spec.corrected_names
            )
            corrector_loss = config.build(
                list(spec.names), normalizer=normalizer, channel_dim=CHANNEL_DIM
            )
        return FmeLoss(
            StepOutputLoss(step_loss, corrector_loss), spec.n_ensemble, spec.regularization
        )


def make_adapter() -> FmeAdapter:
    return FmeAdapter()


__all__ = ["FME_VERSION", "FmeAdapter", "FmeLoss", "make_adapter"]
