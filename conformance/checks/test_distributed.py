"""Data-parallel training (capability ``distributed``): two ranks of a
``torch.distributed`` process group (gloo, CPU), each training on its share
of a batch, give the gradients and the logged metrics of one process on the
whole batch.

The run: one ``train_on_batch`` of ``N_STEPS`` steps of the suite's step
(model parameter ``gain``, corrector parameter ``corrector.theta``) on a
global batch of ``N_BATCH`` samples split into contiguous shares of 2 + 2
in rank order -- and, with the capability ``distributed-uneven-shares``, of
``N_UNEVEN`` = 3 samples split 2 + 1 (a plain mean of the ranks' values,
unweighted by their samples, is then wrong); both corrector features on (and, as a baseline, neither), with
and without gradient accumulation: four configurations, run in one job on
the 2-rank group of :mod:`conformance.distributed` (spawned once per test
session and reused, so this check costs milliseconds after the first start;
loopback only; every wait bounded).

Expected values are the float64 oracle's on the whole batch (one process):
each step's optimized total (``TrainOutcome.step_totals``, or the contract's
``loss_step_{i}`` + ``corrector_regularization_step_{i}``) and ``loss`` (when
reported) from rank 0, which logs; the gradients of ``gain`` and ``theta``
from every rank. (Metric names are checked by ``test_train_metrics.py``.)
Every metric is a mean over samples, so the ranks' values must combine as a
(sample-weighted) mean: a failure says when the value equals one rank's own
share (not reduced) or the sum over ranks.

Tolerances: metrics ``RTOL``/``ATOL`` of :mod:`conformance.assertions`
(float32 against float64); gradients ``rtol=1e-4``, ``atol=1e-5 * max|g|``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from conformance import distributed, oracle
from conformance.adapter import (
    Batch,
    Capability,
    RegularizationSpec,
    StepOutputLossAdapter,
    StepperSpec,
)
from conformance.assertions import assert_close, fail
from conformance.cases import MEANS, SPATIAL, STDS, Option, main_case, pid
from conformance.corrector import SuiteStep, correct, model
from conformance.harness import describe
from conformance.plugin import requires
from conformance.requirements import enforces
from conformance.suite import impl_specs, item_impl, load_adapter, timeout_s

PROP = "data-parallel training equals one process on the whole batch"
N_BATCH = 4  # even shares on 2 ranks (2 + 2)
N_UNEVEN = 3  # uneven shares on 2 ranks (2 + 1)
N_STEPS = 2
WORLD_SIZE = distributed.WORLD_SIZE
GRADIENT_RTOL = 1e-4


def _configurations() -> list[Option]:
    reg = RegularizationSpec("MSE", weight=0.7)
    out = []
    for features, exclude, regularization in [
        ("features-both", ("q_2",), reg),
        ("features-none", None, None),
    ]:
        for accumulate in (False, True):
            name = f"{features}-{'accumulation' if accumulate else 'no-accumulation'}"
            out.append(Option(name, (exclude, regularization, accumulate, N_BATCH)))
    for accumulate in (False, True):
        name = f"features-both-uneven-{'accumulation' if accumulate else 'no-accumulation'}"
        out.append(
            Option(
                name,
                (("q_2",), reg, accumulate, N_UNEVEN),
                (Capability.DISTRIBUTED_UNEVEN_SHARES,),
            )
        )
    return out


def n_samples(config_id: str) -> int:
    return next(c for c in CONFIGURATIONS if c.id == config_id).value[3]


def split_text(n: int) -> str:
    sizes = [len(t) for t in torch.tensor_split(torch.arange(n), WORLD_SIZE)]
    return f"{n} split {' + '.join(map(str, sizes))}"


CONFIGURATIONS = _configurations()


def stepper_spec(config: Option) -> StepperSpec:
    exclude, regularization, accumulate, _ = config.value
    loss = main_case().spec(exclude=exclude, regularization=regularization)
    return StepperSpec(loss=loss, n_forward_steps=N_STEPS, use_gradient_accumulation=accumulate)


@functools.cache
def global_batch(n: int = N_BATCH) -> Batch:
    """``n`` samples (physical units, ``(n, *SPATIAL)``), every sample
    different, so one rank's share differs from the whole batch."""
    g = torch.Generator().manual_seed(2024)
    names = main_case().names

    def state() -> dict[str, torch.Tensor]:
        return {k: MEANS[k] + STDS[k] * torch.randn((n, *SPATIAL), generator=g) for k in names}

    return Batch(initial_state=state(), targets=tuple(state() for _ in range(N_STEPS)))


def share(batch: Batch, rank: int, world_size: int) -> Batch:
    """Rank ``rank``'s contiguous share (``torch.tensor_split`` of dim 0)."""

    def part(x: torch.Tensor) -> torch.Tensor:
        return torch.tensor_split(x, world_size, dim=0)[rank].clone()

    return Batch(
        initial_state={k: part(v) for k, v in batch.initial_state.items()},
        targets=tuple({k: part(v) for k, v in t.items()} for t in batch.targets),
    )


