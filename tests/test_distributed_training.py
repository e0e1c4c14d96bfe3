"""The reference train stepper under ``torch.distributed`` (DDP, gloo, CPU):
two ranks, each on its share of a batch, give one process's result on the
whole batch.

Everything runs as one job on the shared 2-rank group of
:mod:`conformance.distributed` (spawned once per test session; the job
itself takes a fraction of a second). The scenarios run on the ranks
(:func:`rank_job`) and the tests compare with a single-process
``TrainStepper`` on the whole batch, built here from the same code.

Shares are *unequal* where it matters (3 samples -> 2 + 1), so a plain mean
over ranks would be wrong: metrics must be the sample-weighted mean and
gradients need the loss scale ``n_local * world_size / n_total``.

Tolerances: float32 sums taken in a different order, ``rtol=1e-5``,
``atol=1e-7``; values that both ranks receive from the same collective (and
the weights both ranks update with them) are compared exactly.
"""

import functools
import warnings
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from train_helpers import batch, config, make_step, stepper

from conformance import distributed as ranks
from reference.distributed import BatchSizes, Distributed, local_share
from reference.loss import UnmatchedExclusionWarning
from reference.trainer import Trainer

TOL = dict(rtol=1e-5, atol=1e-7)
FEATURES = dict(pre=["q_1"], reg_weight=0.5, decay=0.5)
N_STEPS = 3

# SGD: the update is linear in the gradient (Adam's first step is about
# +-lr whatever the gradient's size, so it amplifies rounding noise of
# near-zero entries)
SGD = dict(optimizer="SGD", lr=0.1)
# name -> (config kwargs, n_batch, data seed)
SCENARIOS: dict[str, tuple[dict[str, Any], int, int]] = {
    "both-features-uneven": (dict(**FEATURES, **SGD), 3, 1),
    "both-features-uneven-accumulation": (dict(accumulate=True, **FEATURES, **SGD), 3, 2),
    "no-features-even-accumulation": (dict(accumulate=True, **SGD), 4, 3),
}

pytestmark = pytest.mark.skipif(
    not ranks.is_available(), reason="torch.distributed with gloo is not available"
)


# ------------------------------------------------------------------ on the ranks


