"""Data-parallel training: which process this is, and the cross-rank
operations the train stepper needs, on ``torch.distributed``.

The train stepper (:mod:`reference.stepper`) runs unchanged on one process
and under data parallelism. Each rank trains on **its own share** of the
global batch (what a ``DistributedSampler`` gives it; :func:`local_share`
splits a batch the same way for tests), and

- the step's modules run inside ``DistributedDataParallel`` (:meth:`Distributed.wrap`),
  which broadcasts rank 0's weights at build and averages gradients over
  ranks in backward;
- every metric is a **mean over samples** (MSE, L1, area-weighted MSE, CRPS
  and the penalty all average per-sample terms; the per-channel, per-step
  and total losses are sums and means of those), so its whole-batch value is
  the sample-weighted mean of the ranks' values,
  ``sum_r n_r * m_r / sum_r n_r`` (:meth:`Distributed.reduce_sample_means`,
  one ``all_reduce`` for all metrics). With equal shares this is the plain
  mean over ranks; it is never the sum, and never one rank's value;
- the gradient of the whole-batch loss is ``sum_r (n_r / N) * grad_r``,
  while DDP averages ``(1 / W) * sum_r grad_r``; so each rank multiplies the
  loss it back-propagates by ``n_r * W / N`` (:meth:`Distributed.gradient_scale`,
  exactly 1 with equal shares, when it is skipped);
- with gradient accumulation, every backward but the last of a batch runs
  under ``no_sync`` (:meth:`Distributed.gradient_sync`): gradients accumulate
  locally and are all-reduced once per optimizer step;
- the stepper's warn-once warnings are shown on rank 0 only
  (:meth:`Distributed.root_warnings_only`): they are about the configuration,
  which every rank shares.

``Distributed.current()`` is the default process group when one is
initialized with more than one rank, else the single process, on which every
operation here is the identity (no DDP, no collective, no scaling).
"""

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from reference.step import StepABC
from reference.step_output import StepOutput
from reference.typing_ import TensorDict, TensorMapping


class StepModule(nn.Module):
    """A step as one ``nn.Module`` whose ``forward`` is one ``step.step``
    call, so ``DistributedDataParallel`` sees every rollout step's forward.

    Its parameters are exactly ``step.parameters()`` (the step's ``modules``
    are registered as a submodule; nothing is copied).
    """

    def __init__(self, step: StepABC):
        super().__init__()
        self.step_modules = step.modules
        self._step = step

    def forward(self, input: TensorMapping, detach_uncorrected: bool = True) -> StepOutput:
        return self._step.step(input, detach_uncorrected=detach_uncorrected)


@dataclasses.dataclass(frozen=True)
class BatchSizes:
    """Samples per rank of one batch.

    Attributes:
        local: this rank's samples.
        per_rank: every rank's samples, in rank order.
    """

    local: int
    per_rank: tuple[int, ...]

    @property
    def total(self) -> int:
        """Samples in the global batch."""
        return sum(self.per_rank)


