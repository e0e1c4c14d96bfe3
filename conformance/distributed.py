"""Run functions on every rank of a small ``torch.distributed`` process group
(gloo, CPU, this machine only), for the ``distributed`` check and tests.

:func:`run_on_ranks` ``(fn, *args)`` calls ``fn(*args)`` on every rank of a
2-rank group, inside the initialized default process group, and returns the
ranks' results (rank order). ``fn`` must be an importable module-level
function; its arguments and results travel pickled (results through
``torch.save``).

Design, for speed and safety:

- **One spawn per test session.** Starting a rank costs seconds (importing
  torch, and ``DistributedDataParallel``'s first build imports
  ``torch._dynamo``); a job on a running group costs milliseconds. So the
  ranks are ``torch.multiprocessing`` *spawn* processes started on first use
  and kept (a :class:`RankPool`), and every later job reuses them. The
  suite's check, the mutation matrix's runs and the reference's tests share
  one group.
- **Loopback only, no port race.** This process binds a socket to
  ``127.0.0.1:0`` (the OS picks a free port), hands it to the rendezvous
  ``TCPStore`` it serves (``master_listen_fd``), and the ranks connect to it;
  gloo is pinned to the loopback interface (``GLOO_SOCKET_IFNAME``).
- **Never hangs.** Every wait is bounded: start-up by ``start_timeout``, a
  job by ``job_timeout``, the ranks' collectives by the process group's
  ``pg_timeout``. A job that errors on a rank, times out, or loses a rank
  tears the group down (processes terminated, then killed; the process group
  destroyed where the rank can still do it) and raises
  :class:`RankFailure` naming the rank and its traceback; the next job
  starts a fresh group. The ranks exit by themselves when this process dies.
- **Clean teardown.** :func:`shutdown` (also registered with ``atexit``)
  stops the ranks, which call ``destroy_process_group`` and exit.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import importlib
import io
import os
import queue
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD_SIZE = 2
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 120.0  # first spawn: two interpreters importing torch on a loaded 2-core machine
JOB_TIMEOUT_S = 60.0
PG_TIMEOUT_S = 30.0  # a rank blocked in a collective gives up after this
_POLL_S = 0.5


class RankFailure(RuntimeError):
    """A rank raised, died or timed out; the message says which and why."""


def is_available() -> bool:
    """Whether this torch build has ``torch.distributed`` with gloo."""
    return dist.is_available() and dist.is_gloo_available()


def _loopback_interface() -> str | None:
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:  # pragma: no cover - platforms without if_nameindex
        return None
    return next((n for n in ("lo", "lo0") if n in names), None)


def _to_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=False)


def _rank_main(
    rank: int,
    world_size: int,
    port: int,
    parent_pid: int,
    jobs: Any,
    results: Any,
    pg_timeout_s: float,
) -> None:
    """A rank: join the group, then run jobs until told to stop or orphaned."""
    torch.set_num_threads(1)  # two ranks and the parent share a small machine
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR=LOOPBACK,
        MASTER_PORT=str(port),
    )
    interface = _loopback_interface()
    if interface is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
    timeout = datetime.timedelta(seconds=pg_timeout_s)
    try:
        store = dist.TCPStore(LOOPBACK, port, is_master=False, timeout=timeout)
        dist.init_process_group(
            "gloo", store=store, rank=rank, world_size=world_size, timeout=timeout
        )
    except BaseException:  # noqa: BLE001 - reported to the parent
        results.put((rank, -1, "error", traceback.format_exc()))
        return
    results.put((rank, -1, "ok", b""))
    try:
        while True:
            try:
                job = jobs.get(timeout=_POLL_S)
            except queue.Empty:
                if os.getppid() != parent_pid:  # orphaned: the parent died
                    return
                continue
            if job is None:
                return
            job_id, sys_path, module_name, function_name, payload = job
            try:
                for entry in reversed(sys_path):
                    if entry not in sys.path:
                        sys.path.insert(0, entry)
                function = getattr(importlib.import_module(module_name), function_name)
                args = _from_bytes(payload)
                results.put((rank, job_id, "ok", _to_bytes(function(*args))))
            except BaseException:  # noqa: BLE001 - reported to the parent
                results.put((rank, job_id, "error", traceback.format_exc()))
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _all_reduce_one() -> float:
    value = torch.ones(())
    dist.all_reduce(value)
    return float(value)


class RankPool:
    """``world_size`` spawned ranks in one gloo process group; see the module docstring."""

    def __init__(
        self,
        world_size: int = WORLD_SIZE,
        start_timeout_s: float = START_TIMEOUT_S,
        pg_timeout_s: float = PG_TIMEOUT_S,
    ):
        self.world_size = world_size
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((LOOPBACK, 0))  # loopback only; the OS picks a free port
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._store = dist.TCPStore(
            LOOPBACK,
            self.port,
            is_master=True,
            wait_for_workers=False,
            timeout=datetime.timedelta(seconds=pg_timeout_s),
            master_listen_fd=listener.fileno(),
        )
        listener.detach()  # the store's server owns (and closes) the socket now
        context = mp.get_context("spawn")
        self._results = context.Queue()
        self._jobs = [context.Queue() for _ in range(world_size)]
        self._processes = [
            context.Process(
                target=_rank_main,
                args=(rank, world_size, self.port, os.getpid(), self._jobs[rank]),
                kwargs={"results": self._results, "pg_timeout_s": pg_timeout_s},
                daemon=True,
                name=f"conformance-rank-{rank}",
            )
            for rank in range(world_size)
        ]
        self._next_job = 0
        self.closed = False
        for process in self._processes:
            process.start()
        try:
            self._collect(-1, start_timeout_s, "start-up (spawn and init_process_group)")
        except BaseException:
            self.close(graceful=False)
            raise

    def alive(self) -> bool:
        return not self.closed and all(p.is_alive() for p in self._processes)

    def _collect(self, job_id: int, timeout_s: float, what: str) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        got: dict[int, Any] = {}
        errors: dict[int, str] = {}
        while len(got) + len(errors) < self.world_size:
            remaining = deadline - time.monotonic()
            dead = [r for r, p in enumerate(self._processes) if not p.is_alive()]
            pending = set(range(self.world_size)) - set(got) - set(errors)
            if remaining <= 0 or (dead and set(dead) & pending):
                reasons = [f"rank {r} raised:\n{tb}" for r, tb in sorted(errors.items())]
                reasons += [
                    f"rank {r} died (exit code {self._processes[r].exitcode})"
                    for r in sorted(set(dead) & pending)
                ]
                silent = sorted(pending - set(dead))
                if remaining <= 0 and silent:
                    reasons.append(
                        f"ranks {silent} were still busy after the failure above (e.g. "
                        "waiting in a collective for the failed rank) and were stopped"
                        if errors
                        else f"ranks {silent} gave no answer within {timeout_s:.0f} s"
                    )
                self.close(graceful=False)
                raise RankFailure(
                    f"{what} failed on the {self.world_size}-rank group:\n" + "\n".join(reasons)
                )
            try:
                rank, rid, status, payload = self._results.get(timeout=min(remaining, _POLL_S))
            except queue.Empty:
                continue
            if rid != job_id:
                continue  # a late answer to an abandoned job
            if status == "ok":
                got[rank] = payload
            else:
                errors[rank] = payload
                # the others may wait in a collective for the failed rank:
                # give them a moment to fail too, not the whole timeout
                deadline = min(deadline, time.monotonic() + 2.0)
        if errors:
            reasons = [f"rank {r} raised:\n{tb}" for r, tb in sorted(errors.items())]
            # every rank answered: keep the group if a collective still works
            if job_id < 0 or not self._healthy():
                self.close(graceful=False)
            raise RankFailure(
                f"{what} failed on the {self.world_size}-rank group:\n" + "\n".join(reasons)
            )
        return [got[r] for r in range(self.world_size)]

    def _healthy(self) -> bool:
        """After a job that raised on every rank: whether one ``all_reduce``
        still gives ``world_size`` on every rank."""
        try:
            values = self.run(_all_reduce_one, timeout_s=10.0)
        except RankFailure:
            return False
        return values == [float(self.world_size)] * self.world_size

    def run(
        self, fn: Callable[..., Any], *args: Any, timeout_s: float = JOB_TIMEOUT_S
    ) -> list[Any]:
        """``fn(*args)`` on every rank; the results in rank order."""
        if not self.alive():
            raise RankFailure("the rank group is closed")
        module_name, function_name = fn.__module__, fn.__qualname__
        if "." in function_name or module_name == "__main__":
            raise ValueError(f"{fn!r} must be a module-level function of an importable module.")
        job_id = self._next_job
        self._next_job += 1
        job = (job_id, list(sys.path), module_name, function_name, _to_bytes(args))
        for q in self._jobs:
            q.put(job)
        payloads = self._collect(job_id, timeout_s, f"{module_name}.{function_name}")
        return [_from_bytes(p) for p in payloads]

    def close(self, graceful: bool = True) -> None:
        """Stop the ranks (they destroy their process group and exit); then
        terminate and kill whatever is left."""
        if self.closed:
            return
        self.closed = True
        if graceful:
            for q in self._jobs:
                with contextlib.suppress(Exception):
                    q.put(None)
            deadline = time.monotonic() + 5.0
            for process in self._processes:
                process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process in self._processes:
            process.join(timeout=2.0)
            if process.is_alive():  # pragma: no cover - a rank ignoring SIGTERM
                process.kill()
                process.join(timeout=2.0)
        for q in [*self._jobs, self._results]:
            q.close()
            q.join_thread()
        del self._store  # stops the rendezvous server, closing its socket


_pool: RankPool | None = None


def run_on_ranks(fn: Callable[..., Any], *args: Any, timeout_s: float = JOB_TIMEOUT_S) -> list[Any]:
    """``fn(*args)`` on every rank of the shared 2-rank group (started on
    first use, restarted after a failure); results in rank order.

    Raises:
        RankFailure: a rank raised, died or timed out (the group is torn down).
    """
    global _pool
    if _pool is None or not _pool.alive():
        _pool = RankPool()
    return _pool.run(fn, *args, timeout_s=timeout_s)


def shutdown() -> None:
    """Stop the shared group, if any."""
    global _pool
    if _pool is not None:
        _pool.close()
        _pool = None


atexit.register(shutdown)
