"""Assertion helpers of the conformance suite.

Every failure message says which check and property broke, on which inputs,
and what was expected vs what the implementation gave, so a failing run tells
an implementer what to fix without reading the suite::

    test_penalty.py::check_penalty_closed_form[case-2d-and-levels-reg-MSE]
    property: corrector regularization penalty
    problem:  regularization differs from the closed form
    inputs:   case=case-2d-and-levels, reg=MSE, weight=0.7
    expected: 0.0630 (weight * mean over corrected channels of MSE(correction / std, 0))
    actual:   0.0420
    diagnosis: actual equals "the mean over all 6 channels (diluted)"

Tolerances: implementations compute in float32, the oracle in float64;
:data:`RTOL` / :data:`ATOL` are relative to values of order 1 (losses in
loss-normalized units).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

import torch

RTOL = 2e-5
ATOL = 1e-6


def current_check() -> str:
    """``<module file>::<check>[<params>]`` of the running check, or ``?``."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "?")
    node = current.rsplit(" (", 1)[0]
    path, sep, rest = node.partition("::")
    return f"{path.rsplit('/', 1)[-1]}{sep}{rest}"


def names_token(message: str, name: str) -> bool:
    """Whether ``message`` names ``name`` as a whole token: ``q`` is not named
    by ``q_1`` or ``q2m``, ``q_7`` not by ``q_71``, and ``t`` not by the
    contraction "doesn't" (a quoted ``'t'`` is)."""
    pattern = rf"(?<![\w])(?<![A-Za-z]'){re.escape(name)}(?![\w])"
    return re.search(pattern, message) is not None


def _fmt(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return f"{float(value):.8g}"
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, float):
        return f"{value:.8g}"
    return repr(value) if isinstance(value, str) else str(value)


def format_inputs(inputs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v) if not isinstance(v, str) else v}" for k, v in inputs.items())


_UNSET: Any = object()


def fail(
    prop: str,
    problem: str,
    inputs: Mapping[str, Any],
    expected: Any = _UNSET,
    actual: Any = _UNSET,
    diagnosis: str | None = None,
) -> NoReturn:
    """Raise an ``AssertionError`` with the standard message."""
    lines = [
        current_check(),
        f"property: {prop}",
        f"problem:  {problem}",
        f"inputs:   {format_inputs(inputs)}",
    ]
    if expected is not _UNSET:
        lines.append(f"expected: {expected if isinstance(expected, str) else _fmt(expected)}")
    if actual is not _UNSET:
        lines.append(f"actual:   {actual if isinstance(actual, str) else _fmt(actual)}")
    if diagnosis:
        lines.append(f"diagnosis: {diagnosis}")
    raise AssertionError("\n".join(lines))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    if a64.shape != b64.shape:
        return False
    return bool(torch.allclose(a64, b64, rtol=rtol, atol=atol, equal_nan=False))


def assert_close(
    actual: torch.Tensor | None,
    expected: torch.Tensor,
    *,
    prop: str,
    quantity: str,
    inputs: Mapping[str, Any],
    meaning: str = "",
    alternatives: Mapping[str, torch.Tensor] | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> None:
    """Fail unless ``actual`` is a tensor within tolerance of ``expected``.

    Args:
        quantity: what is compared (``"regularization"``, ``"main loss of 'q_1'"``).
        meaning: how ``expected`` was computed, shown after its value.
        alternatives: values a typical wrong implementation would give, by
            description; when ``actual`` equals one, the message says so.
    """
    if actual is None:
        fail(prop, f"{quantity} is None", inputs, expected, "None")
    if not isinstance(actual, torch.Tensor):
        fail(prop, f"{quantity} is not a tensor", inputs, expected, repr(actual))
    if actual.numel() != expected.numel():
        fail(
            prop,
            f"{quantity} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}",
            inputs,
        )
    if _close(actual.reshape(expected.shape), expected, rtol, atol):
        return
    diagnosis = None
    for description, value in (alternatives or {}).items():
        if _close(actual.reshape(value.shape), value, rtol, atol):
            diagnosis = f'actual equals "{description}"'
            break
    shown = f"{_fmt(expected)} ({meaning})" if meaning else _fmt(expected)
    if expected.numel() > 1:
        diff = (actual.detach().double().reshape(expected.shape) - expected.double()).abs().max()
        shown += f"; max abs difference {float(diff):.3g}"
    fail(prop, f"{quantity} differs from the expected value", inputs, shown, actual, diagnosis)


def assert_true(
    condition: bool,
    *,
    prop: str,
    problem: str,
    inputs: Mapping[str, Any],
    expected: Any = _UNSET,
    actual: Any = _UNSET,
) -> None:
    """Fail with ``problem`` unless ``condition``."""
    if not condition:
        fail(prop, problem, inputs, expected, actual)


def assert_raises_naming(
    call: Callable[[], object],
    *,
    prop: str,
    what: str,
    inputs: Mapping[str, Any],
    must_mention: Iterable[str],
    exception: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> BaseException:
    """Fail unless ``call()`` raises ``exception`` whose message contains every
    string of ``must_mention`` (the offending variable or entry, and where it
    was found). An ``AssertionError`` from the implementation does not count:
    bad input deserves an error that names the fix, not an internal check."""
    mentions = list(must_mention)
    try:
        call()
    except AssertionError as err:
        fail(prop, f"{what}: got an AssertionError, not a clear error", inputs, actual=repr(err))
    except exception as err:
        message = str(err)
        missing = [m for m in mentions if m not in message]
        if missing:
            fail(
                prop,
                f"{what}: the error message does not mention {missing}",
                inputs,
                f"{_exc_names(exception)} mentioning {mentions}",
                f"{type(err).__name__}: {message}",
            )
        return err
    except (KeyboardInterrupt, SystemExit):
        raise  # Ctrl-C / a stopped run is not an answer of the implementation
    except BaseException as err:  # noqa: BLE001 - reported, not swallowed
        fail(
            prop,
            f"{what}: raised the wrong exception type",
            inputs,
            _exc_names(exception),
            f"{type(err).__name__}: {err}",
        )
    fail(prop, f"{what}: nothing was raised", inputs, _exc_names(exception), "no exception")


def _exc_names(exception: type[BaseException] | tuple[type[BaseException], ...]) -> str:
    if isinstance(exception, tuple):
        return " or ".join(e.__name__ for e in exception)
    return exception.__name__


def assert_no_error(
    call: Callable[[], Any], *, prop: str, what: str, inputs: Mapping[str, Any]
) -> Any:
    """Run ``call()``; an exception becomes a failure that names ``what``."""
    try:
        return call()
    except Exception as err:  # noqa: BLE001 - reported with context
        fail(prop, f"{what} raised", inputs, "no exception", f"{type(err).__name__}: {err}")
