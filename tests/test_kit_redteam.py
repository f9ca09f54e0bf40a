"""The kit against red-team variants: realistic faults it must fail, odd but correct targets it must pass.

Each variant of ``tests/kit_targets/redteam/target.py`` patches the
independent implementation (written from spec/ alone) in one place.  A faulty
variant must make the kit exit 1 with one of the clauses it breaks among the
failed ones; a correct variant (``ok-*``) must make it exit 0.  A row the kit
gets wrong today is marked ``xfail(strict=True)`` with where the kit's check
lives, so that the mark fails as soon as the kit is fixed.

One kit run per variant, one at a time: a faulty variant is run with only the checks of the
clauses it breaks (``--conformance-clause``), a correct one with every check.
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

pytestmark = pytest.mark.timeout(900)

TARGET = Path(__file__).resolve().parent / "kit_targets" / "redteam" / "target.py"
#: Like the independent programs: no site-packages, so nothing of the reference can be imported.
PYTHON = [sys.executable, "-I", "-S"]

#: Rows the kit gets wrong today: variant -> why (the check, and where it lives in conformance/).
KNOWN_WRONG: Dict[str, str] = {
    "m-expired-served-when-several": (
        "MST-9 is judged with a single connection open (conformance/test_master_registration.py::"
        "test_expired_node_is_sent_nothing); a master that skips the expiry check only when another node is "
        "connected passes"),
    "m-shutdown-before-65535": (
        "not observable: the scenario's largest MSG is 60065 bytes (spec §9), so no check ever sees a 65535-byte "
        "MSG; SCN-1/MST-5 at the FRM-2 boundary are untested"),
    "m-regcn-key-order-required": (
        "ENC-8 against a master (conformance/test_master_registration.py::test_accepts_every_valid_encoding, "
        "payloads.encode) varies protocol, FRAME and memo but always writes _cn_start_time first; CMD-3 allows "
        "either order, and no check sends the other"),
    "m-setitem-refused": (
        "ENC-8 against a master (conformance/payloads.py encode, used by test_accepts_every_valid_encoding) always "
        "fills the RegisterCN state with MARK ... SETITEMS; no check writes it with two SETITEMs, which ENC-8 "
        "allows, so a master that refuses SETITEM passes"),
    "m-bytes-after-ack-ignored": (
        "MST-11 (conformance/test_master_refusals.py::test_bytes_after_the_registration_end_the_connection) sends the "
        "extra bytes only in the same write as the RegisterCN; no check sends a byte after the ACK while the master "
        "still has frames queued (e.g. with a small receive window) and looks for the close"),
    "m-registration-deadline-per-read": (
        "MST-7/FRM-6 (conformance/session.py Kit.judge_stall) try a silent connection and a half frame, never a "
        "trickle of bytes, which MST-7 names; a master that restarts its deadline on every read passes"),
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


def _params() -> List[object]:
    rows = []
    for name in VARIANTS:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_WRONG[name])] if name in KNOWN_WRONG else []
        rows.append(pytest.param(name, id=name, marks=marks))
    return rows


@pytest.mark.parametrize("name", _params())
def test_kit_verdict_on_red_team_variant(name: str) -> None:
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
