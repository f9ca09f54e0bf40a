"""``python -m skyllh_cluster.conformance``: run the conformance kit.

Same options as ``pytest --pyargs skyllh_cluster.conformance``; any pytest
option may be added::

    python -m skyllh_cluster.conformance --target 127.0.0.1:9999
    python -m skyllh_cluster.conformance --cn-command "./my-node {host} {port} {live_time}"
    python -m skyllh_cluster.conformance --target 127.0.0.1:9999 --conformance-report report.json

Exit status: 0 the target conforms, 1 a clause failed, 3 the kit itself
failed, 4 usage error (for example, neither --target nor --cn-command).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import pytest

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    """Run the kit's tests with ``argv`` as extra pytest arguments; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    kit_dir = str(Path(__file__).resolve().parent)
    # No cache directory: the kit may live in a read-only site-packages.
    # Running as ``-m skyllh_cluster.conformance`` has imported the package
    # before pytest could set up assertion rewriting for its plugin; the kit
    # does not rely on rewritten asserts, so that warning is only noise.
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    return int(pytest.main([kit_dir, "-p", "no:cacheprovider", *quiet, *args]))


if __name__ == "__main__":
    sys.exit(main())
