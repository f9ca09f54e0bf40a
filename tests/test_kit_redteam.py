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

#: conformance/test_cn_behaviour.py::test_any_values_are_taken calls node.fail() after node.process.stop()
#: has closed the node's output files; NodeProcess.output_tail (conformance/launcher.py) then seeks a closed
#: file, and a node that prints a drawn value wrongly gets KIT ERROR (exit 3), not a CN-11 failure (exit 1).
_SEEK_OF_CLOSED_FILE = (
    "kit error instead of a verdict: test_any_values_are_taken fails the node after closing its output "
    "(ValueError: seek of closed file in conformance/launcher.py NodeProcess.output_tail), exit 3 not 1"
)

#: No check sends a frame after the ShutdownCN in the same write (the node_run fixture of
#: conformance/test_cn_registration.py ends its stream with it), though spec §8 says such frames are not acted on.
_NOTHING_AFTER_SHUTDOWN = (
    "CN-6 (conformance/test_cn_registration.py::test_shutdown_closes_and_exits_zero) only ever sees the "
    "ShutdownCN as the last frame: no check writes a MSG or another frame after it in the same segment"
)

#: The compute node's ENC-2 cases (conformance/refusals.py role_cases("cn"), and invalid.json #32/#33 whose
#: PERSID/BINPERSID payloads are not even a command) never put a foreign opcode inside a MSG that would
#: otherwise be valid, so a decoder that maps BINSTRING, SHORT_BINSTRING or BINPERSID to a value passes.
_LENIENT_OPCODES = (
    "ENC-2 at the compute node: no MSG carries BINSTRING, SHORT_BINSTRING or BINPERSID where the rest of the "
    "payload is valid (conformance/refusals.py role_cases('cn'); invalid.json #32/#33 fail CMD-1 anyway), so a "
    "decoder that accepts them and prints the MSG passes"
)

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
    "c-legacy-line-for-scalars": (
        "SCN-3's checks pass a node that prints the original's legacy line for scalars and MSG lines for "
        "containers (with --conformance-clause SCN-3: exit 0); a full run fails it only under CN-11, values "
        "reported missing. spec §9: only a node printing nothing but legacy lines fails SCN-3"),
    "c-shutdown-ignored-when-more-follows": _NOTHING_AFTER_SHUTDOWN,
    "c-acts-after-shutdown": _NOTHING_AFTER_SHUTDOWN,
    "c-live-time-from-ack": (
        "CN-10 (conformance/test_cn_behaviour.py::test_idle_node_stops_at_its_live_time) ACKs at once and allows "
        "the live time plus kit.timeout (2 s); a node counting its live time from the ACK instead of cn_start_time "
        "stops within that slack. Delaying the ACK by more than the slack would show it"),
    "c-live-time-from-connect": (
        "CN-10 (conformance/test_cn_behaviour.py::test_idle_node_stops_at_its_live_time) measures from the "
        "process start and allows kit.timeout (2 s or more, stretched for a slow target) on top; a node that spends "
        "1 s starting and then counts its live time from the connect stops inside that slack"),
    "c-master-close-exits-0": (
        "no check closes the connection between frames while the node serves and looks at its exit status; "
        "CN-11's body requires a non-zero status there (conformance/test_cn_behaviour.py has the checks for the "
        "other exits: CN-4, CN-6, CN-10)"),
    "c-protocol-1-strings": _LENIENT_OPCODES,
    "c-binpersid-as-none": _LENIENT_OPCODES,
    "ok-c-buffered-stdout": (
        "exit 5, not 0: the CN gauntlet (conformance/refusals.py _one_node/_await_lines) waits for marker lines while "
        "the node runs and calls every frame 'not judged' when none shows; a node whose stdout is block-buffered "
        "(the default for a pipe in C and Python) prints them only at exit. SCN-3 says nothing about flushing"),
    "c-float-15-digits": _SEEK_OF_CLOSED_FILE,
    "c-tuple-as-list": _SEEK_OF_CLOSED_FILE,
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
