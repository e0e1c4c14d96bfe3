"""The requirements the conformance suite enforces: one table, each entry with
an id, its text and its source, and the decorator that ties a check to them.

Every check of ``conformance/checks`` is decorated with
``@enforces("SWAP-1", ...)``, naming the requirement(s) whose violation makes
it fail; every requirement has at least one check (``tests/test_requirements.py``
audits both directions with :func:`audit`). The report
(:mod:`conformance.report`) groups outcomes by requirement and names, for each
failed check, the requirement that broke; its design-conformance summary says
for every requirement whether it holds, is broken, deviates (the adapter
declares a deviation), is not exercised or not applicable.

Kinds (:class:`Kind`):

- ``seed``: a requirement of upstream issue #1273 (the seed) that every
  implementation keeps. Source: a verbatim sentence of #1273 and its section.
- ``seed-deviable``: a requirement of the seed that a variant may replace
  with its own design, *declared* by its adapter as a deviation with a
  one-line reason (``deviations`` in ``conformance/adapter.py``), e.g. opt-in
  selection instead of exclusions. Reported as "deviates", never as passing.
- ``convention``: a point #1273 leaves open that the suite fixes so that a
  check has one expected value; the source says why. Defined precisely in the
  module docstring of ``conformance/adapter.py``.
- ``optional``: an extra beyond #1273 (data masks, area weighting,
  distributed training...). An implementation without it is "not applicable".

Run ``python -m conformance.requirements`` to print the table as Markdown
(``docs/requirements.md`` is that output; a test keeps it current).

This module imports neither torch nor the checks (the light plugin
registers its marker).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import pytest

from conformance.plugin import ENFORCES_MARKER

SEED = "#1273"


class Kind(str, enum.Enum):
    """What kind of requirement an entry is (see the module docstring)."""

    SEED = "seed"
    SEED_DEVIABLE = "seed-deviable"
    CONVENTION = "convention"
    OPTIONAL = "optional"


KIND_MEANING: Mapping[Kind, str] = {
    Kind.SEED: "#1273 requirement every implementation keeps",
    Kind.SEED_DEVIABLE: "#1273 requirement a variant may replace (declared deviation)",
    Kind.CONVENTION: "contract convention: #1273 leaves it open, the suite fixes it",
    Kind.OPTIONAL: "optional extra beyond #1273",
}

# the sections of #1273 quoted below
S_INTRO = "What to build"
S_LOSS = "StepOutputLoss (in fme/core/loss.py, alongside StepLoss)"
S_C1 = "Commit 1 — pre-corrector optimization (from #1222)"
S_C2 = "Commit 2 — corrector regularization (from #1218, single-module only)"
S_CONFIG = "Config (single CorrectorLossConfig, in new fme/core/corrector/loss.py)"
S_TRAIN = "TrainStepper integration"
S_ACCEPT = "Acceptance criteria"
S_ORIG = "Original two-config design (superseded — kept for posterity)"
S_ORIG_C1 = f"{S_ORIG}, Commit 1 — pre-corrector optimization (adopt from #1222 as-is)"
S_ORIG_C2 = f"{S_ORIG}, Commit 2 — corrector regularization (adopt from #1218, single-module only)"


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One requirement.

    Attributes:
        id: stable short id, ``<AREA>-<n>`` (e.g. ``"SWAP-1"``).
        text: what an implementation must do, in the suite's words.
        source: for ``seed`` / ``seed-deviable``: the verbatim sentence of
            #1273; for a convention: why the suite fixes it; for an optional
            extra: where it comes from.
        kind: see :class:`Kind`.
        section: the section of #1273 quoted (seed kinds), else ``""``.
        capability: the ``conformance.adapter.Capability`` value whose checks
            exercise this requirement, when it is optional behaviour an
            adapter declares (``""`` when every implementation is checked).
    """

    id: str
    text: str
    source: str
    kind: Kind
    section: str = ""
    capability: str = ""

    def __post_init__(self) -> None:
        head, _, number = self.id.rpartition("-")
        if not head or not number.isdigit() or self.id != self.id.strip().upper():
            raise ValueError(f"requirement id {self.id!r} is not like 'SWAP-1'")
        if not isinstance(self.kind, Kind):
            raise ValueError(f"{self.id}: kind must be a Kind, got {self.kind!r}")
        if self.kind in (Kind.SEED, Kind.SEED_DEVIABLE) and not self.section:
            raise ValueError(f"{self.id}: a seed requirement quotes a section of {SEED}")
        if not self.text.strip() or not self.source.strip():
            raise ValueError(f"{self.id}: text and source must not be empty")

    @property
    def cites(self) -> str:
        """The source as one line: ``#1273 (<section>): "<quote>"`` or the reason."""
        if self.kind in (Kind.SEED, Kind.SEED_DEVIABLE):
            return f'{SEED} ({self.section}): "{self.source}"'
        return self.source


