"""Hypothesis strategies of the conformance suite: random ``StepOutput``-shaped
inputs and loss specs, all in one place.

:func:`loss_cases` draws a :class:`PropertyCase`: a variable set mixing 2D
names and 3D ``<name>_<level>`` names (including names with regex
metacharacters and names that are prefixes of others: ``q`` vs ``q2m`` vs
``q_1``), a random corrected subset, random exclusion entries (bare, prefix,
explicit level, unmatched), per-variable weights, normalizer statistics, a
step and step-decay constant, an ensemble size and a shape. What it draws is
limited to what the adapter declares (:class:`conformance.adapter.Capability`).

Profiles (``--hypothesis-profile``): the suite's checks run a small,
derandomized number of examples by default (fast and reproducible in CI);
``--hypothesis-profile thorough`` runs :data:`THOROUGH_EXAMPLES` random
examples per property. A failure prints the minimal falsifying
``PropertyCase`` (its spec and the seed of its tensors) and a reproduction
blob.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import torch
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from conformance.adapter import (
    Capability,
    LossSpec,
    MainLossSpec,
    NormalizerSpec,
    PreCorrectorSpec,
    RegularizationSpec,
)
from conformance.oracle import select_for_exclusions, unmatched_entries
from conformance.plugin import SUITE_PROFILES

FAST_EXAMPLES = 15
THOROUGH_EXAMPLES = 400
# the names live in the light plugin, which registers these profiles on demand
THOROUGH, NO_SHRINK, MATRIX = SUITE_PROFILES
MATRIX_EXAMPLES = 5
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]

# Registered when the plugin is imported, so ``--hypothesis-profile`` finds them.
settings.register_profile(
    THOROUGH,
    max_examples=THOROUGH_EXAMPLES,
    deadline=None,
    suppress_health_check=_QUIET,
    print_blob=True,
)
# For runs that only need to know *whether* a property fails (the mutation
# matrix): the fast examples, no shrinking.
settings.register_profile(
    NO_SHRINK,
    max_examples=FAST_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=_QUIET,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
# For the mutation matrix only (tests/test_mutation_matrix.py), which runs the
# suite against every mutant: whether a property check kills *some* mutant
# needs few examples. Never used by a run that judges an implementation.
settings.register_profile(
    MATRIX,
    max_examples=MATRIX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=_QUIET,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


def property_settings() -> settings:
    """The settings of a property check. ``--hypothesis-profile thorough`` (or
    any profile asking for at least :data:`THOROUGH_EXAMPLES` examples) and
    ``--hypothesis-profile stepoutputloss-no-shrink`` are used as loaded;
    otherwise a fast, derandomized run of :data:`FAST_EXAMPLES` examples that
    shrinks a failure to a minimal case."""
    current = settings.default or settings()
    name = getattr(settings, "get_current_profile_name", lambda: "")()
    if name in SUITE_PROFILES or current.max_examples >= THOROUGH_EXAMPLES:
        return settings(current)
    return settings(
        current,
        max_examples=FAST_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=_QUIET,
        print_blob=True,
    )


# Stems: plain, with regex metacharacters, and prefixes of one another.
STEMS: tuple[str, ...] = ("q", "q2m", "t", "ps", "a.b", "x+(1)", "u[0]")
UNMATCHED: tuple[str, ...] = ("zz", "nope_", "q_99", "a.b_7", "x+", "t2")


@dataclasses.dataclass(frozen=True, eq=False)
class PropertyCase:
    """One drawn case: the spec plus the seed that makes its tensors.

    ``repr`` is the reproducer a failing property prints.
    """

    spec: LossSpec
    corrected: tuple[str, ...]
    exclude: tuple[str, ...] | None
    n_batch: int
    spatial: tuple[int, int]
    step: int
    seed: int

    def __repr__(self) -> str:
        s = self.spec
        reg = None if s.regularization is None else dataclasses.asdict(s.regularization)
        return (
            f"PropertyCase(names={list(s.names)}, corrected={list(self.corrected)}, "
            f"exclude={None if self.exclude is None else list(self.exclude)}, "
            f"main={dataclasses.asdict(s.main)}, regularization={reg}, "
            f"n_ensemble={s.n_ensemble}, n_batch={self.n_batch}, spatial={self.spatial}, "
            f"step={self.step}, seed={self.seed}, means={dict(s.normalizer.means)}, "
            f"stds={dict(s.normalizer.stds)})"
        )

    def tensors(
        self,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(output, uncorrected, target)`` in physical units (float32)."""
        g = torch.Generator().manual_seed(self.seed)
        rows = self.n_batch * self.spec.n_ensemble
        means, stds = self.spec.normalizer.means, self.spec.normalizer.stds

        def field(n: str, n_rows: int, scale: float = 1.0) -> torch.Tensor:
            return means[n] + scale * stds[n] * torch.randn((n_rows, *self.spatial), generator=g)

        output = {n: field(n, rows) for n in self.spec.names}
        uncorrected = {
            n: output[n] - 0.5 * stds[n] * torch.randn((rows, *self.spatial), generator=g)
            for n in self.corrected
        }
        target = {n: field(n, self.n_batch) for n in self.spec.names}
        return output, uncorrected, target