def suite_step() -> SuiteStep:
    case = main_case()
    norm = case.normalizer
    return SuiteStep(case.names, case.corrected, norm.means, norm.stds)


# ---------------------------------------------------------------- on the ranks


class ConfigurationFailed(RuntimeError):
    """The adapter raised on this rank in one configuration."""


def train_shares(impl: str, config_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """On every rank: the adapter's ``train_on_batch_distributed`` on this
    rank's share, per configuration. An exception stops the job on that rank
    (the other ranks may wait for it in a collective, so the group cannot go
    on): the parent names the rank, the configuration and the whole message
    (:class:`conformance.distributed.RankFailure`)."""
    import torch.distributed as dist

    adapter = load_adapter(impl)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    by_id = {c.id: c for c in CONFIGURATIONS}
    out: dict[str, dict[str, Any]] = {}
    for config_id in config_ids:
        try:
            step = suite_step()
            outcome = adapter.train_on_batch_distributed(
                stepper_spec(by_id[config_id]),
                step,
                share(global_batch(n_samples(config_id)), rank, world_size),
            )
            out[config_id] = {
                "metrics": {k: float(v) for k, v in outcome.metrics.items()},
                "step_totals": None
                if outcome.step_totals is None
                else [float(t) for t in outcome.step_totals],
                "gradients": {
                    k: None if g is None else g.detach().clone()
                    for k, g in outcome.gradients.items()
                },
            }
        except Exception as err:
            message = " ".join(f"{type(err).__name__}: {err}".split())
            raise ConfigurationFailed(
                f"train_on_batch_distributed raised in configuration {config_id}: {message}"
            ) from err
    return out


_results_key = pytest.StashKey[dict[str, list[dict[str, dict[str, Any]]]]]()
_failures_key = pytest.StashKey[dict[str, distributed.RankFailure]]()


@pytest.fixture
def rank_results(request: pytest.FixtureRequest) -> list[dict[str, dict[str, Any]]]:
    """Every configuration's per-rank results for the item's implementation:
    one job on the group per implementation and session, bounded by
    ``--stepoutputloss-timeout``. A failed job is not repeated: every
    distributed check of that implementation fails with its reason at once."""
    if not distributed.is_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    config = request.config
    spec = item_impl(request.node) or impl_specs(config)[0]
    cache = config.stash.setdefault(_results_key, {})
    failures = config.stash.setdefault(_failures_key, {})
    if spec not in cache and spec not in failures:
        try:
            cache[spec] = distributed.run_on_ranks(
                train_shares,
                spec,
                # the configurations the adapter declares what they need for
                [
                    c.id
                    for c in CONFIGURATIONS
                    if all(r in load_adapter(spec).capabilities for r in c.requires)
                ],
                timeout_s=timeout_s(config),
            )
        except distributed.RankFailure as err:
            failures[spec] = err
    if spec in failures:
        failed = failures[spec]
        fail(
            PROP,
            f"the distributed job failed, so this configuration was not verified: {failed.summary}",
            {"ranks": WORLD_SIZE},
            "every rank answers",
            str(failed),
        )
    return cache[spec]


# ---------------------------------------------------------------- expected


@dataclasses.dataclass
class Expected:
    metrics: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor]


def expected(spec: StepperSpec, batch: Batch, rows: slice = slice(None)) -> Expected:
    """The float64 oracle of one process training on ``batch``'s ``rows``."""
    loss = spec.loss
    step = suite_step()
    norm = loss.normalizer
    gain = step.gain.detach().double().requires_grad_(True)
    theta = step.corrector.theta.detach().double().requires_grad_(True)
    state = {k: v[rows].double() for k, v in batch.initial_state.items()}
    metrics: dict[str, torch.Tensor] = {}
    total = torch.zeros((), dtype=torch.float64)
    penalty_sum = torch.zeros((), dtype=torch.float64)
    for i in range(spec.n_forward_steps):
        target = {k: v[rows].double() for k, v in batch.targets[i].items()}
        raw = model(state, gain, norm.means, norm.stds)
        output, uncorrected = correct(raw, theta, step.corrector.corrected)
        predict = oracle.main_prediction(loss, output, uncorrected)
        main = oracle.main_total(oracle.main_per_channel(loss, predict, target, i))
        metrics[f"loss_step_{i}"] = main
        total = total + main
        metrics[f"total_step_{i}"] = main
        if loss.regularization is not None:
            penalty = oracle.penalty(loss, output, uncorrected)
            metrics[f"corrector_regularization_step_{i}"] = penalty
            metrics[f"total_step_{i}"] = main + penalty
            penalty_sum = penalty_sum + penalty
            total = total + penalty
        state = (
            {k: v.detach() for k, v in output.items()} if spec.use_gradient_accumulation else output
        )
    if loss.regularization is not None:
        metrics["corrector_regularization"] = penalty_sum
    metrics["loss"] = total
    g_gain, g_theta = torch.autograd.grad(total, [gain, theta], allow_unused=True)
    zero = torch.zeros((), dtype=torch.float64)
    return Expected(
        metrics={k: v.detach() for k, v in metrics.items()},
        gradients={
            "gain": zero if g_gain is None else g_gain,
            "corrector.theta": zero if g_theta is None else g_theta,
        },
    )