R = Requirement
REQUIREMENTS: tuple[Requirement, ...] = (
    # ---------------------------------------------------------- the loss object
    R(
        "SWAP-1",
        "Pre-corrector optimization: every corrected variable not excluded is scored "
        "on its uncorrected value in the main loss; the rest on the corrected value.",
        "Realized inside StepOutputLoss.__call__: the main-loss target overrides corrected "
        "values with step_output.uncorrected for every corrector-modified variable not "
        "matched by the exclusion matcher, then defers to the wrapped StepLoss.",
        Kind.SEED,
        S_C1,
    ),
    R(
        "NORM-1",
        "Both the main loss and the penalty are taken in loss-normalized space "
        "((x - mean) / std of the loss normalizer).",
        "Both features operate in the stepper's loss-normalized space (get_loss_normalizer), "
        "consistent with how StepLoss already normalizes, so there is no normalizer mismatch "
        "between the main loss and the penalty.",
        Kind.SEED,
        S_INTRO,
    ),
    R(
        "MATCH-1",
        "Exclusions use the shared name-and-prefix rules: bare x = x and every x_<n>; "
        "prefix x_ = every x_<n>; explicit x_<n> = exactly that; names are literal text.",
        "exclude_names_and_prefixes uses the shared name-and-prefix matcher consolidated "
        "with the spatial-masking convention (bare name matches 2D + all 3D levels, "
        "trailing-underscore prefix matches all levels, explicit name_<level> matches "
        "exactly).",
        Kind.SEED_DEVIABLE,
        S_C1,
        capability="exclusion-matcher",
    ),
    R(
        "NAMES-1",
        "Variable names and selection entries are literal text: a name with regex "
        "metacharacters ('u[0]', 'x+(1)', 'a.b') is matched exactly as written, in "
        "whatever vocabulary the implementation selects with (exclusions or opt-in).",
        "exclude_names_and_prefixes uses the shared name-and-prefix matcher consolidated "
        "with the spatial-masking convention (bare name matches 2D + all 3D levels, "
        "trailing-underscore prefix matches all levels, explicit name_<level> matches "
        "exactly).",
        Kind.SEED,
        S_C1,
    ),
    R(
        "WARN-1",
        "An exclusion entry that matches no corrected variable is reported by a "
        "UserWarning on the first step with corrections: each unmatched entry named "
        "exactly once over the loss object's life (one warning listing all, or one per "
        "entry), nothing after that step, matched entries never named; the loss still "
        "computes.",
        "The exclusion matcher and its warn-once validation of unmatched entries live on "
        "the loss object, since it is what sees step_output.uncorrected.keys() each step.",
        Kind.SEED_DEVIABLE,
        S_LOSS,
        capability="warn-once-unmatched",
    ),
    R(
        "WARN-2",
        "Entries that all match a corrected variable are valid: no warning, no error.",
        "Warn-once runtime validation of exclusion entries against the actual "
        "corrector-modified variable set on the first training step, so config typos "
        "surface instead of silently doing nothing.",
        Kind.SEED,
        S_ORIG_C1,
    ),
    R(
        "RAISE-1",
        "An implementation that rejects an unmatched entry (instead of warning) raises "
        "an error naming the entry, at build time or on the first call.",
        "Not in #1273 (which warns); an alternative some implementations choose (fme "
        "2026.10.0 raises). Checked only when the adapter declares raise-on-unmatched.",
        Kind.OPTIONAL,
        capability="raise-on-unmatched",
    ),
    R(
        "ROLLOUT-1",
        "The loss does not modify its inputs (keys, tensor objects, values of output, "
        "uncorrected and target), so rollout state stays fully corrected.",
        "Rollout state and returned predictions always use fully corrected outputs; only "
        "the loss target changes.",
        Kind.SEED,
        S_C1,
    ),
    R(
        "REG-1",
        "The penalty is weight x L_reg(correction / std, 0) with corrections derived as "
        "output - uncorrected over the corrected keys, against a zero baseline.",
        "Derives corrections as output − uncorrected over the sparse corrected keys "
        "(subsuming Add corrector regularization to training #1218's separate dense "
        "corrections payload — no extra field on StepOutput is needed) and penalizes them "
        "against a zero baseline.",
        Kind.SEED,
        S_C2,
    ),
    R(
        "REG-2",
        "The penalty averages over the corrected channels only (not diluted by the "
        "uncorrected ones).",
        "Penalty is the mean over corrected channels only (consistent with PR2's "
        "channel_mean), realized via the existing LossOutput active-channel masking.",
        Kind.SEED,
        S_C2,
    ),
    R(
        "REG-3",
        "The penalty has no step decay; only its weight (linearly) scales it. The main "
        "loss keeps its sqrt step decay.",
        "The reg term carries no per-step decay (only weight scales it, matching Add "
        "corrector regularization to training #1218); document the asymmetry vs the main "
        "loss's sqrt_loss_step_decay in the config docstring.",
        Kind.SEED,
        S_C2,
    ),
    R(
        "REG-4",
        "The penalty is configured with a general loss config (so an area-weighted "
        "penalty is possible).",
        "A regularization config wrapping a loss config plus weight; __post_init__ "
        "validation rejects ensemble losses, NaN losses, and global-mean loss types.",
        Kind.SEED_DEVIABLE,
        S_ORIG_C2,
        capability="loss-config-regularization",
    ),
    R(
        "TOTAL-1",
        "result.total() == main.total() + regularization (main without the penalty).",
        "StepOutputLossResult exposes .main (a LossOutput), .regularization (a Tensor | "
        "None), and .total() == main.total() + regularization.",
        Kind.SEED,
        S_LOSS,
    ),
    R(
        "NEEDS-1",
        "needs_uncorrected_grad is True iff pre-corrector optimization or regularization "
        "is configured.",
        "Exposes needs_uncorrected_grad: bool (true iff either feature is configured), "
        "used by the stepper to decide detaching.",
        Kind.SEED_DEVIABLE,
        S_LOSS,
    ),
    R(
        "PASS-1",
        "With no corrector loss the object is a pass-through: its result equals the "
        "wrapped step loss's.",
        "Always builds one StepOutputLoss (a pass-through to StepLoss when corrector_loss "
        "is None), so _accumulate_loss has a single uniform call site with no per-feature "
        "branching.",
        Kind.SEED,
        S_TRAIN,
    ),
    R(
        "GRAD-1",
        "With either feature on, gradients flow through the correction: through "
        "uncorrected, including the (C' - I) term, to corrector-dependent parameters.",
        "Gradients flow through the correction (e.g. corrector-dependent parameters "
        "receive grad) when either feature is configured",
        Kind.SEED,
        S_ACCEPT,
    ),
    R(
        "DETACH-1",
        "Plain (inference) prediction returns the pre-correction values (or deltas) "
        "detached from the autograd graph.",
        "plain prediction still detaches.",
        Kind.SEED,
        S_ACCEPT,
    ),
    R(
        "ACCUM-1",
        "Backwarding each step's total at once works for 1..N calls of one loss object: "
        "no backward through a freed graph, accumulated gradients = the sum of the "
        "per-step gradients.",
        "Accumulates result.total() once per optimized step, which structurally "
        "eliminates the double-backward-under-gradient-accumulation error (no separate "
        "accumulate_loss call for the penalty to backward a freed graph).",
        Kind.SEED,
        S_TRAIN,
    ),
    R(
        "ACCUM-2",
        "Training with use_gradient_accumulation=True over 1..N steps: per-step totals "
        "and the accumulated gradients through the corrections are those of the closed "
        "form with rollout state detached between steps.",
        "Both features work under use_gradient_accumulation=True: the accumulation path "
        "detaches rollout state between steps, and tests show per-step losses/penalties "
        "and gradients through corrections survive it (the single result.total() "
        "accumulation must not double-backward a freed graph).",
        Kind.SEED,
        S_ACCEPT,
        capability="gradient-accumulation",
    ),
    R(
        "ENSEMBLE-1",
        "The loss unfolds the ensemble dimension itself (n_ensemble fixed at build); "
        "members of one sample are grouped together.",
        "Call signature: __call__(step_output, target_step, step, data_mask) -> "
        "StepOutputLossResult, unfolding the ensemble dim internally (n_ensemble fixed at "
        "build).",
        Kind.SEED_DEVIABLE,
        S_LOSS,
        capability="ensemble",
    ),
    # ---------------------------------------------------------- configs
    R(
        "CONFIG-1",
        "One combined corrector-loss config holds both features; it rejects both being "
        "None with a ValueError.",
        "Holds precorrector_optimization: PreCorrectorOptimizationConfig | None and "
        "regularization: CorrectorRegularizationConfig | None; its __post_init__ errors if "
        "both are None.",
        Kind.SEED_DEVIABLE,
        S_CONFIG,
        capability="corrector-config",
    ),
    R(
        "CONFIG-2",
        "The regularization config rejects ensemble, NaN and global-mean loss types "
        "with a ValueError.",
        "CorrectorRegularizationConfig.__post_init__ rejects ensemble losses, NaN losses, "
        "and global-mean loss types.",
        Kind.SEED_DEVIABLE,
        S_CONFIG,
        capability="regularization-loss-types",
    ),
    R(
        "COMPOSE-1",
        "Either feature alone and both together are valid configs.",
        "Combining the two features is first-class (one config carries both); no "
        "validation forbids it, and the interaction is documented in the config "
        "docstrings.",
        Kind.SEED,
        S_CONFIG,
    ),
    # ---------------------------------------------------------- the train stepper
    R(
        "ENABLED-1",
        "Building a train stepper with a corrector loss around a step without a corrector "
        "raises an error that mentions the corrector.",
        "The TrainStepper raises at build time if corrector_loss is configured but "
        "corrector_enabled is False (a config mistake that would otherwise train standard "
        "with no signal).",
        Kind.SEED,
        S_C1,
    ),
    R(
        "DEFAULT-1",
        "Without a corrector loss, a step without a corrector trains as before (the plain "
        "main loss).",
        "All new configs are optional with defaults preserving current behavior; existing "
        "checkpoints load unchanged.",
        Kind.SEED,
        S_ACCEPT,
    ),
    R(
        "METRICS-1",
        "Training logs loss_step_{i} from the main loss (without the penalty), and with "
        "regularization corrector_regularization_step_{i} and corrector_regularization; "
        "without it, no penalty metrics.",
        "Metrics preserved: loss_step_{i} from .main, corrector_regularization_step_{i} "
        "from .regularization, epoch-aggregated corrector_regularization, per-channel "
        "losses from .main.",
        Kind.SEED,
        S_TRAIN,
    ),
    # ---------------------------------------------------------- contract conventions
    R(
        "CONV-MAIN-1",
        "Main loss of step s: main_k = (1 + c*s)^-1/2 * L(w_k * norm(p_k), w_k * norm(y_k)) "
        "with the per-variable weight w_k applied to the normalized values inside the "
        "loss (not to the loss); main_total = mean_k main_k.",
        "#1273 wraps 'the existing StepLoss' without restating it; the suite fixes fme's "
        "StepLoss formula so that the main loss has one expected value.",
        Kind.CONVENTION,
    ),
    R(
        "CONV-AREA-1",
        "AreaWeightedMSE: per channel, sum_ij a_ij (p - y)_ij^2 / sum_ij a_ij (area "
        "weights normalized by their sum), averaged over samples (and members).",
        "#1273 does not define the loss types; the suite fixes fme's area-weighted mean.",
        Kind.CONVENTION,
        capability="area-weighted",
    ),
    R(
        "CONV-ENS-1",
        "MSE / L1 with an ensemble: each member against the sample's target, then the "
        "mean over members and samples. EnsembleLoss is the fair CRPS, per point: "
        "mean_i |x_i - y| - sum_{i != j} |x_i - x_j| / (2 m (m - 1)) for m members, then "
        "the mean over points and samples.",
        "#1273 says the loss unfolds the ensemble dim but not how a deterministic loss or "
        "CRPS treats members; the suite fixes fme's formulas.",
        Kind.CONVENTION,
        capability="ensemble",
    ),
    R(
        "CONV-ZERO-1",
        "With regularization configured and nothing corrected (uncorrected empty), "
        "regularization is a finite 0 tensor, not None (None means regularization off).",
        "#1273 types .regularization as Tensor | None and requires total() == "
        "main.total() + regularization; the suite fixes 0 so the total is defined on a "
        "step without corrections and None keeps meaning 'not configured'.",
        Kind.CONVENTION,
    ),
    R(
        "CONV-METRIC-1",
        "The batch metric corrector_regularization is the sum of the per-step penalties "
        "(the penalty's share of the optimized loss), so loss == sum_i loss_step_i + "
        "corrector_regularization.",
        "#1273 names the epoch-aggregated corrector_regularization without saying how a "
        "batch's steps combine; the suite fixes the sum (what is optimized).",
        Kind.CONVENTION,
    ),
    R(
        "CONV-HYGIENE-1",
        "Per-call graph hygiene: each call builds its own graph from its inputs; one "
        "call's result can be backwarded after the next call, and no call keeps an "
        "earlier call's graph alive.",
        "#1273 requires accumulation without a double backward; the suite states what "
        "that means for a loss object called once per step.",
        Kind.CONVENTION,
    ),
    # ---------------------------------------------------------- optional extras
    R(
        "AREA-1",
        "The main loss supports AreaWeightedMSE with the case's area weights.",
        "Not in #1273; fme's StepLoss offers it. Checked with the area-weighted capability.",
        Kind.OPTIONAL,
        capability="area-weighted",
    ),
    R(
        "MASK-1",
        "data_mask (per variable, True = valid, same for all members of a sample): masked "
        "points contribute 0 to the main loss and to the penalty and still count in the "
        "mean's denominator.",
        "#1273's call signature takes data_mask but does not define it; the suite's "
        "reading (a contract convention) is checked only with the data-mask capability.",
        Kind.OPTIONAL,
        capability="data-mask",
    ),
    R(
        "INPUT-1",
        "Bad inputs (a missing loss variable, an uncorrected key outside output, a "
        "wrong shape) raise an error naming the variable (and the mapping it is missing "
        "from).",
        "Not in #1273; this project's rule for clear errors. Checked with the "
        "bad-input-validation capability.",
        Kind.OPTIONAL,
        capability="bad-input-validation",
    ),
    R(
        "DIST-1",
        "Data-parallel training on torch.distributed gives the metrics and gradients of "
        "one process on the whole batch (metrics reduced as sample-weighted means).",
        "Not in #1273; fme and the reference train data-parallel. Checked through the "
        "distributed hook.",
        Kind.OPTIONAL,
        capability="distributed",
    ),
    # ---------------------------------------------------------- added by #14 (suite sensitivity)
    R(
        "STATE-1",
        "Each call's values follow from that call's inputs alone: the corrected set may "
        "change from call to call (an empty step, then corrections, then another set) "
        "and every call is still right; two loss objects in one process share no state "
        "(values, warn-once).",
        "The exclusion matcher and its warn-once validation of unmatched entries live on "
        "the loss object, since it is what sees step_output.uncorrected.keys() each step.",
        Kind.SEED,
        S_LOSS,
    ),
    R(
        "PREDICT-1",
        "Plain prediction returns the corrected outputs, equal to the corrected rollout "
        "(each step's corrected output feeds the next), with the pre-correction values "
        "of the corrected variables beside them.",
        "Rollout state and returned predictions always use fully corrected outputs; only "
        "the loss target changes.",
        Kind.SEED,
        S_C1,
        capability="stepper",
    ),
    R(
        "METRICS-2",
        "Per-channel training metrics (loss/<name>), when reported, are the main loss's "
        "per-channel values (target swap and step decay applied), over the batch's steps.",
        "Metrics preserved: loss_step_{i} from .main, corrector_regularization_step_{i} "
        "from .regularization, epoch-aggregated corrector_regularization, per-channel "
        "losses from .main.",
        Kind.SEED,
        S_TRAIN,
        capability="stepper",
    ),
    R(
        "METRICS-3",
        "The epoch-aggregated corrector_regularization is the mean of the batches' values "
        "weighted by their numbers of samples.",
        "Per-step (corrector_regularization_step_{i}) and epoch-aggregated "
        "(corrector_regularization) metrics; the trainer's standard batch_ prefix yields "
        "batch_corrector_regularization with no extra work.",
        Kind.SEED,
        S_C2,
        capability="epoch-aggregation",
    ),
    R(
        "WARN-3",
        "A corrector that ran but returned an empty uncorrected (with a corrector loss "
        "configured) is reported once, on the first step, by a UserWarning mentioning "
        "uncorrected; training goes on. Once means once per stepper, whatever Python's "
        "warning filters do (the check records every warning: a stepper that warns on "
        "every batch and relies on the default filter's de-duplication is not once).",
        "A first-step warn-once covers the case where a corrector runs but uncorrected "
        "comes back empty.",
        Kind.SEED,
        S_C1,
        capability="empty-uncorrected-warning",
    ),
    R(
        "TRAIN-ENS-1",
        "Training with n_ensemble > 1: each sample's initial state is repeated for its "
        "members (members of a sample adjacent) and the metrics and gradients are the "
        "closed form's.",
        "Not in #1273 beyond the loss unfolding the ensemble dim; the reference's stepper "
        "repeats the initial condition per member. Checked with the train-ensemble "
        "capability.",
        Kind.OPTIONAL,
        capability="train-ensemble",
    ),
    R(
        "CONFIG-3",
        "An invalid regularization weight (0, negative, NaN, +inf, -inf) is rejected with "
        "a ValueError whose message mentions the weight.",
        "Not in #1273 (which says 'a reg weight'); the reference requires a finite weight "
        "> 0. Checked with the regularization-weight-validation capability.",
        Kind.OPTIONAL,
        capability="regularization-weight-validation",
    ),
    R(
        "DIST-2",
        "Data-parallel training with uneven shares (3 samples on 2 ranks: 2 + 1) still "
        "gives one process's metrics and gradients on the whole batch (weighted by each "
        "rank's samples).",
        "Not in #1273; the reference weights by samples. An implementation whose loader "
        "always pads to equal shares need not declare distributed-uneven-shares.",
        Kind.OPTIONAL,
        capability="distributed-uneven-shares",
    ),
    R(
        "ERRMSG-1",
        "A config error names what is wrong: a rejected loss type's error names the type "
        "(or the global-mean setting), not just any ValueError.",
        "This project's rule: bad input gets a clear error naming the offending setting "
        "and the fix.",
        Kind.CONVENTION,
    ),
)
del R

