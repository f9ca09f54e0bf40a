"""The codec against pickle, side by side in one run.

For each payload: our ``loads`` against ``pickle.loads`` on the same bytes
(with skyllh installed, so that pickle resolves the original classes), our
``dumps`` against ``pickle.dumps`` of the original command, and the grammar's
``loads_checked``.  Times are the minimum over many repeats of timeit.  Exits
1 if decoding ACK, RegisterCN or MSG('hello') takes more than 2x pickle.loads.
"""

from __future__ import annotations

import pickle
import sys
import timeit
from typing import Any, Callable, List, Tuple

import skyllh.cluster.commands as original

from skyllh_cluster.codec import dumps, loads, loads_checked
from skyllh_cluster.commands import ACK, MSG, Command, RegisterCN, ShutdownCN

GUARDED = {"ACK", "RegisterCN", "MSG('hello')"}
LIMIT = 2.0


def cases() -> List[Tuple[str, Command, Any]]:
    nested = {"trial": 3, "seed": None, "grid": [[i * 0.5, str(i), (i, -i)] for i in range(8)], "tag": b"\x00\xff"}
    big = "x" * 60000
    return [
        ("ACK", ACK(), original.ACK()),
        ("ShutdownCN", ShutdownCN(), original.ShutdownCN()),
        ("RegisterCN", RegisterCN(1732560000, 7200), original.RegisterCN(1732560000, 7200)),
        ("MSG('hello')", MSG("hello"), original.MSG("hello")),
        ("MSG(100 chars)", MSG("y" * 100), original.MSG("y" * 100)),
        ("MSG(nested)", MSG(nested), original.MSG(nested)),
        ("MSG(60000 chars)", MSG(big), original.MSG(big)),
    ]


def best(function: Callable[[], Any], repeat: int = 7) -> float:
    """Seconds per call: the minimum over ``repeat`` timeit runs."""
    timer = timeit.Timer(function)
    number, _ = timer.autorange()
    number = max(number, 1)
    return min(timer.repeat(repeat=repeat, number=number)) / number


def main() -> int:
    rows = []
    failed = []
    for name, ours, theirs in cases():
        payload = dumps(ours)
        assert payload == pickle.dumps(theirs, protocol=4)
        t_pickle_loads = best(lambda: pickle.loads(payload))
        t_loads = best(lambda: loads(payload))
        t_pickle_dumps = best(lambda: pickle.dumps(theirs, protocol=4))
        t_dumps = best(lambda: dumps(ours))
        t_checked = best(lambda: loads_checked(payload), repeat=3)
        ratio = t_loads / t_pickle_loads
        rows.append((name, len(payload), t_pickle_loads, t_loads, ratio, t_pickle_dumps, t_dumps,
                     t_dumps / t_pickle_dumps, t_checked))
        if name in GUARDED and ratio > LIMIT:
            failed.append(name)
    header = ("payload", "bytes", "pickle.loads", "loads", "ratio", "pickle.dumps", "dumps", "ratio", "loads_checked")
    print(f"{header[0]:<18}{header[1]:>7}{header[2]:>14}{header[3]:>11}{header[4]:>7}"
          f"{header[5]:>14}{header[6]:>11}{header[7]:>7}{header[8]:>15}")
    for name, size, pl, l, r, pd, d, rd, c in rows:
        print(f"{name:<18}{size:>7}{pl * 1e6:>12.2f}us{l * 1e6:>9.2f}us{r:>7.2f}"
              f"{pd * 1e6:>12.2f}us{d * 1e6:>9.2f}us{rd:>7.2f}{c * 1e6:>13.1f}us")
    if failed:
        print(f"FAIL: loads is more than {LIMIT}x pickle.loads for {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"ok: loads is within {LIMIT}x pickle.loads for {', '.join(sorted(GUARDED))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
