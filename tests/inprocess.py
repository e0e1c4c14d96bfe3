"""Support for running the suite in-process (``pytester``) from tests.

pytester restores ``sys.modules`` after every in-process run, and after the
test that used it. Anything first imported *inside* is imported again later:
slow for the suite's own modules, and fatal for torch's lazily imported
internals (the optimizer's dynamo hooks register a ``TORCH_LIBRARY`` that
cannot be registered twice). :func:`preload` imports all of it up front; call
it at import time of a test module that runs the suite in-process, so the
modules are in place before any snapshot is taken.
"""

from __future__ import annotations

import importlib
import pkgutil


def preload() -> None:
    """Import the checks, the shipped adapters and mutants, and run one
    training step of the reference (which pulls in torch's lazy imports)."""
    import conformance.checks
    from conformance.adapters import reference
    from conformance.harness import training_setup
    from fixtures import mutants
    from fixtures.variant import adapter as variant  # noqa: F401

    for info in pkgutil.iter_modules(conformance.checks.__path__):
        importlib.import_module(f"conformance.checks.{info.name}")
    for name in mutants.mutant_names():
        mutants.load(name)
    spec, step, batch = training_setup(1, (), None)
    reference.make_adapter().build_stepper(spec, step).train_on_batch(batch)