BY_ID: Mapping[str, Requirement] = {r.id: r for r in REQUIREMENTS}
if len(BY_ID) != len(REQUIREMENTS):  # pragma: no cover - a typo in the table
    raise ValueError("duplicate requirement ids")

REQUIREMENT_OF_CAPABILITY: Mapping[str, str] = {
    r.capability: r.id for r in REQUIREMENTS if r.capability and r.kind is not Kind.CONVENTION
}
"""Capability value -> the requirement (not a convention) its checks exercise."""

HOOK_CAPABILITIES: frozenset[str] = frozenset({"stepper", "distributed"})
"""Capabilities that are adapter *hooks*: an adapter that lacks one says
nothing about the implementation, so its checks are "not exercised" (never
"not applicable")."""

DEVIABLE: frozenset[str] = frozenset(r.id for r in REQUIREMENTS if r.kind is Kind.SEED_DEVIABLE)


def unknown_ids(ids: Iterable[str]) -> list[str]:
    return [i for i in ids if i not in BY_ID]


F = TypeVar("F", bound=Callable[..., Any])


def enforces(*ids: str) -> Callable[[F], F]:
    """``@enforces("SWAP-1", ...)``: the requirement(s) a check enforces (it
    fails when one of them is violated). Unknown ids are an error at import."""
    if not ids:
        raise ValueError("@enforces needs at least one requirement id")
    bad = unknown_ids(ids)
    if bad:
        raise ValueError(
            f"@enforces: unknown requirement id(s) {bad}; see conformance/requirements.py"
        )
    return getattr(pytest.mark, ENFORCES_MARKER)(*ids)  # type: ignore[no-any-return]


