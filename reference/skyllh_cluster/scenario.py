"""The conformance scenario (spec section 8, clauses SCN-1 and SCN-2).

A master that runs the scenario serves compute nodes for as long as it runs,
one after another and several at once where it can.  For each node it reads a
RegisterCN, sends an ACK, sends ``MSG(p)`` for each ``p`` in
:data:`SCENARIO_PAYLOADS` in order, sends a ShutdownCN and may then close the
connection.  The payloads walk every type and size class of the value subset.
"""

from __future__ import annotations

from typing import Any, Tuple

__all__ = ["SCENARIO_PAYLOADS"]

SCENARIO_PAYLOADS: Tuple[Any, ...] = (
    "conformance",
    "ünïcødé ✓",
    b"\x00\x01\xfe\xff",
    0,
    255,
    65535,
    -1,
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**64,
    1.5,
    float("-inf"),
    None,
    True,
    False,
    [1, "a", [2.5]],
    (1, 2),
    {"trial": 3, "seed": None},
    "x" * 60000,
)
