"""Benchmarks: each one a module that runs core and returns a typed result record, one command line
(``benchmarks.cli``: ``e2u bench <name>`` or ``python -m benchmarks <name>``), and one way to write what
they found (``benchmarks.report``: strict JSON, text tables, plots) under ``benchmarks/results/``.

``ranking`` (prefix-shared ranking speed), ``recommender`` (adapter v1 against the references, with a
learning curve), ``unlearning`` (every unlearning method from one parent on one forget set).
"""