def enforced_by(function: Callable[..., Any]) -> tuple[str, ...]:
    """The ids a check function's ``@enforces`` markers name (in order)."""
    ids: list[str] = []
    for mark in getattr(function, "pytestmark", []):
        if getattr(mark, "name", None) == ENFORCES_MARKER:
            ids.extend(mark.args)
    return tuple(dict.fromkeys(ids))


def audit(
    checks: Mapping[str, Callable[..., Any]],
    requirements: Iterable[Requirement] = REQUIREMENTS,
) -> list[str]:
    """Problems with the traceability of ``checks`` (``check id -> function``)
    against ``requirements``: a check that cites none, a cited id that is not
    a requirement, a requirement that no check cites. Empty when all is well."""
    table = {r.id: r for r in requirements}
    problems: list[str] = []
    cited: set[str] = set()
    for name, function in sorted(checks.items()):
        ids = enforced_by(function)
        if not ids:
            problems.append(f"check {name} cites no requirement (add @enforces(...))")
        for i in ids:
            if i not in table:
                problems.append(f"check {name} cites {i!r}, which is not a requirement")
        cited.update(ids)
    for rid in table:
        if rid not in cited:
            problems.append(f"requirement {rid} has no check")
    return problems


def _value(capability: object) -> str:
    return str(getattr(capability, "value", capability))


