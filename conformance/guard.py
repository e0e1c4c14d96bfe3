"""Per-check guards of the conformance suite: global torch state and the
wall-clock limit. :mod:`conformance.isolation` routes every adapter call
through :func:`adapter_call`; :mod:`conformance.suite` opens a
:class:`CheckGuard` around every check (:func:`begin` / :func:`end`).

**State guard.** :data:`STATE` lists the process-global torch state an
adapter could change and not put back: grad mode, inference mode, the default
dtype and device, deterministic algorithms (and warn-only), anomaly detection
(and its NaN check), intra-op thread count, autocast (CPU, CUDA), float32
matmul precision and the cuDNN / TF32 flags, plus the working directory.
Every adapter call is bracketed: a call that returns with any of it changed
fails *that* check, naming the state, its old and new values and the adapter
method; the state is restored, so the next check starts clean. Around the
whole check (setup to teardown) the same comparison catches what changed
outside an adapter call.

**Time bound.** Every check has a wall-clock budget (``--stepoutputloss-timeout``,
default :data:`DEFAULT_TIMEOUT_S`), enforced on the adapter's calls: a call
gets the check's remaining budget, and one that runs past it is interrupted
and fails the check, naming the check, the adapter method and the limit; any
later adapter call of that check fails at once (a hypothesis loop does not
wait again per example).

Why this mechanism: pytest-timeout is not a dependency of the suite (an
extra runtime requirement for every implementer, and its ``thread`` method
ends the whole process without a report), and a per-call watchdog thread
cannot interrupt the call. On POSIX, in the main thread, the bound is
``signal.setitimer(ITIMER_REAL)`` with a ``SIGALRM`` handler that raises
:class:`AdapterTimeout` where the adapter is (sleeps, lock and socket waits
and Python loops are interrupted), and is restored afterwards (a bound
already armed by someone else is left alone). The timer's signal is
process-directed and the kernel may deliver it to another thread, which
would leave a main thread blocked in a lock wait asleep; a watchdog thread
therefore also sends ``SIGALRM`` to the main thread itself
(``signal.pthread_kill``) just after the deadline; the handler acts once. Elsewhere (Windows, a non-main
thread) an overrunning call is detected when it returns, and
``faulthandler`` prints every thread's stack when the limit passes, so a
call that never returns still shows where it is stuck. A call blocked inside
native code that never returns to Python cannot be interrupted in-process by
any mechanism; the faulthandler dump names where it is.

:class:`AdapterTimeout` and :class:`ContractViolation` derive from
``BaseException``: an adapter's (or a check helper's) ``except Exception``
cannot swallow them, and every incident is also recorded on the guard, which
the suite turns into the check's failure whatever the check made of the
exception.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

DEFAULT_TIMEOUT_S = 300.0
"""Per check; generous: the slowest check of the reference takes ~2 s on a
loaded 2-core machine (the distributed group's first start is bounded on its
own, see :mod:`conformance.distributed`)."""

T = TypeVar("T")


class AdapterTimeout(BaseException):
    """An adapter call ran past its check's wall-clock limit."""


class ContractViolation(BaseException):
    """An adapter call broke the harness contract (leaked global state,
    mutated what it was handed, returned a result of the wrong type)."""


# ------------------------------------------------------------------ state


@dataclasses.dataclass(frozen=True)
class StateItem:
    """One piece of global state: how to read it and, where public API
    allows, how to put it back (``restore`` None: detected, not restorable)."""

    name: str
    read: Callable[[], Any]
    restore: Callable[[Any], None] | None


def _set_grad_enabled(value: bool) -> None:
    torch.set_grad_enabled(value)


