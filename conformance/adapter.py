"""The adapter protocol: the whole contract between the conformance suite and an
implementation of ``StepOutputLoss`` (upstream issue #1273 of ai2cm/ace).

The suite never imports an implementation. It imports one *adapter*, chosen by
``--stepoutputloss-impl pkg.module:make_adapter`` (or the environment variable
``STEPOUTPUTLOSS_IMPL``); ``make_adapter()`` takes no arguments and returns an
object satisfying :class:`StepOutputLossAdapter`. Everything the suite passes
to an adapter is defined in this file, in neutral terms:

- **Case specs** (:class:`LossSpec`, :class:`PreCorrectorSpec`,
  :class:`RegularizationSpec`, :class:`MainLossSpec`, :class:`StepperSpec`):
  frozen dataclasses the adapter translates into the implementation's own
  configs.
- **Tensors**: every tensor the suite passes is in **physical units**. The
  values of one step are two mappings:

  * ``output``: the *corrected* value of every output variable, each of shape
    ``(n_batch * n_ensemble, *spatial)`` with the ensemble members of one
    sample adjacent along dim 0;
  * ``uncorrected``: the values *before* correction, same shapes, for exactly
    the variables the corrector modified (possibly none).

  Targets have shape ``(n_batch, *spatial)``. An implementation that carries
  correction **deltas** instead of ``uncorrected`` values converts in its
  adapter: ``deltas[k] = output[k] - uncorrected[k]`` (keep the autograd graph:
  do not detach, do not copy through numpy).
- **Results** (:class:`LossResult`, :class:`TrainOutcome`): what the adapter
  reports back, again in neutral terms; losses are in **loss-normalized**
  units (``(x - mean) / std`` of the case's normalizer).

What the suite hands an adapter is its own: specs, steps and batches are
deep copies, and the tensor mappings of a loss call are the adapter's own
``dict`` s holding the suite's tensors. They are read-only all the same: a
change to any of them is reported and fails the check (the suite computes
its expected values from its own copies, so they are never affected).
Results are 0-d floating-point tensors **in the inputs' dtype** (float32 in
every case of the suite; a convention: a float64 result would hide the
float32 rounding the tolerances are set for) and on the inputs' device, kept
on the autograd graph where the inputs are; a result that is not is named,
with its dtype, shape or device. Every adapter call runs under the check's
wall-clock limit (``--stepoutputloss-timeout``) and must leave global torch
state (grad mode, default dtype, ...) as it found it.

Optional behaviour is declared, never guessed: an adapter lists its
:class:`Capability` values in ``capabilities``. A check that needs a capability
the adapter does not declare is skipped, never passed silently, with one of
three reasons (``conformance/requirements.py``): ``"deviates: <capability>
(<requirement id>: <reason>)"`` when the adapter declares a deviation from
the capability's #1273 requirement (see **Deviations** below), ``"not
exercised: <capability>"`` for a hook the adapter does not implement
(``stepper``, ``distributed``) or a #1273 capability it neither declares nor
deviates from, and ``"not applicable: <capability>"`` only for an optional
extra beyond #1273 (data masks, area weighting, bad-input validation,
raising on unmatched entries). A declared capability is a promise: its checks run and must
pass (or be listed, with a reason, in the xfails file given by
``--stepoutputloss-xfails``).

Methods that belong to an undeclared capability are never called; an adapter
may leave them out or raise ``NotImplementedError`` (see :class:`AdapterBase`).

Definitions the checks test (closed form, computed by the suite in float64):

- **Main loss** of one step ``s`` with per-channel loss ``L`` (MSE, L1, ...),
  weights ``w_k`` (1 when not given), decay constant ``c``:
  ``main_k = (1 + c*s) ** -0.5 * L(w_k * (p_k - mu_k) / sigma_k, w_k * (y_k - mu_k) / sigma_k)``
  and ``main_total = mean_k main_k`` over all loss variables, where the
  prediction ``p_k`` is ``uncorrected[k]`` when pre-corrector optimization is
  on and ``k`` is corrected and not excluded, else ``output[k]``.
- **Regularization**: ``weight * mean_{k corrected} L_reg((output_k - uncorrected_k) / sigma_k, 0)``,
  the mean over *corrected channels only*, no step decay, no per-variable
  weights; ``MSE`` is the mean of squares (not its root), ``L1`` the mean of
  absolute values.
- ``total == main_total + regularization`` (``main_total`` without it).

**Contract conventions.** Where #1273 leaves a point open, the suite either
accepts every reasonable reading or fixes one here, labelled as a convention
(requirement ids ``CONV-*`` of ``docs/requirements.md``):

- ``CONV-MAIN-1`` the main-loss formula above: the weight ``w_k`` multiplies
  the normalized prediction and target *inside* the loss, not the loss.
- ``CONV-AREA-1`` ``AreaWeightedMSE`` with area weights ``a`` of shape
  ``(n_lat, n_lon)``: per channel, per sample (and member),
  ``sum_ij a_ij (p - y)_ij**2 / sum_ij a_ij`` (weights normalized by their
  sum), then the mean over samples (and members).
- ``CONV-ENS-1`` with ``n_ensemble = m > 1``: ``MSE`` / ``L1`` compare each
  member with its sample's target, then average over members and samples;
  ``EnsembleLoss`` is the fair CRPS, per point
  ``mean_i |x_i - y| - sum_{i != j} |x_i - x_j| / (2 m (m - 1))``, then the
  mean over points and samples. The penalty with an ensemble is the same
  mean over every member's corrections.
- ``CONV-ZERO-1`` regularization configured but nothing corrected
  (``uncorrected`` empty): ``LossResult.regularization`` is a finite 0-d
  ``0.0``, not None (None means regularization is off).
- ``CONV-METRIC-1`` the batch metric ``corrector_regularization`` is the *sum*
  of the per-step penalties (see :class:`TrainOutcome`).
- ``CONV-HYGIENE-1`` per-call graph hygiene: each call builds its autograd
  graph from its own inputs only; a call's ``total`` can be backwarded after
  later calls (and once per call), and no call keeps an earlier call's graph
  alive (what gradient accumulation needs: backward per step).
- ``MASK-1`` (with :attr:`Capability.DATA_MASK`): masked points contribute 0
  to the main loss *and* to the penalty and stay in the mean's denominator.

Open readings the suite accepts both of: warn-once of unmatched exclusion
entries may be one warning listing them all or one warning per entry
(:attr:`Capability.WARN_ONCE_UNMATCHED`).

**Deviations.** An implementation that deliberately replaces a #1273
requirement with its own design (opt-in selection instead of exclusions,
raising instead of warning once, an ``L1``/``L2``-only penalty...) says so in
its adapter's ``deviations``: ``{requirement id: one-line reason}``, only for
requirements of kind ``seed-deviable`` (``docs/requirements.md``), and not
together with the capability that would exercise the requirement. The report
shows these requirements as "deviates" with the reason, never as passing or
not applicable; checks that would exercise them are skipped with
``deviates: ...``. An unknown id, a requirement that cannot be deviated from,
or an empty reason is a usage error.
"""

