"""Running the kit against the red-team variants (tests/kit_targets/redteam/target.py).

Shared by the two test modules, one per role (``test_kit_redteam_master.py``
and ``test_kit_redteam_cn.py``), so that pytest-xdist's ``--dist loadfile``
runs the two halves on two workers.

Each variant patches the independent implementation (written from spec/
alone) in one place.  A faulty variant must make the kit exit 1 with one of
the clauses it breaks among the failed ones; a correct variant (``ok-*``)
must make it exit 0.  A row the kit gets wrong today is marked
``xfail(strict=True)`` with where the kit's check lives, so that the mark
fails as soon as the kit is fixed.  A faulty variant is run with only the
checks of the clauses it breaks (``--conformance-clause``), unless it says
otherwise; a correct one with every check.
"""

from __future__ import annotations

import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from skyllh_cluster.conformance.drivers.process import MasterProcess, address_pattern

from kit_runs import KitRun, run_kit
from kit_targets.redteam.target import VARIANTS

TARGET = Path(__file__).resolve().parent / "kit_targets" / "redteam" / "target.py"
#: Like the independent programs: no site-packages, so nothing of the reference can be imported.
PYTHON = [sys.executable, "-I", "-S"]

#: Rows the kit gets wrong today: variant -> why (the check, and where it lives in conformance/).
KNOWN_WRONG: Dict[str, str] = {
    "m-shutdown-before-65535": (
        "not observable: the scenario's largest MSG is 60065 bytes (spec §9), so no check ever sees a 65535-byte "
        "MSG; SCN-1/MST-5 at the FRM-2 boundary are untested"),
    "m-bytes-after-ack-ignored": (
        "MST-11 (conformance/test_master_refusals.py::test_bytes_after_the_registration_end_the_connection) sends the "
        "extra bytes only in the same write as the RegisterCN. A byte after the ACK 'while the master still serves' "
        "cannot be arranged on loopback: a non-blocking writer gets 1.7-3 MB into the kernel even when the kit's "
        "SO_RCVBUF is 1-4 kB (measured), against a 61 kB scenario, so the master has written everything before the "
        "byte arrives; then this variant differs from a correct master only in closing at its 2 s linger instead of "
        "at once, which only a race on time could tell"),
}


@contextmanager
def _master(variant: str) -> Iterator[str]:
    argv = [*PYTHON, str(TARGET), "--variant", variant, "--host", "127.0.0.1", "--port", "0"]
    with MasterProcess(argv, address_pattern("listening"), stream="stdout") as master:
        yield master.target


def _cn_command(variant: str) -> str:
    words = [*PYTHON, str(TARGET), "--variant", variant, "{host}", "{port}", "--live-time", "{live_time}"]
    return " ".join(w if "{" in w else shlex.quote(w) for w in words)


def run_variant(name: str) -> KitRun:
    """One kit run against the variant ``name``, strict unless the variant says otherwise."""
    variant = VARIANTS[name]
    options: List[str] = ["--strict-conformance"] if variant.strict else []
    if variant.breaks and variant.narrow:  # only the checks of the clauses it breaks: do those fail?
        options += ["--conformance-clause", ",".join(sorted(variant.breaks))]
    if variant.role == "master":
        with _master(name) as target:
            return run_kit(["--target", target, *options])
    return run_kit(["--cn-command", _cn_command(name), *options])


def variant_params(role: str) -> List[object]:
    """The variants of one role ("master" or "cn") as pytest parameters, the known-wrong ones marked."""
    rows = []
    for name in (n for n, v in VARIANTS.items() if v.role == role):
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_WRONG[name])] if name in KNOWN_WRONG else []
        rows.append(pytest.param(name, id=name, marks=marks))
    return rows


def check_verdict(name: str) -> None:
    """Run the kit against variant ``name`` and assert the verdict the variant calls for."""
    variant = VARIANTS[name]
    run = run_variant(name)
    failed = run.failed()
    if not variant.breaks:
        assert run.status == 0, f"the kit failed correct variant {name} ({variant.how}): {sorted(failed)}\n{run.output[-3000:]}"
        return
    assert run.status == 1, f"the kit did not fail {name} ({variant.how}), exit {run.status}\n{run.output[-3000:]}"
    assert failed & variant.breaks, (
        f"the kit failed {name} ({variant.how}) but not on {sorted(variant.breaks)}: {sorted(failed)}\n{run.output[-3000:]}"
    )