def _set_deterministic(value: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(value[0], warn_only=value[1])


def _set_anomaly(value: tuple[bool, bool]) -> None:
    torch.autograd.set_detect_anomaly(value[0], check_nan=value[1])


def _cudnn(attr: str) -> StateItem:
    def restore(v: Any) -> None:
        setattr(torch.backends.cudnn, attr, v)

    return StateItem(
        f"torch.backends.cudnn.{attr}", lambda: getattr(torch.backends.cudnn, attr), restore
    )


def _autocast(device: str) -> StateItem:
    return StateItem(
        f"autocast on {device} (torch.is_autocast_enabled({device!r}))",
        lambda: torch.is_autocast_enabled(device),
        lambda v: torch.set_autocast_enabled(device, v),
    )


def _set_matmul_tf32(v: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = v


STATE: tuple[StateItem, ...] = (
    StateItem("grad mode (torch.is_grad_enabled())", torch.is_grad_enabled, _set_grad_enabled),
    StateItem(
        "inference mode (torch.is_inference_mode_enabled())", torch.is_inference_mode_enabled, None
    ),
    StateItem(
        "default dtype (torch.get_default_dtype())",
        torch.get_default_dtype,
        torch.set_default_dtype,
    ),
    StateItem(
        "default device (torch.get_default_device())",
        torch.get_default_device,
        torch.set_default_device,
    ),
    StateItem(
        "deterministic algorithms (torch.are_deterministic_algorithms_enabled(), warn_only)",
        lambda: (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        _set_deterministic,
    ),
    StateItem(
        "anomaly detection (torch.is_anomaly_enabled(), check_nan)",
        lambda: (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()),
        _set_anomaly,
    ),
    StateItem(
        "intra-op threads (torch.get_num_threads())", torch.get_num_threads, torch.set_num_threads
    ),
    _autocast("cpu"),
    _autocast("cuda"),
    StateItem(
        "float32 matmul precision (torch.get_float32_matmul_precision())",
        torch.get_float32_matmul_precision,
        torch.set_float32_matmul_precision,
    ),
    StateItem(
        "torch.backends.cuda.matmul.allow_tf32",
        lambda: torch.backends.cuda.matmul.allow_tf32,
        _set_matmul_tf32,
    ),
    _cudnn("enabled"),
    _cudnn("benchmark"),
    _cudnn("deterministic"),
    _cudnn("allow_tf32"),
    StateItem("working directory (os.getcwd())", os.getcwd, os.chdir),
)


def snapshot() -> dict[str, Any]:
    """The current value of every :data:`STATE` item, by name."""
    out = {}
    for item in STATE:
        try:
            out[item.name] = item.read()
        except Exception as err:  # noqa: BLE001 - e.g. a deleted working directory
            out[item.name] = f"<unreadable: {err}>"
    return out


def restore_changes(before: dict[str, Any]) -> list[str]:
    """Compare with ``before``; put back what changed. One line per change:
    ``<state>: <before> -> <now> (restored)``, or ``(cannot be restored)``."""
    now = snapshot()
    changes = []
    for item in STATE:
        old, new = before[item.name], now[item.name]
        if old == new:
            continue
        note = "restored"
        if item.restore is None:
            note = "cannot be restored with public torch API; later checks may be affected"
        else:
            try:
                item.restore(old)
            except Exception as err:  # noqa: BLE001 - reported
                note = f"restoring it failed: {type(err).__name__}: {err}"
        changes.append(f"{item.name}: {old!r} -> {new!r} ({note})")
    return changes


# ------------------------------------------------------------------ per check


@dataclasses.dataclass
class CheckGuard:
    """The running check's budget and the incidents of its adapter calls."""

    check: str
    limit_s: float
    start: float = dataclasses.field(default_factory=time.monotonic)
    state: dict[str, Any] = dataclasses.field(default_factory=snapshot)
    incidents: list[str] = dataclasses.field(default_factory=list)
    reported: int = 0
    timed_out: str | None = None

    @property
    def deadline(self) -> float:
        return self.start + self.limit_s

    def record(self, message: str) -> str:
        if message not in self.incidents:
            self.incidents.append(message)
        return message

    def unreported(self) -> list[str]:
        """Incidents not yet put on a report (each phase reports its own)."""
        new = self.incidents[self.reported :]
        self.reported = len(self.incidents)
        return new


_current: CheckGuard | None = None


def begin(check: str, limit_s: float) -> CheckGuard:
    """Open the guard of a check (its setup starts now)."""
    global _current
    _current = CheckGuard(check, limit_s)
    return _current


def current() -> CheckGuard | None:
    return _current


def end() -> list[str]:
    """Close the running check's guard: state it changed outside adapter
    calls is restored and returned as incident lines."""
    global _current
    guard, _current = _current, None
    if guard is None:
        return []
    changes = restore_changes(guard.state)
    if not changes:
        return []
    return [
        guard.record(
            "leaked global state: the check left global torch state changed (outside any "
            f"adapter call the suite can name): {'; '.join(changes)}"
        )
    ]


def _use_signal() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _bound(seconds: float, on_timeout: Callable[[], BaseException]) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (see the module docstring)."""
    if _use_signal() and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0):
        fired = threading.Event()
        done = threading.Lock()

        def handler(signum: int, frame: Any) -> None:
            if not fired.is_set():  # once, whichever of the two deliveries comes first
                fired.set()
                raise on_timeout()

        def resend() -> None:
            # The timer's SIGALRM goes to the process: the kernel may hand it to
            # another thread (torch's, multiprocessing's), and then a main thread
            # blocked in a lock or socket wait is never woken. Shortly after the
            # deadline, send it to the main thread itself.
            with done:
                if not fired.is_set():
                    signal.pthread_kill(main, signal.SIGALRM)

        main = threading.main_thread().ident or 0
        previous = signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        watchdog = threading.Timer(seconds + 0.05, resend)
        watchdog.daemon = True
        watchdog.start()
        try:
            yield
        finally:
            with done:
                fired.set()  # no delivery after this block
                watchdog.cancel()
            signal.setitimer(signal.ITIMER_REAL, 0.0)
            signal.signal(signal.SIGALRM, previous)
        return
    dump = sys.stderr is not None and hasattr(sys.stderr, "fileno")
    if dump:
        try:
            faulthandler.dump_traceback_later(seconds, exit=False)
        except (ValueError, OSError, AttributeError):  # no usable stderr fd
            dump = False
    try:
        yield
    finally:
        if dump:
            faulthandler.cancel_dump_traceback_later()


def adapter_call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, the adapter's ``what`` (e.g. ``"adapter.build_loss"``),
    under the running check's time bound and state guard. Outside a check
    (a test calling the suite's helpers directly) it is a plain call."""
    guard = _current
    if guard is None:
        return fn(*args, **kwargs)
    if guard.timed_out is not None:
        raise AdapterTimeout(guard.timed_out)
    remaining = guard.deadline - time.monotonic()

    def timeout() -> AdapterTimeout:
        guard.timed_out = guard.record(
            f"timeout: {what} did not return within the check's limit of "
            f"{guard.limit_s:g} s (--stepoutputloss-timeout); it was interrupted"
        )
        return AdapterTimeout(guard.timed_out)

    if remaining <= 0:
        raise timeout()
    before = snapshot()
    started = time.monotonic()
    error: BaseException | None = None
    try:
        with _bound(remaining, timeout):
            return fn(*args, **kwargs)
    except BaseException as err:
        error = err
        raise
    finally:
        changes = restore_changes(before)
        overran = guard.timed_out is None and time.monotonic() - started > remaining
        if overran:
            raise timeout() from error
        if changes:
            message = guard.record(
                f"leaked global state: {what} changed global torch state and did not "
                f"restore it: {'; '.join(changes)}"
            )
            if not isinstance(error, AdapterTimeout):
                raise ContractViolation(message) from error
