"""Benchmarks of skyllh-cluster: run them all with ``python -m benchmarks``.

Each ``bench_*.py`` module here has a ``main() -> int``; it measures our code
side by side with the original in the same run, prints a table and returns
non-zero when a ratio it guards is exceeded.
"""

import os

# The benchmarks import the original skyllh, and with it numpy and scipy,
# whose BLAS starts a thread per core that spins after use; that CPU would be
# taken from the masters measured here.  No benchmark does linear algebra.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
