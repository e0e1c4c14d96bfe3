"""The reference implementation of ``StepOutputLoss`` and its training
integration (upstream issue #1273 of ai2cm/ace)."""

__version__ = "0.1.0"
