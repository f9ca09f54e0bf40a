"""The clauses the kit has no test for, and why.

Every other clause of the kit's table (:data:`.report.CLAUSE_TABLE`: the
protocol's clauses and the TLS profile's) has at least one
kit test that can fail; the kit's own self-tests keep the two sets
complementary.  A clause is here only when nothing a peer can see on the wire
tells a conforming implementation from a broken one.
"""

from __future__ import annotations

from typing import Dict

__all__ = ["NOT_ON_THE_WIRE"]

NOT_ON_THE_WIRE: Dict[str, str] = {
    "FRM-2": (
        "no test: not observable on the wire; a refused payload is never sent, and the scenario "
        "never asks a sender for one over 65535 bytes"
    ),
    "VAL-1": (
        "no test of its own: any value outside the subset needs an opcode or a global outside the profile, "
        "so it is caught as ENC-2 or ENC-3"
    ),
    "MST-8": (
        "no test: not observable in the scenario; it serves each node on its own, with no broadcast "
        "to several registered nodes, and failure reports are local"
    ),
    "ERR-2": "no test: not observable on the wire; error reports are the implementation's logs and exceptions",
    "TLS-8": (
        "no test: the allow-list refuses by source address, and the kit reaches the master from one address "
        "that the master must allow"
    ),
    "TLS-9": "no test of its own: a run in plain mode is the check of the plain profile's bytes",
}
