"""The compute node's MSG lines: their cost, side by side with the unbounded renderings.

For each value, our bounded ``msg_line`` against ``json.dumps(value_to_json(v))``
(the vectors' notation, which expands every shared reference and changes the
interpreter's int-to-str limit), and our ``legacy_line`` against ``str(v)``,
the original's line.  Times are the minimum over repeats; memory is the
tracemalloc peak of one call.

Exits 1 if a scenario payload's SCN-3 line (the default) costs more than 3x
the unbounded rendering (bounding must not make the common case slow), or if a hostile
value (issue 10, F5/F6) takes more than 1 s or 64 MiB to render: those have no
side-by-side figure that is not itself the attack (str() of 10**6 shared
references is a 100 MB string), so they are guarded absolutely.  The legacy
line's ratio is printed, not guarded: str() is one C call, while the bounded
line walks the value in Python first, a fixed few microseconds per MSG.
"""

from __future__ import annotations

import json
import sys
import timeit
import tracemalloc
from typing import Any, Callable, List, Optional, Tuple

from skyllh_cluster.msg_output import legacy_line, msg_line
from skyllh_cluster.scenario import SCENARIO_PAYLOADS
from skyllh_cluster.wire.vector_json import value_to_json

RATIO_LIMIT = 3.0
HOSTILE_SECONDS = 1.0
HOSTILE_BYTES = 64 * 2**20


def best(function: Callable[[], Any], repeat: int = 5, number: int = 0) -> float:
    """Seconds per call: the minimum over ``repeat`` timeit runs."""
    timer = timeit.Timer(function)
    if not number:
        number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


def peak_bytes(function: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def vectors_json(value: Any) -> str:
    return json.dumps(value_to_json(value), separators=(",", ":"))


def label(value: Any) -> str:
    if type(value) in (str, bytes) and len(value) > 20:
        return f"{len(value)} {'chars' if type(value) is str else 'bytes'}"
    text = repr(value)
    return text if len(text) <= 30 else text[:27] + "..."


def hostile_values() -> List[Tuple[str, Any]]:
    inner = ("x" * 100,) * 1000
    chain: Any = "leaf"
    for _ in range(200):
        chain = (chain, chain)
    return [
        ("10**5000 (F5)", 10**5000),
        ("int of 157,740 digits", (1 << (65_440 * 8 - 1)) - 1),
        ("10**6 shared refs, 4.2 KB (F6)", (inner,) * 1000),
        ("2**201 nodes in 201 objects", chain),
    ]


def main() -> int:
    status = 0
    rows: List[Tuple[str, str, float, Optional[float], int]] = []
    for value in SCENARIO_PAYLOADS:
        ours, theirs = best(lambda: msg_line(value)), best(lambda: vectors_json(value))
        rows.append((f"scenario {label(value)}", "json", ours, theirs, peak_bytes(lambda: msg_line(value))))
        ours, theirs = best(lambda: legacy_line(value)), best(lambda: str(value))
        rows.append((f"scenario {label(value)}", "legacy", ours, theirs, peak_bytes(lambda: legacy_line(value))))
    print(f"{'value':34} {'line':6} {'ours':>10} {'unbounded':>10} {'ratio':>6} {'peak':>9}")
    for name, kind, ours, theirs, peak in rows:
        ratio = ours / theirs if theirs else float("nan")
        guarded = kind == "json"
        flag = "" if ratio <= RATIO_LIMIT or not guarded else "  > limit"
        status |= guarded and ratio > RATIO_LIMIT
        print(f"{name:34} {kind:6} {ours * 1e6:8.1f}us {theirs * 1e6:8.1f}us {ratio:6.2f} {peak / 1024:7.0f}KB{flag}")
    for name, value in hostile_values():
        for kind, render in (("json", msg_line), ("legacy", legacy_line)):
            seconds = best(lambda: render(value), repeat=3, number=1)
            peak = peak_bytes(lambda: render(value))
            size = len(render(value)) + 1
            flag = "" if seconds <= HOSTILE_SECONDS and peak <= HOSTILE_BYTES else "  > limit"
            status |= bool(flag)
            print(f"{name:34} {kind:6} {seconds * 1e3:8.1f}ms {'-':>10} {'-':>6} {peak / 2**20:7.1f}MB line {size} B{flag}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
