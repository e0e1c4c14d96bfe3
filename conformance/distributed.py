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
  :class:`RankFailure`; the next job starts a fresh group. The ranks exit
  by themselves when this process dies.
- **The right rank is blamed.** :class:`RankFailure`'s first line says
  which rank failed and how, with each error's whole message (type and
  text, on one line): a rank that raised, in the order the errors happened
  (a rank waiting in a collective for a failed one fails later, with a
  timeout); a rank that died, with its exit code; a rank that gave no
  answer, with where it was (its Python stack, dumped by ``faulthandler``
  on ``SIGUSR1`` where the platform has it). The tracebacks follow.
- **Clean teardown.** :func:`shutdown` (also registered with ``atexit``)
  stops the ranks, which call ``destroy_process_group`` and exit.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import faulthandler
import importlib
import io
import os
import queue
import re
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
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
_GRACE_S = 2.0  # after a rank's error, how long the others get to answer
_TIMED_OUT = re.compile(r"time[d ]?out", re.IGNORECASE)  # a collective gave up waiting


def _in_collective(frame: str) -> bool:
    """Whether a frame (``path:line in function``) is torch's distributed or
    data-parallel code: the rank waits for another in a collective."""
    path = frame.partition(":")[0]
    return path.startswith(("torch/distributed/", "nn/parallel/", "distributed/"))


def _main_thread(dump: str) -> str:
    """The main thread's part of the last faulthandler dump of all threads:
    the stack whose outermost frame is the process's ``<module>``."""
    blocks: list[list[str]] = []
    for line in dump.splitlines():
        if line.startswith(("Thread 0x", "Current thread 0x")):
            blocks.append([])
        elif blocks:
            blocks[-1].append(line)
    mains = [b for b in blocks if b and b[-1].strip().endswith("in <module>")]
    return "\n".join(mains[-1] if mains else blocks[-1] if blocks else [])


def _innermost_frame(dump: str) -> str:
    """``path:line in function`` of the innermost frame of a faulthandler
    dump (most recent call first) outside Python's standard library (a wait
    in ``threading`` says less than the code that waits), the path shortened
    to its last 3 parts."""
    stdlib = sysconfig.get_paths()["stdlib"]
    frames = []
    for line in dump.splitlines():
        line = line.strip()
        if line.startswith('File "'):
            path, _, rest = line[len('File "') :].partition('"')
            frames.append((path, rest.replace(", line ", ":", 1).rstrip()))
    own = [f for f in frames if not f[0].startswith(stdlib) or "-packages" in f[0]]
    for path, where in own[:1] or frames[:1]:
        return "/".join(path.replace("\\", "/").split("/")[-3:]) + where
    return ""


class RankFailure(RuntimeError):
    """A rank raised, died or timed out; the message says which and why.

    Attributes:
        summary: one line naming every failed rank and its whole error
            message (the message's first line).
    """

    def __init__(self, summary: str, details: str = ""):
        super().__init__(summary + ("\n" + details if details else ""))
        self.summary = summary


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


def _error_payload() -> tuple[str, str, float]:
    """``(one-line message, traceback, time)`` of the exception being handled."""
    kind, value, _ = sys.exc_info()
    message = "".join(traceback.format_exception_only(kind, value)).strip()
    return " ".join(message.split()), traceback.format_exc(), time.time()


