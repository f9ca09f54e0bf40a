"""Benchmarks of skyllh-cluster: run them all with ``python -m benchmarks``.

Each ``bench_*.py`` module here has a ``main() -> int``; it measures our code
side by side with the original in the same run, prints a table and returns
non-zero when a ratio it guards is exceeded.
"""