from __future__ import annotations

import dataclasses
import enum
import types
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

TensorMapping = Mapping[str, torch.Tensor]


class Capability(str, enum.Enum):
    """Optional behaviour an adapter may declare (the string value is what a
    not-applicable skip reports).

    Everything not listed here is required of every implementation: the
    pre-corrector target swap without exclusions, the MSE/L1 penalty, the
    ``total`` decomposition, ``needs_uncorrected_grad``, the pass-through,
    gradient flow through ``uncorrected``, per-call graph hygiene, and not
    mutating inputs -- except where a requirement is ``seed-deviable``
    (``docs/requirements.md``, e.g. ``needs_uncorrected_grad``) and the adapter
    declares a deviation from it in ``deviations``.
    """

    EXCLUSION_MATCHER = "exclusion-matcher"
    """Pre-corrector optimization takes ``exclude_names_and_prefixes`` with the
    shared name-and-prefix rules (bare ``x`` = ``x`` and every ``x_<n>``;
    prefix ``x_`` = every ``x_<n>``; explicit ``x_<n>`` = exactly that).
    Without it the adapter uses the opt-in ``select_names`` of
    :class:`PreCorrectorSpec` (explicit names only)."""

    WARN_ONCE_UNMATCHED = "warn-once-unmatched"
    """Exclusion entries that match no corrected variable are reported by
    ``UserWarning``: over the life of the loss object each unmatched entry is
    named (as a whole token) by exactly one warning, emitted on the first step
    with corrections -- one warning listing them all, or one per entry, both
    are fine; nothing after that step; an entry that matches is never named;
    the loss still computes."""

    RAISE_ON_UNMATCHED = "raise-on-unmatched"
    """An entry that matches no corrected variable is an error (an
    ``Exception`` whose message names the entry), raised when the loss is built
    or on the first call."""

    LOSS_CONFIG_REGULARIZATION = "loss-config-regularization"
    """The penalty is configured with a general loss config, so it also
    supports ``AreaWeightedMSE`` (with the case's area weights). Without it the
    penalty is ``L1`` / ``L2`` only (the suite then uses ``MSE`` = L2 and
    ``L1``)."""

    REGULARIZATION_LOSS_TYPES = "regularization-loss-types"
    """The regularization config validates its loss type: ensemble losses,
    ``NaN`` and global-mean (``global_mean_type``) losses are rejected with a
    ``ValueError`` by :meth:`StepOutputLossAdapter.build_corrector_config`."""

    CORRECTOR_CONFIG = "corrector-config"
    """There is one combined corrector-loss config holding both features;
    :meth:`StepOutputLossAdapter.build_corrector_config` builds it and it
    raises ``ValueError`` when both features are None."""

    ENSEMBLE = "ensemble"
    """``n_ensemble > 1``: predictions carry ``n_batch * n_ensemble`` rows
    (members of a sample adjacent), targets ``n_batch``; the main loss may be
    ``EnsembleLoss`` (fair CRPS)."""

    AREA_WEIGHTED = "area-weighted"
    """The main loss supports ``AreaWeightedMSE`` with the case's area weights
    (shape ``(n_lat, n_lon)``)."""

    DATA_MASK = "data-mask"
    """The loss takes ``data_mask`` (per-variable, True = valid, broadcastable
    to ``(n_batch, *spatial)``, the same for every ensemble member of a
    sample); masked points contribute 0 to both the main loss and the
    penalty, and still count in the mean's denominator."""

    BAD_INPUT_VALIDATION = "bad-input-validation"
    """Bad inputs (a loss variable missing from ``output`` or the target, an
    ``uncorrected`` key not in ``output``, mismatched shapes) raise an
    ``Exception`` (not an ``AssertionError``/internal traceback) whose message
    names the offending variable, and for a missing variable the mapping it
    is missing from (``output`` or ``target``)."""

    STEPPER = "stepper"
    """The training hook: :meth:`StepOutputLossAdapter.build_stepper` wraps a
    suite-provided step in the implementation's train stepper."""

    GRADIENT_ACCUMULATION = "gradient-accumulation"
    """The train stepper supports ``use_gradient_accumulation=True`` (backward
    once per step, rollout state detached between steps)."""

    DISTRIBUTED = "distributed"
    """Data-parallel training on ``torch.distributed``:
    :meth:`StepOutputLossAdapter.train_on_batch_distributed` trains on one
    rank's share of a batch inside an initialized process group (gloo, CPU),
    with ``use_gradient_accumulation`` False and True, and reports the
    whole batch's metrics (reduced across ranks as means over samples) and
    the synchronized gradients: those of one process on the whole batch."""

    # -- added for the suite's sensitivity checks (issue #14); additive, so
    #    adapters written before them are unaffected

    WEIGHT_VALIDATION = "regularization-weight-validation"
    """:meth:`StepOutputLossAdapter.build_corrector_config` rejects an invalid
    regularization weight (0, negative, NaN, +inf, -inf) with a
    ``ValueError`` whose message mentions ``weight``."""

    EMPTY_UNCORRECTED_WARNING = "empty-uncorrected-warning"
    """The train stepper warns once (a ``UserWarning`` mentioning
    ``uncorrected``), on the first step, when the step's corrector is enabled
    and a corrector loss is configured but the step returned an empty
    ``uncorrected``; training goes on."""

    DISTRIBUTED_UNEVEN_SHARES = "distributed-uneven-shares"
    """With :attr:`Capability.DISTRIBUTED`: data-parallel training is also
    right when the ranks' shares differ in size (3 samples on 2 ranks:
    2 + 1), i.e. metrics and gradients are weighted by each rank's samples.
    Without it, the suite gives every rank as many samples (as a padding
    ``DistributedSampler`` does)."""

    TRAIN_ENSEMBLE = "train-ensemble"
    """The train stepper trains with ``n_ensemble > 1`` (:class:`StepperSpec`):
    it repeats each sample's initial state for its members, members of a
    sample adjacent."""

    EPOCH_AGGREGATION = "epoch-aggregation"
    """:meth:`StepperUnderTest.train_epoch` trains on several batches and
    returns the epoch-aggregated metrics (each batch metric averaged over the
    epoch's batches, weighted by the batches' numbers of samples)."""