class Distributed:
    """This process's place in a data-parallel run (see the module docstring).

    Build with :meth:`current`, :meth:`single_process` or
    :meth:`from_process_group`; the train stepper takes one (default
    ``current()``).
    """

    def __init__(self, rank: int = 0, world_size: int = 1):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world_size {world_size} is not a valid rank.")
        self.rank = rank
        self.world_size = world_size

    @classmethod
    def single_process(cls) -> "Distributed":
        """One process: every operation is the identity."""
        return cls(0, 1)

    @classmethod
    def from_process_group(cls) -> "Distributed":
        """The default process group (``torch.distributed.init_process_group``
        must have been called)."""
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "No default process group: call torch.distributed.init_process_group "
                "first, or use Distributed.single_process()."
            )
        return cls(dist.get_rank(), dist.get_world_size())

    @classmethod
    def current(cls) -> "Distributed":
        """The default process group if one is initialized, else one process."""
        if dist.is_available() and dist.is_initialized():
            return cls.from_process_group()
        return cls.single_process()

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_root(self) -> bool:
        """Rank 0: the one that warns and logs."""
        return self.rank == 0

    # ---------------------------------------------------------------- model

    def wrap(self, step: StepABC) -> nn.Module | None:
        """``DistributedDataParallel`` around the step's modules (a
        collective: every rank must call it), or None on one process.

        DDP broadcasts rank 0's parameters and buffers to every rank here.
        Every trainable parameter must receive a gradient in every optimizer
        step (DDP's rule without ``find_unused_parameters``).
        """
        if not self.is_distributed:
            return None
        return nn.parallel.DistributedDataParallel(StepModule(step))

    def gradient_sync(
        self, model: nn.Module | None, sync: bool
    ) -> contextlib.AbstractContextManager:
        """Run a forward and its backward inside this context: with
        ``sync=False`` DDP skips the gradient all-reduce (gradients accumulate
        locally until the next synchronized backward)."""
        if sync or model is None:
            return contextlib.nullcontext()
        assert isinstance(model, nn.parallel.DistributedDataParallel)
        return model.no_sync()

    # ---------------------------------------------------------------- batch

    def batch_sizes(self, n_local: int, n_forward_steps: int) -> BatchSizes:
        """Every rank's samples (one ``all_gather``), checking that every rank
        has samples and rolls out the same number of steps. Every rank sees
        the same gathered values, so a bad batch raises on all of them."""
        if not self.is_distributed:
            return BatchSizes(n_local, (n_local,))
        mine = torch.tensor([n_local, n_forward_steps], dtype=torch.int64)
        gathered = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)
        per_rank = tuple(int(g[0]) for g in gathered)
        steps = [int(g[1]) for g in gathered]
        if len(set(steps)) != 1:
            raise ValueError(
                f"Ranks roll out different numbers of forward steps {steps} (by rank); "
                "every rank's batch must have the same n_time."
            )
        if min(per_rank) < 1:
            raise ValueError(
                f"Samples per rank are {list(per_rank)}; every rank needs at least one "
                "sample. Use a global batch of at least world_size samples."
            )
        return BatchSizes(n_local, per_rank)

    def gradient_scale(self, sizes: BatchSizes) -> float:
        """``n_local * world_size / n_total``: the factor on this rank's loss
        that turns DDP's mean over ranks into the whole batch's gradient (1
        with equal shares)."""
        return sizes.local * self.world_size / sizes.total

    # ---------------------------------------------------------------- metrics

    def reduce_sample_means(
        self, metrics: Mapping[str, torch.Tensor], sizes: BatchSizes
    ) -> dict[str, torch.Tensor]:
        """Whole-batch values of per-rank sample means: ``sum_r n_r * m_r / N``.

        Args:
            metrics: this rank's metrics (0-d, detached), each a mean over
                this rank's samples; every rank must pass the same names.
            sizes: from :meth:`batch_sizes`.

        Returns:
            The same names with whole-batch values, identical on every rank
            (reduced in float64, returned in each metric's dtype).
        """
        if not self.is_distributed:
            return dict(metrics)
        names = sorted(metrics)
        stacked = torch.stack([metrics[n].detach().double().reshape(()) for n in names])
        stacked = stacked * sizes.local
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked = stacked / sizes.total
        return {n: stacked[i].to(metrics[n].dtype) for i, n in enumerate(names)}

    # ---------------------------------------------------------------- warnings

    @contextlib.contextmanager
    def root_warnings_only(self, categories: Sequence[type[Warning]]) -> Iterator[None]:
        """Inside, warnings of ``categories`` are ignored on every rank but 0."""
        if self.is_root:
            yield
            return
        with warnings.catch_warnings():
            for category in categories:
                warnings.simplefilter("ignore", category)
            yield


def local_share(data: TensorMapping, rank: int, world_size: int) -> TensorDict:
    """Rank ``rank``'s contiguous share of a batch (dim 0), as
    ``torch.tensor_split`` makes them: sizes differ by at most one, the first
    ranks get the extra samples.

    Args:
        data: ``(n_batch, ...)`` tensors.
    """
    return {k: torch.tensor_split(v, world_size, dim=0)[rank] for k, v in data.items()}
