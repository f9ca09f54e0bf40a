"""The codec against pickle, side by side in one run.

For each payload: our ``loads`` against ``pickle.loads`` on the same bytes
(with skyllh installed, so that pickle resolves the original classes), our
``dumps`` against ``pickle.dumps`` of the original command, and the grammar's
``loads_checked``.  Times are the minimum over many repeats of timeit.  Exits
1 if decoding a guarded payload takes more than 2x pickle.loads: the commands,
MSG of every scalar of the conformance scenario (the 60000-char str included)
and of a list of 100 small ints.  The containers of the scenario, a nested
dict, 50 strs and 20 str->float entries are measured and printed unguarded:
their pure-Python loop costs more per opcode than C pickle does.
"""

from __future__ import annotations

import pickle
import sys
import timeit
from typing import Any, Callable, List, Tuple

import skyllh.cluster.commands as original

from skyllh_cluster.codec import dumps, loads, loads_checked
from skyllh_cluster.commands import ACK, MSG, Command, RegisterCN, ShutdownCN
from skyllh_cluster.scenario import SCENARIO_PAYLOADS

LIMIT = 2.0
_CONTAINERS = (list, tuple, dict)


def label(value: Any) -> str:
    """A short name for a MSG value."""
    if type(value) in (str, bytes) and len(value) > 20:
        return f"MSG({len(value)} {'chars' if type(value) is str else 'bytes'})"
    return f"MSG({value!r})"


def cases() -> List[Tuple[str, Command, Any, bool]]:
    """(label, our command, the original's, guarded) for every payload measured."""
    nested = {"trial": 3, "seed": None, "grid": [[i * 0.5, str(i), (i, -i)] for i in range(8)], "tag": b"\x00\xff"}
    values = [
        ("MSG('hello')", "hello", True),
        ("MSG(100 chars)", "y" * 100, True),
        *((f"scenario {label(p)}", p, type(p) not in _CONTAINERS) for p in SCENARIO_PAYLOADS),
        ("MSG(nested dict)", nested, False),
        ("MSG(100 ints)", list(range(100)), True),
        ("MSG(50 short strs)", [f"s{i}" for i in range(50)], False),
        ("MSG(20 str->float)", {f"k{i}": i * 0.25 for i in range(20)}, False),
    ]
    return [
        ("ACK", ACK(), original.ACK(), True),
        ("ShutdownCN", ShutdownCN(), original.ShutdownCN(), True),
        ("RegisterCN", RegisterCN(1732560000, 7200), original.RegisterCN(1732560000, 7200), True),
        *((name, MSG(value), original.MSG(value), guarded) for name, value, guarded in values),
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
    guarded = []
    all_cases = list(cases())
    for number, (name, ours, theirs, guard) in enumerate(all_cases, 1):
        # Each case takes seconds (timeit's autorange, many repeats): say where we are.
        print(f"[{number}/{len(all_cases)}] {name}", file=sys.stderr, flush=True)
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
        if guard:
            guarded.append(name)
            if ratio > LIMIT:
                failed.append(name)
    header = ("payload", "bytes", "pickle.loads", "loads", "ratio", "pickle.dumps", "dumps", "ratio", "loads_checked")
    print(f"{header[0]:<38}{header[1]:>7}{header[2]:>14}{header[3]:>11}{header[4]:>7}"
          f"{header[5]:>14}{header[6]:>11}{header[7]:>7}{header[8]:>15}")
    for name, size, pl, l, r, pd, d, rd, c in rows:
        print(f"{name:<38}{size:>7}{pl * 1e6:>12.2f}us{l * 1e6:>9.2f}us{r:>7.2f}"
              f"{pd * 1e6:>12.2f}us{d * 1e6:>9.2f}us{rd:>7.2f}{c * 1e6:>13.1f}us")
    if failed:
        print(f"FAIL: loads is more than {LIMIT}x pickle.loads for {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"ok: loads is within {LIMIT}x pickle.loads for the {len(guarded)} guarded payloads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
