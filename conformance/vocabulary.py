"""Fixed cases of the name-and-prefix vocabulary and of state across calls:
hand-written, so every run exercises them (the property checks draw only a
few random examples outside ``--hypothesis-profile thorough``).

Each :class:`VocabularyCase` is a variable set built around one trap of the
matcher:

- a stem with a non-digit suffix (``x_a``, ``u_star``): not a level;
- a 2D name that is a prefix of another (``t`` and ``t2``);
- levels with different digit counts (``q_1``, ``q_10``, ``q_100``);
- a 2D ``x`` beside its own levels ``x_<n>``;
- multi-part names (``x_1_2``: level 2 of ``x_1``).

Each :class:`Rule` lists exclusion entries with the corrected variables that
stay *swapped* (written by hand from the rules of
``conformance/adapter.py``; ``tests/test_sensitivity_cases.py`` checks them
against the oracle). :attr:`VocabularyCase.warn_entries` mixes matched
entries with unmatched ones, for the warn-once checks.

One combination is left out on purpose: an explicit-level entry ``x_1`` when
``x_1_<n>`` names exist. #1273 says "explicit name_<level> matches exactly",
but ``x_1`` is also the bare stem of ``x_1_2``; both readings are
reasonable, so no fixed case asks.

Tensors are float32, physical units, ``(n_batch, *spatial)``
(``n_ensemble`` 1), seeded per case.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from conformance.adapter import (
    LossSpec,
    MainLossSpec,
    NormalizerSpec,
    PreCorrectorSpec,
    RegularizationSpec,
)
from conformance.cases import WEIGHTED_MAIN
from conformance.oracle import select_for_exclusions

SPATIAL = (2, 3)
N_BATCH = 2


@dataclasses.dataclass(frozen=True)
class Rule:
    """Exclusion ``entries`` and the corrected variables that stay swapped."""

    entries: tuple[str, ...]
    swapped: frozenset[str]

    @property
    def id(self) -> str:
        return "+".join(self.entries)


@dataclasses.dataclass(frozen=True, eq=False)
class VocabularyCase:
    """One variable set of the vocabulary.

    Attributes:
        id: pytest id.
        names: the loss variables.
        corrected: the variables the corrector modifies.
        rules: entries and the corrected variables they leave swapped.
        warn_entries: entries for the warn-once checks (some matched, some not).
        unmatched: the entries of ``warn_entries`` that match no corrected
            variable (hand-written).
        seed: the tensors' seed.
    """

    id: str
    names: tuple[str, ...]
    corrected: tuple[str, ...]
    rules: tuple[Rule, ...]
    warn_entries: tuple[str, ...]
    unmatched: frozenset[str]
    seed: int

    def __repr__(self) -> str:
        return f"VocabularyCase({self.id})"

    @property
    def normalizer(self) -> NormalizerSpec:
        stds = {n: 0.5 + 0.75 * i for i, n in enumerate(self.names)}
        return NormalizerSpec(means={n: 3.0 * (i - 2) for i, n in enumerate(self.names)}, stds=stds)

    def spec(
        self,
        exclude: tuple[str, ...] | None,
        regularization: RegularizationSpec | None = None,
        corrected: tuple[str, ...] | None = None,
    ) -> LossSpec:
        corrected = self.corrected if corrected is None else corrected
        pre = None
        if exclude is not None:
            pre = PreCorrectorSpec(
                exclude_names_and_prefixes=exclude,
                select_names=select_for_exclusions(exclude, corrected),
            )
        return LossSpec(
            names=self.names,
            normalizer=self.normalizer,
            main=main_for(self.names),
            precorrector=pre,
            regularization=regularization,
            corrected_names=corrected,
            area_weights=torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]),
        )

    def tensors(
        self, corrected: tuple[str, ...] | None = None, seed_offset: int = 0
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(output, uncorrected, target)``; ``uncorrected`` holds ``corrected``
        (default: the case's)."""
        corrected = self.corrected if corrected is None else corrected
        g = torch.Generator().manual_seed(self.seed + seed_offset)
        norm = self.normalizer
        out, unc, tgt = {}, {}, {}
        for n in self.names:
            mean, std = norm.means[n], norm.stds[n]
            out[n] = mean + std * torch.randn((N_BATCH, *SPATIAL), generator=g)
            correction = 0.4 * std * torch.randn((N_BATCH, *SPATIAL), generator=g)
            tgt[n] = mean + std * torch.randn((N_BATCH, *SPATIAL), generator=g)
            if n in corrected:
                unc[n] = out[n] - correction
        return out, unc, tgt