def item_requirements(
    enforced: Iterable[str],
    required: Iterable[object],
    param_required: Iterable[object],
    declared: Iterable[object] | None = None,
) -> tuple[list[str], list[str]]:
    """The requirements one check item exercises, and those to blame if it fails.

    Args:
        enforced: the ids of the check function's ``@enforces``.
        required: every capability the item needs (markers and parameters).
        param_required: the capabilities its parameters alone need.
        declared: for a check without parameters, the adapter's capabilities
            (a property check draws its cases from them); None otherwise.

    A requirement tied to a capability counts only for items that need that
    capability (``check_pass_through[main-MSE]`` does not exercise
    ``AREA-1``), or, for a check without parameters, when the adapter
    declares it. A failure is blamed on the requirements its *parameters*
    bring in (``[main-AreaWeightedMSE]`` -> ``AREA-1``), if any, else on all
    of the item's; the report then clears a requirement that sibling items
    of the same check pass, while another blamed one remains.
    """
    need = {_value(c) for c in required} | {_value(c) for c in declared or ()}
    from_params = {_value(c) for c in param_required}
    ids = [
        i for i in dict.fromkeys(enforced) if not BY_ID[i].capability or BY_ID[i].capability in need
    ]
    blame = [i for i in ids if BY_ID[i].capability and BY_ID[i].capability in from_params]
    # the extra itself before its formula convention (AREA-1, not CONV-AREA-1)
    blame = [i for i in blame if BY_ID[i].kind is not Kind.CONVENTION] or blame
    return ids, blame or list(ids)