def _rank_main(
    rank: int,
    world_size: int,
    port: int,
    parent_pid: int,
    jobs: Any,
    results: Any,
    pg_timeout_s: float,
    stack_file: str | None = None,
) -> None:
    """A rank: join the group, then run jobs until told to stop or orphaned."""
    if stack_file is not None and hasattr(signal, "SIGUSR1"):
        # the parent asks a rank that gives no answer where it is
        dump = open(stack_file, "w")  # noqa: SIM115 - open for the process's life
        faulthandler.register(signal.SIGUSR1, file=dump, all_threads=True)
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
        results.put((rank, -1, "error", _error_payload()))
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
                results.put((rank, job_id, "error", _error_payload()))
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
        self._stack_dir = tempfile.mkdtemp(prefix="conformance-ranks-")
        self._stack_files = [
            os.path.join(self._stack_dir, f"rank-{rank}.stack") for rank in range(world_size)
        ]
        context = mp.get_context("spawn")
        self._results = context.Queue()
        self._jobs = [context.Queue() for _ in range(world_size)]
        self._processes = [
            context.Process(
                target=_rank_main,
                args=(rank, world_size, self.port, os.getpid(), self._jobs[rank]),
                kwargs={
                    "results": self._results,
                    "pg_timeout_s": pg_timeout_s,
                    "stack_file": self._stack_files[rank],
                },
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
        started = time.monotonic()
        deadline = started + timeout_s
        got: dict[int, Any] = {}
        errors: dict[int, tuple[str, str, float]] = {}
        while len(got) + len(errors) < self.world_size:
            remaining = deadline - time.monotonic()
            dead = {r for r, p in enumerate(self._processes) if not p.is_alive()}
            pending = set(range(self.world_size)) - set(got) - set(errors)
            if remaining <= 0 or dead & pending:
                silent = sorted(pending - dead)
                where = self._where(silent) if remaining <= 0 else {}
                failure = self._failure(
                    what,
                    errors,
                    sorted(dead & pending),
                    silent if remaining <= 0 else [],
                    where,
                    time.monotonic() - started,
                )
                self.close(graceful=False)
                raise failure
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
                deadline = min(deadline, time.monotonic() + _GRACE_S)
        if errors:
            failure = self._failure(what, errors, [], [], {}, time.monotonic() - started)
            # every rank answered: keep the group if a collective still works
            if job_id < 0 or not self._healthy():
                self.close(graceful=False)
            raise failure
        return [got[r] for r in range(self.world_size)]

    def _where(self, ranks: list[int]) -> dict[int, tuple[str, str]]:
        """``rank -> (innermost frame, whole stack dump)`` of ranks that give
        no answer (``faulthandler`` on ``SIGUSR1``; empty where unsupported)."""
        if not ranks or not hasattr(signal, "SIGUSR1"):
            return {}
        for r in ranks:
            pid = self._processes[r].pid
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGUSR1)
        time.sleep(0.3)
        out = {}
        for r in ranks:
            try:
                with open(self._stack_files[r], encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            frame = _innermost_frame(_main_thread(text))
            if frame:
                out[r] = (frame, text.strip())
        return out

    def _failure(
        self,
        what: str,
        errors: dict[int, tuple[str, str, float]],
        dead: list[int],
        silent: list[int],
        where: dict[int, tuple[str, str]],
        elapsed_s: float,
    ) -> RankFailure:
        """The failure: one line naming every failed rank with its whole
        error message, then the tracebacks and stack dumps."""
        by_time = sorted(errors, key=lambda r: errors[r][2])
        # a rank waiting in a collective for one that hangs fails with a
        # timeout: the hanging rank is the cause, so it is named first
        waited = [r for r in by_time if silent and _TIMED_OUT.search(errors[r][0])]
        first = [r for r in by_time if r not in waited]
        parts = [f"rank {r} raised {errors[r][0]}" for r in first]
        parts += [f"rank {r} died (exit code {self._processes[r].exitcode})" for r in dead]
        # a silent rank whose innermost frame is torch's collective code is
        # waiting for another rank: named after the ranks stuck elsewhere
        in_collective = [r for r in silent if r in where and _in_collective(where[r][0])]
        for r in [r for r in silent if r not in in_collective] + in_collective:
            busy = (
                f"rank {r} was still busy {_GRACE_S:g} s after that error (stopped)"
                if first
                else f"rank {r} gave no answer after {elapsed_s:.0f} s (stopped)"
            )
            if r in where:
                busy += f", in {where[r][0]}"
            if r in in_collective:
                busy += " (waiting in a collective)"
            parts.append(busy)
        parts += [
            f"rank {r} raised {errors[r][0]} (waiting for a rank that gave no answer)"
            for r in waited
        ]
        summary = f"{what} failed on the {self.world_size}-rank group: " + "; ".join(parts)
        details = [f"rank {r} traceback:\n{errors[r][1]}" for r in by_time]
        details += [f"rank {r} stack when stopped:\n{where[r][1]}" for r in silent if r in where]
        return RankFailure(summary, "\n".join(details))

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
        shutil.rmtree(self._stack_dir, ignore_errors=True)


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
