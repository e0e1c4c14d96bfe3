"""The conformance checks: one module per property of ``StepOutputLoss``.

Each check is a small function ``check_<property>(adapter, ...)`` over
deterministic cases from ``conformance.cases``; it reaches the implementation
only through the adapter (``conformance.adapter``) and compares with the
independent float64 oracle (``conformance.oracle``).
"""