def rank_rows(rank: int, n: int = N_BATCH) -> slice:
    sizes = [len(t) for t in torch.tensor_split(torch.arange(n), WORLD_SIZE)]
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


# ---------------------------------------------------------------- the check


def _step_totals(metrics: dict[str, float], reported: list[float] | None) -> list[float] | None:
    """The per-step totals rank 0 reports (``TrainOutcome.step_totals``), else
    the contract's metrics ``loss_step_{i}`` (+ ``corrector_regularization_step_{i}``)."""
    if reported is not None:
        return list(reported) if len(reported) == N_STEPS else None
    if not all(f"loss_step_{i}" in metrics for i in range(N_STEPS)):
        return None
    return [
        metrics[f"loss_step_{i}"] + metrics.get(f"corrector_regularization_step_{i}", 0.0)
        for i in range(N_STEPS)
    ]


@functools.cache
def expectations(config_id: str) -> tuple[Expected, list[Expected], Expected]:
    """The whole batch's values, each rank's share's, and their sum over
    ranks (a pure function of the configuration: computed once)."""
    spec = stepper_spec(next(c for c in CONFIGURATIONS if c.id == config_id))
    n = n_samples(config_id)
    batch = global_batch(n)
    whole = expected(spec, batch)
    local = [expected(spec, batch, rank_rows(r, n)) for r in range(WORLD_SIZE)]
    summed = Expected(
        metrics={k: torch.stack([e.metrics[k] for e in local]).sum() for k in whole.metrics},
        gradients={k: torch.stack([e.gradients[k] for e in local]).sum(0) for k in whole.gradients},
    )
    return whole, local, summed


@enforces("DIST-1", "DIST-2")
@requires(Capability.DISTRIBUTED)
@pytest.mark.parametrize("config", CONFIGURATIONS, ids=pid)
def check_distributed_matches_single_process(
    adapter: StepOutputLossAdapter,
    rank_results: list[dict[str, dict[str, Any]]],
    config: Option,
) -> None:
    spec = stepper_spec(config)
    inputs = describe(
        spec.loss,
        main_case().id,
        ranks=WORLD_SIZE,
        samples=split_text(n_samples(config.id)),
        n_forward_steps=N_STEPS,
        gradient_accumulation=spec.use_gradient_accumulation,
    )
    whole, local, summed = expectations(config.id)

    # what is data-parallel about the metrics -- each step's optimized total
    # and the batch loss, reduced as means over samples -- in the contract's
    # neutral terms (TrainOutcome.step_totals); metric names are
    # test_train_metrics.py's business
    result = rank_results[0][config.id]
    got_totals = _step_totals(result["metrics"], result.get("step_totals"))
    if got_totals is None:
        fail(
            PROP,
            "rank 0 reports no per-step totals (TrainOutcome.step_totals)",
            inputs,
            f"{N_STEPS} totals",
            sorted(result["metrics"]),
        )
    wanted = [(f"total of step {i}", f"total_step_{i}") for i in range(N_STEPS)]
    if "loss" in result["metrics"]:
        wanted.append(("metric 'loss'", "loss"))
        got_totals = [*got_totals, result["metrics"]["loss"]]
    for (quantity, key), got in zip(wanted, got_totals):
        assert_close(
            torch.tensor(got, dtype=torch.float64),
            whole.metrics[key],
            prop=PROP,
            quantity=f"{quantity} (rank 0)",
            inputs=inputs,
            meaning="one process on the whole batch",
            alternatives={
                "rank 0's own share only (not reduced across ranks)": local[0].metrics[key],
                "the sum over ranks (reduced with SUM, not as a mean over samples)": summed.metrics[
                    key
                ],
            },
        )
    for rank, results in enumerate(rank_results):
        gradients = results[config.id]["gradients"]
        for name, want in whole.gradients.items():
            got = gradients.get(name)
            assert_close(
                torch.zeros_like(want) if got is None else got,
                want,
                prop=PROP,
                quantity=f"gradient of {name!r} on rank {rank}",
                inputs=inputs,
                meaning="one process on the whole batch",
                alternatives={
                    f"rank {rank}'s own share only (not synchronized)": local[rank].gradients[name],
                    "the sum over ranks (not averaged)": summed.gradients[name],
                },
                rtol=GRADIENT_RTOL,
                atol=1e-5 * float(want.abs().max()) + 1e-9,
            )
