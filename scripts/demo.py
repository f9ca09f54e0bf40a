"""``make demo``: the conformance kit against the reference, then against the original; HTML reports of both.

Starts the reference master in scenario mode and runs the kit against it
and the reference compute node in one run (strict), printing the clause table
and writing ``build/demo/reference.html``.  Then does the same against the
original master and compute node of skyllh==24.1.0
(``build/demo/original.html``), which ``make demo`` installs (the
``original`` extra); run by hand without it, this says how to install it.
Ends by naming both reports.  Exits 0 when the reference conforms (the
original is expected not to: spec/deviations.md), 1 when it does not.
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


def _kit(target: str, node: str, html: Path, *extra: str) -> int:
    return run_kit(["--target", target, "--cn-command", node, "--conformance-html", str(html),
                    "--conformance-report", str(html.with_suffix(".json")), *extra])


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    reference_html, original_html = OUT / "reference.html", OUT / "original.html"
    for stale in (reference_html, original_html):  # never name a report of an earlier run
        if stale.exists():
            stale.unlink()
    print("== the conformance kit against the reference master (skyllh-cluster master --scenario conformance) "
          "and compute node (python -m skyllh_cluster.compute_node) ==", flush=True)
    started = time.monotonic()
    with reference_master() as master:
        reference_status = _kit(master.target, REFERENCE, reference_html, "--strict-conformance")
    took = time.monotonic() - started
    print(f"\nreference: exit {reference_status} in {took:.1f} s; HTML report: {reference_html}", flush=True)

    if importlib.util.find_spec("skyllh") is None:
        print("\nthe original (skyllh==24.1.0) is not installed, so there is no report for it; install it with\n"
              f"  {sys.executable} -m pip install skyllh==24.1.0\nand run this again "
              "(make demo and make test install it).")
    else:
        from skyllh_cluster.conformance.drivers.original_master import original_master

        print("\n== the conformance kit against the ORIGINAL master and compute node (skyllh 24.1.0) ==", flush=True)
        started = time.monotonic()
        with original_master() as master:
            original_status = _kit(master.target, ORIGINAL, original_html, "--strict-conformance")
        took = time.monotonic() - started
        print(f"\noriginal: exit {original_status} in {took:.1f} s (1 = does not conform, as expected: "
              f"see spec/deviations.md); HTML report: {original_html}")
    print("\nHTML reports, one self-contained file each (open in a browser):")
    for name, html in (("the reference:", reference_html), ("the original:", original_html)):
        if html.exists():
            print(f"  {name:<15}{html}")
    return 0 if reference_status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