@st.composite
def variable_names(draw: st.DrawFn, allow_both: bool = True) -> tuple[str, ...]:
    """1 to 4 stems, each 2D (``x``), 3D (``x_0`` ... ``x_<n>``) or, with
    ``allow_both``, both (``x`` beside ``x_0`` ...)."""
    stems = draw(st.lists(st.sampled_from(STEMS), min_size=1, max_size=4, unique=True))
    names: list[str] = []
    for stem in stems:
        kind = draw(st.sampled_from(("2d", "3d", "both") if allow_both else ("2d", "3d")))
        if kind in ("2d", "both"):
            names.append(stem)
        if kind in ("3d", "both"):
            names += [f"{stem}_{i}" for i in range(draw(st.integers(1, 3)))]
    return tuple(names)


@st.composite
def exclusion_entries(
    draw: st.DrawFn, names: tuple[str, ...], allow_unmatched: bool
) -> tuple[str, ...]:
    """Bare stems, level prefixes, explicit levels and (optionally) entries
    that match nothing."""
    pool: set[str] = set()
    for n in names:
        stem, sep, level = n.rpartition("_")
        if sep and level.isdigit():
            pool |= {stem, stem + "_", n}
        else:
            pool.add(n)
    if allow_unmatched:
        pool |= set(UNMATCHED)
    return tuple(draw(st.lists(st.sampled_from(sorted(pool)), max_size=4, unique=True)))


# Means are drawn as multiples of the std: a float32 implementation cannot
# resolve loss-normalized values of a variable whose |mean| / std is huge.
_MEAN_IN_STDS = st.sampled_from((0.0, -3.0, 1.5, 20.0))
_STD = st.sampled_from((0.01, 0.25, 1.0, 3.0, 40.0))
_WEIGHT = st.sampled_from((0.1, 0.5, 1.0, 2.0, 3.0))


@st.composite
def loss_cases(
    draw: st.DrawFn,
    capabilities: Collection[Capability],
    precorrector: bool | None = None,
    regularization: bool | None = None,
) -> PropertyCase:
    """A random case the adapter supports. ``precorrector`` / ``regularization``:
    force the feature on (True) or off (False); None draws it."""
    caps = set(capabilities)
    # opt-in selections are exact names (see PreCorrectorSpec.select_names): a
    # bare ``x`` cannot select a 2D ``x`` without its levels, so such
    # adapters get no variable that is both ``x`` and a stem of levels.
    names = draw(variable_names(allow_both=Capability.EXCLUSION_MATCHER in caps))
    corrected = tuple(n for n in names if draw(st.booleans()))
    n_ensemble = draw(st.sampled_from((1, 2, 3))) if Capability.ENSEMBLE in caps else 1
    main_types = ["MSE", "L1"]
    if Capability.AREA_WEIGHTED in caps:
        main_types.append("AreaWeightedMSE")
    if Capability.ENSEMBLE in caps and n_ensemble > 1:
        main_types.append("EnsembleLoss")
    weighted = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    main = MainLossSpec(
        loss_type=draw(st.sampled_from(main_types)),
        weights={n: draw(_WEIGHT) for n in weighted},
        sqrt_loss_step_decay_constant=draw(st.sampled_from((0.0, 0.5, 2.0))),
    )
    pre_on = draw(st.booleans()) if precorrector is None else precorrector
    exclude: tuple[str, ...] | None = None
    pre = None
    if pre_on:
        allow_unmatched = Capability.WARN_ONCE_UNMATCHED in caps
        if Capability.EXCLUSION_MATCHER in caps:
            exclude = draw(exclusion_entries(names, allow_unmatched))
        else:  # opt-in vocabulary: only entries that can be expressed as names
            exclude = draw(exclusion_entries(corrected, allow_unmatched)) if corrected else ()
        if not allow_unmatched and unmatched_entries(exclude, corrected):
            exclude = tuple(e for e in exclude if not unmatched_entries((e,), corrected))
        pre = PreCorrectorSpec(
            exclude_names_and_prefixes=exclude,
            select_names=select_for_exclusions(exclude, corrected),
        )
    reg_on = draw(st.booleans()) if regularization is None else regularization
    reg = None
    if reg_on:
        reg_types = ["MSE", "L1"]
        if Capability.LOSS_CONFIG_REGULARIZATION in caps and Capability.AREA_WEIGHTED in caps:
            reg_types.append("AreaWeightedMSE")
        reg = RegularizationSpec(
            loss_type=draw(st.sampled_from(reg_types)),
            weight=draw(st.sampled_from((0.01, 0.3, 1.0, 7.5))),
        )
    stds = {n: draw(_STD) for n in names}
    spatial = (draw(st.integers(1, 3)), draw(st.integers(1, 4)))
    area = torch.linspace(1.0, 2.0, spatial[0]).unsqueeze(1).expand(spatial).clone()
    spec = LossSpec(
        names=names,
        normalizer=NormalizerSpec(
            means={n: draw(_MEAN_IN_STDS) * stds[n] for n in names}, stds=stds
        ),
        main=main,
        n_ensemble=n_ensemble,
        precorrector=pre,
        regularization=reg,
        corrected_names=corrected,
        area_weights=area,
    )
    return PropertyCase(
        spec=spec,
        corrected=corrected,
        exclude=exclude,
        n_batch=draw(st.integers(1, 3)),
        spatial=spatial,
        step=draw(st.integers(0, 10)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )
