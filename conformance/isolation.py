"""What the checks hold of the adapter: :class:`GuardedAdapter`, a proxy in
front of the implementation's adapter (the ``adapter`` fixture is one), so
every check goes through it without knowing.

Isolation (the oracle computes from the suite's private values):

- **Specs, steps, batches** are handed to the adapter as deep copies
  (``copy.deepcopy``): an adapter that edits ``spec.main.weights`` or
  ``spec.normalizer.stds`` in place edits its own copy, and the suite's
  expected values are unchanged. The copy is compared with the suite's
  original after every call the adapter (or an object it built) makes; a
  difference fails the check, naming the field, its value and the method.
- **Tensor mappings** of a loss call (``output``, ``uncorrected``,
  ``target``, ``data_mask``) are handed as the adapter's own ``dict``
  holding the suite's tensors themselves (the contract: no copies, so the
  autograd graph and in-place writes stay visible). After the call, a key
  added, removed or pointing at another tensor, and a tensor whose values
  changed in place, fail the check ("inputs not mutated"), naming the
  mapping and the variable.

Result types are validated (:func:`validate_loss_result`,
:func:`validate_outcome`): 0-d floating-point tensors in the inputs' dtype
and on their device, on the autograd graph where the inputs are; gradients
of the step's parameters' shape and dtype. A failure names the dtype, shape
or device.

Every call runs under :func:`conformance.guard.adapter_call` (time bound,
global state guard). With ``--stepoutputloss-device DEVICE`` the loss-level
calls get every tensor on ``DEVICE`` (moved with ``.to``, which keeps the
graph to the suite's tensors); the stepper and distributed checks run on the
CPU.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from conformance.adapter import (
    Batch,
    LossResult,
    LossSpec,
    LossUnderTest,
    PreCorrectorSpec,
    RegularizationSpec,
    StepOutputLossAdapter,
    StepperSpec,
    StepperUnderTest,
    SuiteStep,
    TensorMapping,
    TrainOutcome,
)
from conformance.guard import ContractViolation, adapter_call, current

PROP_MUTATION = "inputs not mutated"
PROP_RESULT = "result types"


def _violation(message: str) -> ContractViolation:
    """A violation that stops the check (recorded on the running guard)."""
    guard = current()
    if guard is not None:
        guard.record(message)
    return ContractViolation(message)


def _report(message: str) -> None:
    """A violation the check can go on after (the suite's own values are
    intact): recorded on the running guard, which fails the check's report;
    outside a check it is raised."""
    guard = current()
    if guard is None:
        raise ContractViolation(message)
    guard.record(message)


# ------------------------------------------------------------------ comparison


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    a, b = a.detach(), b.detach()
    if a.is_floating_point() or a.is_complex():
        return bool(torch.equal(a, b) or torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))
    return bool(torch.equal(a, b))


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, Mapping):
        return repr(dict(value))
    return repr(value)


def differences(original: Any, handed: Any, path: str) -> list[str]:
    """Where ``handed`` (the adapter's copy) differs from ``original``: one
    ``path: original -> now`` line per difference (dataclasses, mappings,
    sequences, tensors, modules' parameters and buffers, plain values)."""
    if isinstance(original, torch.Tensor):
        if not isinstance(handed, torch.Tensor) or not _same_tensor(original, handed):
            return [f"{path}: {_show(original)} -> {_show(handed)} (values or type changed)"]
        return []
    if isinstance(original, torch.nn.Module):
        if not isinstance(handed, torch.nn.Module):
            return [f"{path}: a module -> {_show(handed)}"]
        out = differences(
            dict(original.state_dict(keep_vars=True)), dict(handed.state_dict(keep_vars=True)), path
        )
        for name, value in vars(original).items():
            if not name.startswith("_") and name != "training":
                out += differences(value, getattr(handed, name, None), f"{path}.{name}")
        return out
    if dataclasses.is_dataclass(original) and not isinstance(original, type):
        if type(handed) is not type(original):
            return [f"{path}: {type(original).__name__} -> {_show(handed)}"]
        out = []
        for field in dataclasses.fields(original):
            out += differences(
                getattr(original, field.name), getattr(handed, field.name), f"{path}.{field.name}"
            )
        return out
    if isinstance(original, Mapping):
        if not isinstance(handed, Mapping):
            return [f"{path}: {_show(original)} -> {_show(handed)}"]
        if list(original) != list(handed):
            return [f"{path}: keys {list(original)} -> {list(handed)} (was {_show(original)})"]
        out = []
        for k in original:
            out += differences(original[k], handed[k], f"{path}[{k!r}]")
        return out
    if isinstance(original, (list, tuple)):
        if not isinstance(handed, (list, tuple)) or len(handed) != len(original):
            return [f"{path}: {_show(original)} -> {_show(handed)}"]
        out = []
        for i, (a, b) in enumerate(zip(original, handed)):
            out += differences(a, b, f"{path}[{i}]")
        return out
    try:
        same = bool(original == handed) and type(original) is type(handed)
    except Exception:  # noqa: BLE001 - incomparable: treat as changed
        same = False
    return [] if same else [f"{path}: {_show(original)} -> {_show(handed)}"]


@dataclasses.dataclass
class Handed:
    """One argument the suite handed the adapter: the suite's original and
    the adapter's copy, compared after every call."""

    name: str
    original: Any
    copy: Any

    def check(self, what: str) -> None:
        diffs = differences(self.original, self.copy, self.name)
        if diffs:
            self.original = copy.deepcopy(self.copy)  # report each mutation once
            _report(
                f"{PROP_MUTATION}: {what} modified the {self.name} it was handed, in place: "
                f"{'; '.join(diffs)}. Treat it as read-only (the suite computes from its own "
                "copy, so its expected values were not affected)"
            )


def _hand(**arguments: Any) -> list[Handed]:
    """Deep copies of the arguments, copied together (shared parts stay shared)."""
    copies = copy.deepcopy(arguments)
    return [Handed(name, value, copies[name]) for name, value in arguments.items()]


def _check_all(handed: Sequence[Handed], what: str) -> None:
    for h in handed:
        h.check(what)


# ------------------------------------------------------------------ results


def _expected_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype | None:
    floats = [t.dtype for t in tensors if t.is_floating_point()]
    if not floats:
        return None
    dtype = floats[0]
    for other in floats[1:]:
        dtype = torch.promote_types(dtype, other)
    return dtype


def _on_device(t: torch.Tensor, device: torch.device) -> bool:
    return t.device.type == device.type and (device.index is None or t.device.index == device.index)


def validate_loss_result(
    result: Any,
    what: str,
    inputs: Sequence[torch.Tensor],
    device: torch.device,
) -> None:
    """A :class:`LossResult` (duck-typed): every value a 0-d floating-point
    tensor in the inputs' dtype, on ``device``; ``main_per_channel`` a
    mapping; ``regularization`` a tensor or None. When grad mode is on and
    every input tensor requires grad, ``main_per_channel``'s values,
    ``main_total`` and ``total`` must be on the graph (a trainer backwards
    them)."""
    fields = ("main_per_channel", "main_total", "regularization", "total")
    missing = [f for f in fields if not hasattr(result, f)]
    if missing:
        raise _violation(
            f"{PROP_RESULT}: {what} returned {type(result).__name__}, which lacks {missing}; "
            "return a conformance.adapter.LossResult"
        )
    per_channel = result.main_per_channel
    if not isinstance(per_channel, Mapping):
        raise _violation(
            f"{PROP_RESULT}: {what} returned main_per_channel of type "
            f"{type(per_channel).__name__}; it must be a mapping name -> 0-d tensor"
        )
    values: list[tuple[str, Any]] = [
        (f"main_per_channel[{k!r}]", v) for k, v in per_channel.items()
    ]
    values += [("main_total", result.main_total), ("total", result.total)]
    if result.regularization is not None:
        values.append(("regularization", result.regularization))
    dtype = _expected_dtype(inputs)
    graph = torch.is_grad_enabled() and bool(inputs) and all(t.requires_grad for t in inputs)
    found: dict[str, list[str]] = {}  # problem -> the values that have it
    for name, value in values:
        if not isinstance(value, torch.Tensor):
            found.setdefault(f"a {type(value).__name__}, not a tensor", []).append(name)
            continue
        if value.ndim != 0:
            found.setdefault(f"shape {tuple(value.shape)}, not 0-d (shape ())", []).append(name)
        if not value.is_floating_point():
            found.setdefault(f"dtype {value.dtype}, not floating point", []).append(name)
        elif dtype is not None and value.dtype != dtype:
            found.setdefault(
                f"dtype {value.dtype}; the contract keeps the inputs' dtype ({dtype})", []
            ).append(name)
        if not _on_device(value, device):
            found.setdefault(f"device {value.device}; the inputs are on {device}", []).append(name)
        if graph and name != "regularization" and not value.requires_grad:
            found.setdefault(
                "no autograd graph (requires_grad=False) although every input tensor requires "
                "grad; keep the graph (a trainer backwards it)",
                [],
            ).append(name)
    if found:
        n_channels = len(per_channel)
        parts = []
        for problem, names in found.items():
            channels = [n for n in names if n.startswith("main_per_channel[")]
            if n_channels > 1 and len(channels) == n_channels:
                names = [f"main_per_channel (all {n_channels})"] + [
                    n for n in names if n not in channels
                ]
            parts.append(f"{', '.join(names)}: {problem}")
        raise _violation(f"{PROP_RESULT}: {what} returned " + "; ".join(parts))


def validate_outcome(outcome: Any, what: str, step: SuiteStep) -> None:
    """A :class:`TrainOutcome`: ``metrics`` a mapping of numbers, ``gradients``
    a mapping of None or tensors with the parameter's shape and dtype."""
    problems = []
    metrics = getattr(outcome, "metrics", None)
    gradients = getattr(outcome, "gradients", None)
    if not isinstance(metrics, Mapping) or not isinstance(gradients, Mapping):
        raise _violation(
            f"{PROP_RESULT}: {what} returned {type(outcome).__name__} with metrics of type "
            f"{type(metrics).__name__} and gradients of type {type(gradients).__name__}; "
            "return a conformance.adapter.TrainOutcome (two mappings)"
        )
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            problems.append(f"metrics[{name!r}] has shape {tuple(value.shape)}, not a number")
            continue
        try:
            float(value)
        except (TypeError, ValueError):
            problems.append(f"metrics[{name!r}] is a {type(value).__name__}, not a number")
    parameters = dict(step.named_parameters())
    for name, grad in gradients.items():
        if grad is None:
            continue
        if not isinstance(grad, torch.Tensor):
            problems.append(f"gradients[{name!r}] is a {type(grad).__name__}, not a tensor or None")
            continue
        param = parameters.get(name)
        if param is None:
            continue  # an unknown name: the checks report the missing ones
        if grad.shape != param.shape:
            problems.append(
                f"gradients[{name!r}] has shape {tuple(grad.shape)}; the parameter's is "
                f"{tuple(param.shape)}"
            )
        if grad.dtype != param.dtype:
            problems.append(
                f"gradients[{name!r}] has dtype {grad.dtype}; the parameter's is {param.dtype}"
            )
    if problems:
        raise _violation(f"{PROP_RESULT}: {what} returned: " + "; ".join(problems))


# ------------------------------------------------------------------ proxies


def _to(mapping: TensorMapping | None, device: torch.device) -> dict[str, torch.Tensor] | None:
    if mapping is None:
        return None
    return {k: v.to(device) for k, v in mapping.items()}


class GuardedLoss:
    """The adapter's loss object behind the proxy (see the module docstring)."""

    def __init__(self, loss: LossUnderTest, handed: list[Handed], device: torch.device):
        self._loss = loss
        self._handed = handed
        self._device = device

    @property
    def needs_uncorrected_grad(self) -> bool:
        value = adapter_call(
            "loss.needs_uncorrected_grad", lambda: self._loss.needs_uncorrected_grad
        )
        _check_all(self._handed, "loss.needs_uncorrected_grad")
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loss, name)

    def __call__(
        self,
        output: TensorMapping,
        uncorrected: TensorMapping,
        target: TensorMapping,
        step: int,
        data_mask: TensorMapping | None = None,
    ) -> LossResult:
        what = "the adapter's loss(output, uncorrected, target, step)"
        suite = {"output": output, "uncorrected": uncorrected, "target": target}
        if data_mask is not None:
            suite["data_mask"] = data_mask
        handed: dict[str, dict[str, torch.Tensor]] = {}
        for name, mapping in suite.items():
            moved = _to(mapping, self._device)
            assert moved is not None
            handed[name] = moved
        ids = {name: {k: id(v) for k, v in m.items()} for name, m in handed.items()}
        values = {name: {k: v.detach().clone() for k, v in m.items()} for name, m in handed.items()}
        args: list[Any] = [handed["output"], handed["uncorrected"], handed["target"], step]
        if data_mask is not None:
            args.append(handed["data_mask"])
        result = adapter_call(what, self._loss, *args)
        replaced, modified = [], []
        for name, m in handed.items():
            if list(m) != list(ids[name]):
                replaced.append(f"the keys of {name} changed: {list(ids[name])} -> {list(m)}")
                continue
            for k, v in m.items():
                if id(v) != ids[name][k]:
                    replaced.append(f"{name}[{k!r}] was replaced by another tensor")
                elif not _same_tensor(v, values[name][k]):
                    modified.append(f"{name}[{k!r}] was modified in place")
        if modified:  # the suite's own tensors changed: no verdict can be trusted
            raise _violation(
                f"{PROP_MUTATION}: {what} modified its inputs: {'; '.join(modified + replaced)}. "
                "The loss must read its inputs only"
            )
        if replaced:  # only the adapter's own mappings changed
            _report(
                f"{PROP_MUTATION}: {what} modified the mappings it was handed: "
                f"{'; '.join(replaced)}. The loss must read its inputs only"
            )
        _check_all(self._handed, what)
        inputs = [*handed["output"].values(), *handed["uncorrected"].values()]
        validate_loss_result(result, what, inputs, self._device)
        return result


class GuardedStepper:
    """The adapter's train stepper behind the proxy."""

    def __init__(self, stepper: StepperUnderTest, handed: list[Handed], step: SuiteStep):
        self._stepper = stepper
        self._handed = handed
        self._step = step

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stepper, name)

    def train_on_batch(self, batch: Batch) -> TrainOutcome:
        what = "stepper.train_on_batch"
        batch_handed = _hand(batch=batch)
        outcome = adapter_call(what, self._stepper.train_on_batch, batch_handed[0].copy)
        _check_all([*self._handed, *batch_handed], what)
        validate_outcome(outcome, what, self._step)
        return outcome

    def train_epoch(self, batches: Sequence[Batch]) -> Any:
        what = "stepper.train_epoch"
        batches_handed = _hand(batches=list(batches))
        train_epoch = self._stepper.train_epoch  # type: ignore[attr-defined]  # optional hook
        epoch = adapter_call(what, train_epoch, batches_handed[0].copy)
        _check_all([*self._handed, *batches_handed], what)
        for outcome in getattr(epoch, "batches", ()):
            validate_outcome(outcome, what, self._step)
        return epoch

    def predict(self, batch: Batch) -> Sequence[Any]:
        what = "stepper.predict"
        batch_handed = _hand(batch=batch)
        steps = adapter_call(what, self._stepper.predict, batch_handed[0].copy)
        _check_all([*self._handed, *batch_handed], what)
        return steps


class GuardedAdapter:
    """The implementation's adapter behind the suite's isolation, time bound,
    state guard and result validation (see the module docstring)."""

    def __init__(self, adapter: StepOutputLossAdapter, device: str | torch.device = "cpu"):
        self._adapter = adapter
        self._device = torch.device(device)

    @property
    def wrapped(self) -> StepOutputLossAdapter:
        return self._adapter

    def __getattr__(self, name: str) -> Any:  # name, version, capabilities, extras
        return getattr(self._adapter, name)

    def build_loss(self, spec: LossSpec) -> GuardedLoss:
        what = "adapter.build_loss"
        handed = _hand(spec=spec)
        given = handed[0].copy
        if given.area_weights is not None and self._device.type != "cpu":
            given = dataclasses.replace(given, area_weights=given.area_weights.to(self._device))
            original = dataclasses.replace(spec, area_weights=given.area_weights.clone())
            handed[0] = Handed("spec", original, given)
        loss = adapter_call(what, self._adapter.build_loss, given)
        _check_all(handed, what)
        # dir(), not hasattr(): reading the property is a call into the adapter
        # (an adapter that deviates from NEEDS-1 may raise there)
        if not callable(loss) or "needs_uncorrected_grad" not in dir(loss):
            raise _violation(
                f"{PROP_RESULT}: {what} returned {type(loss).__name__}, which is not a loss "
                "object (callable, with needs_uncorrected_grad); see LossUnderTest"
            )
        return GuardedLoss(loss, handed, self._device)

    def build_corrector_config(
        self, precorrector: PreCorrectorSpec | None, regularization: RegularizationSpec | None
    ) -> object:
        what = "adapter.build_corrector_config"
        handed = _hand(precorrector=precorrector, regularization=regularization)
        config = adapter_call(
            what, self._adapter.build_corrector_config, handed[0].copy, handed[1].copy
        )
        _check_all(handed, what)
        return config

    def build_stepper(self, spec: StepperSpec, step: SuiteStep) -> GuardedStepper:
        what = "adapter.build_stepper"
        handed = _hand(spec=spec, step=step)
        stepper = adapter_call(what, self._adapter.build_stepper, handed[0].copy, handed[1].copy)
        # the step is the adapter's to train: its parameters may change, its
        # configuration may not
        spec_handed = handed[:1]
        _check_all(spec_handed, what)
        return GuardedStepper(stepper, spec_handed, handed[1].copy)

    def train_on_batch_distributed(
        self, spec: StepperSpec, step: SuiteStep, batch: Batch
    ) -> TrainOutcome:
        what = "adapter.train_on_batch_distributed"
        handed = _hand(spec=spec, step=step, batch=batch)
        outcome = adapter_call(
            what,
            self._adapter.train_on_batch_distributed,
            handed[0].copy,
            handed[1].copy,
            handed[2].copy,
        )
        _check_all([handed[0], handed[2]], what)
        validate_outcome(outcome, what, handed[1].copy)
        return outcome