@dataclasses.dataclass(frozen=True)
class NormalizerSpec:
    """The loss normalizer: defines loss-normalized space.

    Attributes:
        means: per-variable mean, physical units.
        stds: per-variable standard deviation, physical units, > 0.
    """

    means: Mapping[str, float]
    stds: Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class MainLossSpec:
    """The main (step) loss.

    Attributes:
        loss_type: ``"MSE"``, ``"L1"``, ``"AreaWeightedMSE"`` (needs
            :attr:`Capability.AREA_WEIGHTED`) or ``"EnsembleLoss"`` (fair CRPS,
            needs :attr:`Capability.ENSEMBLE`).
        weights: per-variable weights on loss-normalized values; variables not
            named have weight 1.
        sqrt_loss_step_decay_constant: ``c`` of the step decay
            ``(1 + c * step) ** -0.5``, ``step`` counted from 0.
    """

    loss_type: str = "MSE"
    weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    sqrt_loss_step_decay_constant: float = 0.0


@dataclasses.dataclass(frozen=True)
class PreCorrectorSpec:
    """Pre-corrector optimization is on (the main loss sees ``uncorrected``
    values for corrected variables).

    The same request in two vocabularies; an adapter uses the one its
    implementation speaks:

    Attributes:
        exclude_names_and_prefixes: exclusion entries, with the name-and-prefix
            rules (:attr:`Capability.EXCLUSION_MATCHER`). Corrected variables
            they match keep their corrected values in the main loss.
        select_names: the opt-in translation for this case, computed by the
            suite: the corrected variables the exclusions do *not* match
            (explicit names), followed by every exclusion entry that matches
            no corrected variable (so an unmatched entry stays unmatched in
            either vocabulary). Opt-in implementations swap exactly the
            selected variables. These are exact names: an implementation
            whose bare entry ``x`` also selects the levels ``x_<n>`` cannot
            select a 2D ``x`` without its corrected levels; the suite's fixed
            cases never ask for that (no variable is both ``x`` and the stem
            of levels ``x_<n>``).
    """

    exclude_names_and_prefixes: tuple[str, ...] = ()
    select_names: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class RegularizationSpec:
    """Corrector regularization is on.

    Attributes:
        loss_type: ``"MSE"`` (L2: mean of squares) or ``"L1"`` (mean of
            absolute values) for every implementation; ``"AreaWeightedMSE"``
            with :attr:`Capability.LOSS_CONFIG_REGULARIZATION`. The invalid
            types ``"EnsembleLoss"`` and ``"NaN"`` appear only in calls to
            :meth:`StepOutputLossAdapter.build_corrector_config`.
        weight: multiplies the penalty; finite and > 0.
        global_mean_type: None, or ``"LpLoss"`` (invalid for regularization;
            appears only in :meth:`StepOutputLossAdapter.build_corrector_config`).
    """

    loss_type: str = "MSE"
    weight: float = 1.0
    global_mean_type: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class LossSpec:
    """Everything needed to build one loss object.

    Attributes:
        names: the loss variables (channels), in order. 2D variables have
            plain names, levels of 3D variables are named ``<name>_<level>``.
        normalizer: the loss normalizer over ``names``.
        main: the main loss.
        n_ensemble: ensemble members per sample (fixed at build).
        precorrector: None (off) or the pre-corrector optimization request.
        regularization: None (off) or the penalty.
        corrected_names: the variables this case's corrector modifies (the
            keys ``uncorrected`` will have). A hint for adapters that must
            translate at build time (opt-in selections); an exclusion-matcher
            implementation should ignore it and look at ``uncorrected``.
        area_weights: ``(n_lat, n_lon)`` weights for ``AreaWeightedMSE``, or None.
    """

    names: tuple[str, ...]
    normalizer: NormalizerSpec
    main: MainLossSpec = dataclasses.field(default_factory=MainLossSpec)
    n_ensemble: int = 1
    precorrector: PreCorrectorSpec | None = None
    regularization: RegularizationSpec | None = None
    corrected_names: tuple[str, ...] = ()
    area_weights: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True)