def main_for(names: tuple[str, ...]) -> MainLossSpec:
    """The suite's weighted main loss, with a weight on this case's first name."""
    return dataclasses.replace(WEIGHTED_MAIN, weights={names[0]: 2.0})


def _rule(entries: tuple[str, ...], swapped: set[str]) -> Rule:
    return Rule(entries, frozenset(swapped))


@functools.cache
def vocabulary_cases() -> tuple[VocabularyCase, ...]:
    return (
        VocabularyCase(
            id="vocab-non-digit-suffix",
            names=("x", "x_a", "x_1", "u_star", "u_star_0", "u_2"),
            corrected=("x", "x_a", "x_1", "u_star", "u_star_0", "u_2"),
            rules=(
                _rule(("x",), {"x_a", "u_star", "u_star_0", "u_2"}),  # x_a is not a level of x
                _rule(("x_",), {"x", "x_a", "u_star", "u_star_0", "u_2"}),
                # u_star is not a level of u
                _rule(("u",), {"x", "x_a", "x_1", "u_star", "u_star_0"}),
                _rule(("u_",), {"x", "x_a", "x_1", "u_star", "u_star_0"}),
                # bare u_star: u_star and its level u_star_0
                _rule(("x_a", "u_star"), {"x", "x_1", "u_2"}),
            ),
            warn_entries=("x_", "u", "x_b", "u_st"),
            unmatched=frozenset({"x_b", "u_st"}),
            seed=101,
        ),
        VocabularyCase(
            id="vocab-2d-name-prefix-of-another",
            names=("t", "t2", "t2_0", "t_0", "t_1"),
            corrected=("t", "t2", "t2_0", "t_0", "t_1"),
            rules=(
                _rule(("t",), {"t2", "t2_0"}),
                _rule(("t2",), {"t", "t_0", "t_1"}),
                _rule(("t_",), {"t", "t2", "t2_0"}),
                _rule(("t2_",), {"t", "t2", "t_0", "t_1"}),
            ),
            warn_entries=("t2", "t_", "t_2", "t2_1"),
            unmatched=frozenset({"t_2", "t2_1"}),
            seed=102,
        ),
        VocabularyCase(
            id="vocab-level-digit-counts",
            names=("q_1", "q_2", "q_10", "q_100"),
            corrected=("q_1", "q_2", "q_10", "q_100"),
            rules=(
                _rule(("q_1",), {"q_2", "q_10", "q_100"}),
                _rule(("q_10",), {"q_1", "q_2", "q_100"}),
                _rule(("q_1", "q_100"), {"q_2", "q_10"}),
                _rule(("q",), set()),
                _rule(("q_",), set()),
            ),
            warn_entries=("q_1", "q_3", "q_1_"),
            unmatched=frozenset({"q_3", "q_1_"}),
            seed=103,
        ),
        VocabularyCase(
            id="vocab-2d-beside-its-levels",
            names=("x", "x_0", "x_1", "y"),
            corrected=("x", "x_1", "y"),
            rules=(
                _rule(("x",), {"y"}),
                _rule(("x_",), {"x", "y"}),
                _rule(("x_1",), {"x", "y"}),
                _rule(("x_0",), {"x", "x_1", "y"}),  # a level that was not corrected
            ),
            warn_entries=("x_", "x_0", "y_"),
            unmatched=frozenset({"x_0", "y_"}),
            seed=104,
        ),
        VocabularyCase(
            id="vocab-multi-part-names",
            names=("x_1", "x_1_2", "x_1_3", "x_2"),
            corrected=("x_1", "x_1_2", "x_1_3", "x_2"),
            rules=(
                _rule(("x_1_",), {"x_1", "x_2"}),
                _rule(("x_1_2",), {"x_1", "x_1_3", "x_2"}),
                _rule(("x",), {"x_1_2", "x_1_3"}),  # x_1_2 is a level of x_1, not of x
                _rule(("x_",), {"x_1_2", "x_1_3"}),
            ),
            warn_entries=("x_1_", "x_3", "x_1_9"),
            unmatched=frozenset({"x_3", "x_1_9"}),
            seed=105,
        ),
    )


def vocabulary_ids() -> list[str]:
    return [c.id for c in vocabulary_cases()]
