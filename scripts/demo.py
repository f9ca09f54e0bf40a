"""``make demo``: the conformance kit against the reference, then against the original; HTML reports of both.

Starts the reference master in scenario mode and runs the kit against it and
the reference compute node in one run (strict), printing the clause table
and writing ``build/demo/reference.html``.  Then, if the original
(skyllh==24.1.0) is installed, does the same against the original master
and compute node (``build/demo/original.html``); if it is not, says how to
install it.  Exits non-zero if the reference does not conform.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

from skyllh_cluster.conformance.__main__ import main as run_kit
from skyllh_cluster.conformance.drivers.compute_nodes import ORIGINAL, REFERENCE
from skyllh_cluster.conformance.drivers.reference_master import reference_master

OUT = Path(__file__).resolve().parent.parent / "build" / "demo"
# Only the progress lines and the table: pytest's own header is not the point here.
QUIET = ["--no-header", "-p", "no:warnings", "--tb=no", "-rN"]


def _kit(target: str, node: str, html: Path, *extra: str) -> int:
    return run_kit(["--target", target, "--cn-command", node, "--conformance-html", str(html),
                    "--conformance-report", str(html.with_suffix(".json")), *extra, *QUIET])


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    print("== the conformance kit against the reference master (skyllh-cluster master --scenario conformance) "
          "and compute node (python -m skyllh_cluster.compute_node) ==", flush=True)
    started = time.monotonic()
    with reference_master() as master:
        reference_status = _kit(master.target, REFERENCE, OUT / "reference.html", "--strict-conformance")
    took = time.monotonic() - started
    print(f"\nreference: exit {reference_status} in {took:.1f} s; HTML report: {OUT / 'reference.html'}", flush=True)

    if importlib.util.find_spec("skyllh") is None:
        print("\nthe original (skyllh==24.1.0) is not installed, so there is no report for it; install it with\n"
              f"  {sys.executable} -m pip install skyllh==24.1.0\nand run make demo again "
              "(make test installs it too).")
    else:
        from skyllh_cluster.conformance.drivers.original_master import original_master

        print("\n== the conformance kit against the ORIGINAL master and compute node (skyllh 24.1.0) ==", flush=True)
        with original_master() as master:
            original_status = _kit(master.target, ORIGINAL, OUT / "original.html", "--strict-conformance")
        print(f"\noriginal: exit {original_status} (1 = does not conform, as expected: see spec/deviations.md); "
              f"HTML report: {OUT / 'original.html'}")
    print(f"\nreports: {OUT / 'reference.html'}" + (f" and {OUT / 'original.html'}" if (OUT / "original.html").exists() else ""))
    return 0 if reference_status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