class LossResult:
    """One step's loss as the implementation computed it (loss-normalized
    units; keep the autograd graph on every tensor).

    Attributes:
        main_per_channel: the main loss of every loss variable (0-d tensors,
            step decay applied), by name.
        main_total: the main loss's total (0-d), as the implementation reports it.
        regularization: the penalty (0-d), or None when regularization is off.
        total: the implementation's total (0-d): what a trainer backwards.
    """

    main_per_channel: Mapping[str, torch.Tensor]
    main_total: torch.Tensor
    regularization: torch.Tensor | None
    total: torch.Tensor


@runtime_checkable
class LossUnderTest(Protocol):
    """A built loss object, wrapped by the adapter. The suite keeps one
    instance for a sequence of calls (warn-once state lives on it)."""

    @property
    def needs_uncorrected_grad(self) -> bool:
        """True iff pre-corrector optimization or regularization is on."""
        ...

    def __call__(
        self,
        output: TensorMapping,
        uncorrected: TensorMapping,
        target: TensorMapping,
        step: int,
        data_mask: TensorMapping | None = None,
    ) -> LossResult:
        """The loss of one step.

        Args:
            output: corrected values, physical units,
                ``(n_batch * n_ensemble, *spatial)``; every loss variable.
            uncorrected: pre-correction values of the corrected variables,
                same shapes (may be empty). Delta-carrying implementations
                receive ``output[k] - uncorrected[k]``.
            target: physical units, ``(n_batch, *spatial)``.
            step: the step index from 0.
            data_mask: only with :attr:`Capability.DATA_MASK`.

        The adapter must hand the implementation these mappings' tensors
        themselves (no defensive copies), so in-place mutation is visible.
        """
        ...


