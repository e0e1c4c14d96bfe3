"""Ready-made adapters the suite ships: the reference's
(``conformance.adapters.reference``, the embedded default of
``python -m conformance``) and the released fme's
(``conformance.adapters.fme``, which imports fme only when it is built)."""