def skip_prefix(capability: object, deviations: Mapping[str, str]) -> tuple[str, str]:
    """How a check skipped for a missing ``capability`` is reported:
    ``(prefix, detail)``, the prefix one of :data:`NOT_APPLICABLE`,
    :data:`NOT_EXERCISED`, :data:`DEVIATES`.

    - the adapter declares a deviation from the capability's requirement:
      "deviates" (detail: ``<capability> (<id>: <reason>)``);
    - a hook (``stepper``, ``distributed``): "not exercised" (the adapter does
      not implement it; that says nothing about the implementation);
    - an optional extra the adapter does not declare: "not applicable";
    - anything else (a #1273 requirement neither supported nor declared as a
      deviation): "not exercised".
    """
    cap = _value(capability)
    rid = REQUIREMENT_OF_CAPABILITY.get(cap)
    if rid is not None and rid in deviations:
        return DEVIATES, f"{cap} ({rid}: {deviations[rid]})"
    if cap in HOOK_CAPABILITIES:
        return NOT_EXERCISED, cap
    if rid is not None and BY_ID[rid].kind is Kind.OPTIONAL:
        return NOT_APPLICABLE, cap
    return NOT_EXERCISED, cap


NOT_APPLICABLE = "not applicable: "
NOT_EXERCISED = "not exercised: "
DEVIATES = "deviates: "
SKIP_PREFIXES = (NOT_APPLICABLE, NOT_EXERCISED, DEVIATES)
"""The reasons of the suite's own skips (``<prefix><capability or ids>``)."""


