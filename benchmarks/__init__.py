"""One script per experiment; run from the repository root as ``python -m benchmarks.<name>``
(e.g. ``python -m benchmarks.grid``). Each prints its figures and writes JSON (and a PNG)
under benchmarks/results/."""