class SuiteStep(Protocol):
    """What the suite hands :meth:`StepOutputLossAdapter.build_stepper`: a
    ``torch.nn.Module`` that is one deterministic, differentiable step
    (implemented in ``conformance.corrector``).

    ``forward(state)`` maps the state (physical units, each ``(n_batch,
    *spatial)``, every name in ``names``) to ``(output, uncorrected)``: the
    corrected next state and the pre-correction values of the variables its
    corrector modified (empty when ``corrector_enabled`` is False). Its
    parameters (``named_parameters()``) include one the corrector depends on.
    """

    names: tuple[str, ...]
    corrector_enabled: bool

    def __call__(
        self, state: TensorMapping
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]: ...

    def named_parameters(self) -> Any: ...


@dataclasses.dataclass(frozen=True, eq=False)
class StepperSpec:
    """A train stepper around a :class:`SuiteStep`.

    Attributes:
        loss: the loss (``n_ensemble`` is 1 for stepper cases, except with
            :attr:`Capability.TRAIN_ENSEMBLE`: then it may be > 1, and the stepper
            repeats each sample's initial state for its members, members of a
            sample adjacent).
        n_forward_steps: steps per batch.
        use_gradient_accumulation: backward per step with rollout state
            detached between steps (:attr:`Capability.GRADIENT_ACCUMULATION`).
    """

    loss: LossSpec
    n_forward_steps: int = 1
    use_gradient_accumulation: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class Batch:
    """One training batch, physical units.

    Attributes:
        initial_state: each ``(n_batch, *spatial)``.
        targets: ``n_forward_steps`` mappings, each ``(n_batch, *spatial)``.
    """

    initial_state: TensorMapping
    targets: Sequence[TensorMapping]