def deviated_item(ids: Iterable[str], deviations: Mapping[str, str]) -> str | None:
    """The skip detail when every requirement of an item is one the adapter
    deviates from (``"NEEDS-1: <reason>"``), else None."""
    ids = list(ids)
    if ids and all(i in deviations for i in ids):
        return "; ".join(f"{i}: {deviations[i]}" for i in ids)
    return None


BREAKS = "breaks: "
"""The line a failure message carries to name the requirement(s) it broke."""


@contextlib.contextmanager
def breaking(*ids: str) -> Iterator[None]:
    """``with breaking("REG-2"): assert_close(...)``: a failure inside names
    the requirement(s) it breaks (a ``breaks: REG-2`` line the report reads),
    for a check that enforces several requirements with separate assertions."""
    bad = unknown_ids(ids)
    if bad or not ids:
        raise ValueError(f"breaking: unknown or no requirement id(s) {bad or list(ids)}")
    try:
        yield
    except Exception as err:  # an error of the implementation breaks it too
        if BREAKS in str(err):
            raise
        text = str(err) if isinstance(err, AssertionError) else f"{type(err).__name__}: {err}"
        raise AssertionError(f"{text}\n{BREAKS}{', '.join(ids)}") from err


def broken_ids(message: str) -> list[str]:
    """The ids of the ``breaks:`` line of a failure message (none: ``[]``)."""
    for line in message.splitlines():
        line = line.strip()
        if line.startswith(BREAKS):
            return [i.strip() for i in line[len(BREAKS) :].split(",") if i.strip() in BY_ID]
    return []