def _train(name: str, rank: int, world_size: int) -> dict[str, Any]:
    kwargs, n_batch, seed = SCENARIOS[name]
    # each rank starts from different weights: DDP's build broadcasts rank 0's
    st = stepper(config(**kwargs), make_step(seed=rank))
    reductions: list[int] = []

    def counting_hook(state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        reductions.append(1)
        return default_hooks.allreduce_hook(state, bucket)  # DDP's own all-reduce

    assert st._ddp is not None
    st._ddp.register_comm_hook(None, counting_hook)
    data = batch(seed, n_batch=n_batch, n_time=N_STEPS + 1)
    out = st.train_on_batch(local_share(data, rank, world_size))
    return {
        "metrics": {k: v.clone() for k, v in out.metrics.items()},
        "n_batch": out.n_batch,
        "n_local": out.gen_data["ps"].shape[0],
        "grads": [p.grad.clone() for p in st.step.parameters()],
        "weights": [p.detach().clone() for p in st.step.parameters()],
        "reductions": len(reductions),
    }


def _warnings(rank: int, world_size: int) -> int:
    st = stepper(config(pre=["q_1", "nope"]), make_step())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in (4, 5):
            st.train_on_batch(local_share(batch(seed, n_batch=4), rank, world_size))
    return sum(issubclass(w.category, UnmatchedExclusionWarning) for w in caught)


def _trainer(rank: int, world_size: int) -> dict[str, Any]:
    trainer = Trainer(stepper(config(**FEATURES), make_step()))
    batches = [local_share(batch(seed, n_batch=3), rank, world_size) for seed in (6, 7)]
    epoch = trainer.train_one_epoch(batches)
    return {"logged": trainer.logged, "epoch": epoch}


def _error(fn: Any) -> str:
    try:
        fn()
    except ValueError as err:
        return str(err)
    return "no error"


def rank_job() -> dict[str, Any]:
    """Every scenario, on every rank."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    out: dict[str, Any] = {name: _train(name, rank, world_size) for name in SCENARIOS}
    out["warnings"] = _warnings(rank, world_size)
    out["trainer"] = _trainer(rank, world_size)
    st = stepper(config(), make_step())
    n_time = 3 if rank == 0 else 2
    out["error-steps"] = _error(lambda: st.train_on_batch(batch(8, n_batch=2, n_time=n_time)))
    out["error-empty"] = _error(
        lambda: st.train_on_batch(local_share(batch(9, n_batch=1), rank, world_size))
    )
    healthy = torch.ones(())
    dist.all_reduce(healthy)  # the group still works after the errors
    out["healthy"] = float(healthy)
    return out


@functools.cache
def _run() -> tuple[list[dict[str, Any]] | None, ranks.RankFailure | None]:
    try:
        return ranks.run_on_ranks(rank_job), None
    except ranks.RankFailure as err:  # every test reports it; the job runs once
        return None, err


def results() -> list[dict[str, Any]]:
    out, err = _run()
    if err is not None:
        raise err
    assert out is not None
    return out


# ------------------------------------------------------------------ one process


def single_process(name: str) -> dict[str, Any]:
    kwargs, n_batch, seed = SCENARIOS[name]
    st = stepper(config(**kwargs), make_step(seed=0))
    out = st.train_on_batch(batch(seed, n_batch=n_batch, n_time=N_STEPS + 1))
    return {
        "metrics": out.metrics,
        "grads": [p.grad.clone() for p in st.step.parameters()],
        "weights": [p.detach().clone() for p in st.step.parameters()],
    }


def local_single_process(name: str, rank: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s share trained alone (what an unreduced rank reports)."""
    kwargs, n_batch, seed = SCENARIOS[name]
    st = stepper(config(**kwargs), make_step(seed=0))
    data = local_share(batch(seed, n_batch=n_batch, n_time=N_STEPS + 1), rank, 2)
    return st.train_on_batch(data).metrics


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_metrics_equal_one_process_on_the_whole_batch(name: str) -> None:
    want = single_process(name)["metrics"]
    rank0, rank1 = (r[name] for r in results())
    assert set(rank0["metrics"]) == set(want)
    assert any(k.startswith("loss/") for k in want)  # per-channel losses included
    if "reg_weight" in SCENARIOS[name][0]:
        assert "corrector_regularization" in want
    for key, value in want.items():
        torch.testing.assert_close(rank0["metrics"][key], value, **TOL, msg=key)
        assert torch.equal(rank0["metrics"][key], rank1["metrics"][key]), key
    n_batch = SCENARIOS[name][1]
    assert rank0["n_batch"] == rank1["n_batch"] == n_batch  # the aggregator's weight
    assert (rank0["n_local"], rank1["n_local"]) == ((n_batch + 1) // 2, n_batch // 2)


@pytest.mark.parametrize("name", [n for n in SCENARIOS if SCENARIOS[n][1] % 2])
def test_unequal_shares_weight_by_samples(name: str) -> None:
    """2 + 1 samples: the plain mean over ranks is measurably wrong, so the
    equality above really needed the sample weighting."""
    local = [local_single_process(name, r) for r in range(2)]
    reduced = results()[0][name]["metrics"]
    for key in ("loss", "loss_step_0", "corrector_regularization"):
        plain_mean = (local[0][key] + local[1][key]) / 2
        weighted = (2 * local[0][key] + local[1][key]) / 3
        torch.testing.assert_close(reduced[key], weighted, **TOL)
        assert abs(float(plain_mean - reduced[key])) > 1e-4 * abs(float(reduced[key]))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_gradients_and_update_equal_one_process(name: str) -> None:
    want = single_process(name)
    rank0, rank1 = (r[name] for r in results())
    for i, expected in enumerate(want["grads"]):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(rank0["grads"][i], expected, **TOL)
        assert torch.equal(rank0["grads"][i], rank1["grads"][i])
    # rank 1 started from other weights; after the broadcast and one SGD
    # step both hold one process's updated weights
    for i, expected in enumerate(want["weights"]):
        torch.testing.assert_close(rank0["weights"][i], expected, **TOL)
        assert torch.equal(rank0["weights"][i], rank1["weights"][i])


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_one_gradient_all_reduce_per_optimizer_step(name: str) -> None:
    """With accumulation, 3 backward passes but one all-reduce (``no_sync``
    on the first two); without, one backward and one all-reduce (the tiny
    model's parameters fit one DDP bucket)."""
    for rank_results in results():
        assert rank_results[name]["reductions"] == 1


def test_warn_once_on_rank_0_only() -> None:
    assert [r["warnings"] for r in results()] == [1, 0]


def test_trainer_logs_on_rank_0_and_epoch_means_equal_one_process() -> None:
    rank0, rank1 = (r["trainer"] for r in results())
    trainer = Trainer(stepper(config(**FEATURES), make_step()))
    want = trainer.train_one_epoch([batch(seed, n_batch=3) for seed in (6, 7)])
    assert len(rank0["logged"]) == 3 and rank1["logged"] == []
    assert rank0["epoch"] == rank1["epoch"]
    assert set(rank0["epoch"]) == set(want)
    for key, value in want.items():
        assert rank0["epoch"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    for got, expected in zip(rank0["logged"][:2], trainer.logged[:2]):
        assert "batch_corrector_regularization" in expected
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_bad_batches_raise_on_every_rank_without_hanging() -> None:
    steps = [r["error-steps"] for r in results()]
    empty = [r["error-empty"] for r in results()]
    assert all("different numbers of forward steps [2, 1]" in e for e in steps), steps
    assert all("every rank needs at least one sample" in e for e in empty), empty
    assert [r["healthy"] for r in results()] == [2.0, 2.0]


# ------------------------------------------------------------------ one process, no group


def test_single_process_context_is_the_identity() -> None:
    single = Distributed.current()
    assert (single.rank, single.world_size, single.is_root) == (0, 1, True)
    sizes = single.batch_sizes(3, 2)
    assert sizes == BatchSizes(3, (3,)) and single.gradient_scale(sizes) == 1.0
    metrics = {"loss": torch.tensor(1.5)}
    assert single.reduce_sample_means(metrics, sizes) == metrics
    st = stepper(config(**FEATURES))
    assert st._ddp is None and st.distributed.world_size == 1


def test_local_share_splits_contiguously() -> None:
    data = {"x": torch.arange(5)}
    shares = [local_share(data, r, 2)["x"].tolist() for r in range(2)]
    assert shares == [[0, 1, 2], [3, 4]]
    with pytest.raises(ValueError, match="rank 2 of world_size 2"):
        Distributed(2, 2)