@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    """What one ``train_on_batch`` produced.

    Attributes:
        metrics: the batch metrics as floats; must include ``loss_step_{i}``
            (main total of step ``i``), ``corrector_regularization_step_{i}``
            (penalty of step ``i``, only when regularization is on) and the
            batch aggregate ``corrector_regularization`` (the *sum* of the
            per-step penalties, i.e. the penalty's share of the optimized
            loss, only when regularization is on), so that
            ``loss == sum_i loss_step_{i} + corrector_regularization``
            when ``loss`` is reported. Epoch aggregation averages this
            batch value over batches.
        gradients: ``name -> grad`` for every parameter of the suite step
            (``named_parameters()``), holding the gradient of the batch's
            optimized loss before any optimizer update (None if it got none).
        step_totals: each optimized step's total (main loss + penalty, what
            is backwarded), in step order, as the implementation computed
            it: the adapter's translation, independent of metric names.
            None when the adapter cannot report it (the checks that need it
            then fall back to ``loss_step_{i}`` + ``corrector_regularization_step_{i}``).
    """

    metrics: Mapping[str, float]
    gradients: Mapping[str, torch.Tensor | None]
    step_totals: Sequence[float] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class PredictedStep:
    """One step of plain prediction, *as the implementation returns it*
    (physical units, each ``(n_batch, *spatial)``).

    Attributes:
        output: the corrected values.
        uncorrected: the pre-correction values, for an implementation that
            carries them; else None.
        deltas: the corrections ``output - uncorrected``, for an
            implementation that carries deltas; else None.

    Exactly one of ``uncorrected`` and ``deltas`` is given: the tensors the
    implementation itself returns (never derived by the adapter, e.g. as
    ``output - delta``: ``output`` may legitimately be on the graph, and a
    derived tensor would inherit that).
    """

    output: Mapping[str, torch.Tensor]
    uncorrected: Mapping[str, torch.Tensor] | None = None
    deltas: Mapping[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if (self.uncorrected is None) == (self.deltas is None):
            raise ValueError("PredictedStep: give exactly one of uncorrected= and deltas=")

    @property
    def pre_correction(self) -> tuple[str, Mapping[str, torch.Tensor]]:
        """``("uncorrected" | "deltas", the mapping)``."""
        if self.uncorrected is not None:
            return "uncorrected", self.uncorrected
        assert self.deltas is not None
        return "deltas", self.deltas


@dataclasses.dataclass(frozen=True)
class EpochOutcome:
    """What one epoch of ``train_on_batch`` calls produced
    (:attr:`Capability.EPOCH_AGGREGATION`).

    Attributes:
        batches: each batch's :class:`TrainOutcome`, in order.
        metrics: the epoch-aggregated metrics as floats, as the implementation
            logs them; ``corrector_regularization`` (with regularization) is
            the mean of the batches' ``corrector_regularization`` weighted by
            their numbers of samples.
    """

    batches: Sequence[TrainOutcome]
    metrics: Mapping[str, float]


class StepperUnderTest(Protocol):
    """A built train stepper (:attr:`Capability.STEPPER`)."""

    def train_on_batch(self, batch: Batch) -> TrainOutcome:
        """One optimization pass over ``batch`` (see :class:`TrainOutcome`)."""
        ...

    def predict(
        self, batch: Batch
    ) -> Sequence[PredictedStep | tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
        """Plain (inference) prediction over ``batch.targets``' length: each
        step as the stepper exposes it, a :class:`PredictedStep` (or, for an
        implementation that carries ``uncorrected``, an ``(output,
        uncorrected)`` pair)."""
        ...


class EpochStepperUnderTest(StepperUnderTest, Protocol):
    """A train stepper that also aggregates an epoch
    (:attr:`Capability.EPOCH_AGGREGATION`; an optional method, so steppers
    written before it need not have it)."""

    def train_epoch(self, batches: Sequence[Batch]) -> EpochOutcome:
        """``train_on_batch`` on each batch in order, then the epoch's
        aggregated metrics as the implementation logs them (see
        :class:`EpochOutcome`)."""
        ...


@runtime_checkable
class StepOutputLossAdapter(Protocol):
    """The object ``make_adapter()`` returns.

    Attributes:
        name: the implementation's name (shown in reports).
        version: its version string.
        capabilities: the optional behaviour it supports.
        deviations: optional, ``{requirement id: one-line reason}``: the
            ``seed-deviable`` requirements of #1273 the implementation
            deliberately replaces with its own design (see the module
            docstring). Absent or empty: none.
    """

    name: str
    version: str
    capabilities: frozenset[Capability]

    def build_loss(self, spec: LossSpec) -> LossUnderTest:
        """Build the implementation's ``StepOutputLoss`` for ``spec`` (a
        pass-through to the step loss when both features are None). May
        raise for an unmatched entry with :attr:`Capability.RAISE_ON_UNMATCHED`."""
        ...

    def build_corrector_config(
        self,
        precorrector: PreCorrectorSpec | None,
        regularization: RegularizationSpec | None,
    ) -> object:
        """Build (and so validate) the implementation's corrector-loss config;
        raise ``ValueError`` for an invalid one (:attr:`Capability.CORRECTOR_CONFIG`,
        :attr:`Capability.REGULARIZATION_LOSS_TYPES`)."""
        ...

    def build_stepper(self, spec: StepperSpec, step: SuiteStep) -> StepperUnderTest:
        """Build a train stepper around ``step`` (:attr:`Capability.STEPPER`).
        Must raise (an ``Exception`` whose message mentions the corrector;
        not one of Python's internal error types such as ``TypeError`` or
        ``AttributeError``) when a corrector feature is configured but
        ``step.corrector_enabled`` is False, and build the same spec when it
        is True."""
        ...

    def train_on_batch_distributed(
        self, spec: StepperSpec, step: SuiteStep, batch: Batch
    ) -> TrainOutcome:
        """One data-parallel ``train_on_batch`` (:attr:`Capability.DISTRIBUTED`).

        The suite calls it on every rank of an initialized default process
        group (``torch.distributed``, gloo backend, CPU; ``get_rank()`` and
        ``get_world_size()`` say which rank; ``RANK``, ``WORLD_SIZE`` and
        ``LOCAL_RANK`` are set). Do not initialize or destroy the group.

        Build the implementation's train stepper for ``spec`` around ``step``
        with its data-parallel wrapper (e.g. ``DistributedDataParallel``;
        ``step`` has the same initial parameters on every rank), train once
        on ``batch`` -- *this rank's share* of the global batch (contiguous
        shares in rank order, as a ``DistributedSampler`` would hand them) --
        and return the :class:`TrainOutcome`: ``metrics`` as the
        implementation logs them -- the suite reads rank 0's, which must equal
        one process's on the whole batch (each metric is a mean over samples,
        so the ranks' values combine as a sample-weighted mean, never a sum)
        -- and ``gradients``: this rank's synchronized gradients, the whole
        batch's (the suite reads every rank's)."""
        ...


class AdapterBase:
    """Optional convenience base: the capability-gated methods raise
    ``NotImplementedError`` until overridden."""

    name: str = "unnamed"
    version: str = "0"
    capabilities: frozenset[Capability] = frozenset()
    deviations: Mapping[str, str] = types.MappingProxyType({})

    def build_loss(self, spec: LossSpec) -> LossUnderTest:
        raise NotImplementedError

    def build_corrector_config(
        self,
        precorrector: PreCorrectorSpec | None,
        regularization: RegularizationSpec | None,
    ) -> object:
        raise NotImplementedError(Capability.CORRECTOR_CONFIG.value)

    def build_stepper(self, spec: StepperSpec, step: SuiteStep) -> StepperUnderTest:
        raise NotImplementedError(Capability.STEPPER.value)

    def train_on_batch_distributed(
        self, spec: StepperSpec, step: SuiteStep, batch: Batch
    ) -> TrainOutcome:
        raise NotImplementedError(Capability.DISTRIBUTED.value)


ALL_CAPABILITIES: frozenset[Capability] = frozenset(Capability)