def validate_deviations(deviations: object) -> dict[str, str]:
    """An adapter's ``deviations``: ``{requirement id: one-line reason}``.
    Raises ``ValueError`` naming the problem (unknown id, a requirement that
    may not be deviated from, an empty or multi-line reason)."""
    if deviations is None:
        return {}
    if not isinstance(deviations, Mapping):
        raise ValueError(
            "deviations must be a mapping {requirement id: reason}, e.g. "
            f'{{"MATCH-1": "opt-in selection instead of exclusions"}}; got {deviations!r}'
        )
    out: dict[str, str] = {}
    for rid, reason in deviations.items():
        if rid not in BY_ID:
            raise ValueError(
                f"deviations names {rid!r}, which is not a requirement (see docs/requirements.md)"
            )
        if rid not in DEVIABLE:
            raise ValueError(
                f"deviations names {rid!r} ({BY_ID[rid].kind.value}): only "
                f"seed-deviable requirements can be deviated from ({sorted(DEVIABLE)})"
            )
        if not isinstance(reason, str) or not reason.strip() or "\n" in reason:
            raise ValueError(f"deviations[{rid!r}] must be a one-line reason, got {reason!r}")
        out[rid] = reason.strip()
    return out


def to_markdown(requirements: Iterable[Requirement] = REQUIREMENTS) -> str:
    """The table as Markdown (``docs/requirements.md``)."""
    lines = [
        "# Requirements of the StepOutputLoss conformance suite",
        "",
        "Generated by `python -m conformance.requirements > docs/requirements.md` from",
        "[`conformance/requirements.py`](../conformance/requirements.py); do not edit by hand.",
        "Every check names the requirement(s) it enforces (`@enforces(...)`); every",
        "requirement has at least one check. Kinds:",
        "",
    ]
    lines += [f"- **{k.value}**: {m}" for k, m in KIND_MEANING.items()]
    lines += [
        "",
        "Conventions are defined precisely in the docstring of",
        "[`conformance/adapter.py`](../conformance/adapter.py).",
        "",
        "| id | kind | capability | requirement | source |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in requirements:
        cells = [
            f"`{r.id}`",
            r.kind.value,
            f"`{r.capability}`" if r.capability else "",
            r.text,
            r.cites,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
