"""The numbered requirements of the SkyLLH cluster protocol.

``spec/protocol.md`` is the normative text; this table is its index in code.
Errors raised by the codec and the state machines name a clause from here, and
every test of the conformance kit declares the clause it checks. A test in
``tests/test_spec.py`` keeps this table and the spec's text in step: every
ID defined in the spec appears here with the same level and title, and the
other way round.

IDs are stable: a clause that is withdrawn keeps its ID reserved and is never
renumbered.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = ["Level", "Role", "Clause", "CLAUSES"]


class Level(str, enum.Enum):
    """Requirement level, as in RFC 2119."""

    MUST = "MUST"
    SHOULD = "SHOULD"


class Role(str, enum.Enum):
    """Which implementation a clause constrains, and so which kit mode tests it."""

    ANY = "any"  # both roles, or the encoding itself
    MASTER = "master"
    COMPUTE_NODE = "compute-node"


@dataclass(frozen=True)
class Clause:
    """One numbered requirement of the spec."""

    id: str
    level: Level
    role: Role
    title: str

    def __str__(self) -> str:
        return f"{self.id} ({self.level.value}): {self.title}"


_M, _S = Level.MUST, Level.SHOULD
_ANY, _MST, _CN = Role.ANY, Role.MASTER, Role.COMPUTE_NODE

_TABLE: Tuple[Clause, ...] = (
    # --- 2. Framing ---------------------------------------------------------
    Clause("FRM-1", _M, _ANY, "A frame is a u16 little-endian length N followed by exactly N payload bytes"),
    Clause("FRM-2", _M, _ANY, "A sender refuses a payload over 65535 bytes before sending anything"),
    Clause("FRM-3", _M, _ANY, "A sender never sends an empty frame"),
    Clause("FRM-4", _M, _ANY, "A receiver reassembles frames split at any byte and separates coalesced frames"),
    Clause("FRM-5", _M, _ANY, "A connection closed inside a frame is an error; the partial frame is discarded"),
    Clause("FRM-6", _S, _ANY, "A receiver bounds the time it waits for the rest of a started frame"),
    # --- 3. Encoding: the pickle profile -------------------------------------
    Clause("ENC-1", _M, _ANY, "A payload is one pickle of protocol 2 to 5 that ends with STOP and nothing after it"),
    Clause("ENC-2", _M, _ANY, "A payload uses only the opcodes of the profile"),
    Clause("ENC-3", _M, _ANY, "A payload names only the globals of the profile, each only in its allowed position"),
    Clause("ENC-4", _M, _ANY, "A memo reference names an earlier, completed object"),
    Clause("ENC-5", _M, _ANY, "A receiver never executes, imports or calls anything named by a payload"),
    Clause("ENC-6", _M, _ANY, "A receiver bounds nesting depth and memory while decoding"),
    Clause("ENC-7", _S, _ANY, "A sender emits the canonical encoding (pickle protocol 4 as CPython writes it)"),
    Clause("ENC-8", _M, _ANY, "A receiver accepts every valid encoding at protocols 2 to 5, not only the canonical one"),
    # --- 4. Commands ---------------------------------------------------------
    Clause("CMD-1", _M, _ANY, "A command is NEWOBJ of one of the four command classes with an empty argument tuple"),
    Clause("CMD-2", _M, _ANY, "ACK and ShutdownCN carry no state"),
    Clause("CMD-3", _M, _ANY, "RegisterCN state is exactly _cn_start_time and _cn_live_time, both int"),
    Clause("CMD-4", _M, _ANY, "MSG state is exactly one key, msg, holding a value of the value subset"),
    Clause("VAL-1", _M, _ANY, "A MSG value is built only of None, bool, int, float, str, bytes, list, tuple and dict"),
    Clause("VAL-2", _M, _ANY, "Dict keys are hashable values of the subset"),
    Clause("VAL-3", _M, _ANY, "A value is acyclic"),
    Clause("VAL-4", _M, _ANY, "Values round-trip exactly: int of any size, float bit patterns, str code points, bytes"),
    # --- 5. Master role ------------------------------------------------------
    Clause("MST-1", _M, _MST, "The master accepts RegisterCN as the first frame of a connection"),
    Clause("MST-2", _M, _MST, "The master answers a valid RegisterCN with exactly one ACK, only after the whole frame"),
    Clause("MST-3", _M, _MST, "An invalid first frame gets no ACK and its connection is closed"),
    Clause("MST-4", _M, _MST, "A stalled, garbage or malicious connection does not stop the master serving others"),
    Clause("MST-5", _M, _MST, "After ACK the master sends only MSG and ShutdownCN, and nothing after ShutdownCN"),
    Clause("MST-6", _S, _MST, "The master closes the connection after ShutdownCN"),
    Clause("MST-7", _S, _MST, "The master bounds the time a connection may take to register"),
    Clause("MST-8", _M, _MST, "A broadcast reaches every live node even when others have failed, and reports failures"),
    Clause("MST-9", _S, _MST, "The master drops a node whose live time has passed and sends it nothing"),
    Clause("MST-10", _S, _MST, "The master serves several compute nodes concurrently"),
    Clause("MST-11", _M, _MST, "The master closes a connection on which anything follows the RegisterCN"),
    # --- 6. Compute node role ------------------------------------------------
    Clause("CN-1", _M, _CN, "The compute node sends RegisterCN as the first frame after connecting"),
    Clause("CN-2", _M, _CN, "cn_start_time is the node's start as integer Unix time"),
    Clause("CN-3", _M, _CN, "cn_live_time is the configured live time in integer seconds"),
    Clause("CN-4", _M, _CN, "A compute node whose first reply is not ACK does not carry on"),
    Clause("CN-5", _M, _CN, "The compute node sends nothing after RegisterCN"),
    Clause("CN-6", _M, _CN, "On ShutdownCN the compute node closes the connection and exits with status 0"),
    Clause("CN-7", _S, _CN, "The compute node closes promptly after ShutdownCN, within 2 seconds"),
    Clause("CN-8", _M, _CN, "The compute node ignores valid commands it does not handle and keeps serving"),
    Clause("CN-9", _S, _CN, "The compute node skips a well-framed payload it cannot decode and keeps serving"),
    Clause("CN-10", _M, _CN, "The compute node stops when its live time has passed, even when the master is silent"),
    Clause("CN-11", _M, _CN, "The compute node decodes every MSG value of the subset exactly and in order"),
    # --- 7. Error handling ---------------------------------------------------
    Clause("ERR-1", _M, _ANY, "A protocol violation closes at most the offending connection"),
    Clause("ERR-2", _S, _ANY, "An error report names the clause, the byte offset and the reason"),
    # --- 8. Conformance scenario ---------------------------------------------
    Clause("SCN-1", _M, _MST, "In the scenario the master sends MSG(p) for each scenario payload in order, then ShutdownCN"),
    Clause("SCN-2", _M, _MST, "In the scenario the master serves compute nodes one after another for as long as it runs"),
    Clause("SCN-3", _M, _CN, "A compute node under test reports each MSG value on its standard output as one line"),
    # --- 9. Security ---------------------------------------------------------
    Clause("SEC-1", _M, _ANY, "Nothing received is ever given to an unrestricted unpickler"),
)

CLAUSES: Dict[str, Clause] = {c.id: c for c in _TABLE}
if len(CLAUSES) != len(_TABLE):  # pragma: no cover - guards the table above
    raise AssertionError("duplicate clause ID in the clause table")
