"""The course write-up's claims (docs/reference.md), each measured and given a verdict.

The command is ``python -m bench.claims`` (``__main__``). One module per group
of claims, each with ``CLAIMS`` (its ids), ``measure(ctx)`` (through the one
run path and the theory code) and ``judge(measured, ctx)`` (the verdict rules,
pure functions of the measured numbers, a paragraph and a figure per claim):
``training`` (1-5, on the runs of ``seed_runs``), ``gradient_flow`` (6),
``landscape`` (7), ``minimum`` (8), ``residual_block`` (9). ``verdict`` holds
the verdict row and the statistics the rules share; ``report`` writes
claims.csv and claims.md.
"""
