"""The codec against pickle, side by side in one run, and the cost of hostile payloads.

For each payload: our ``loads`` against ``pickle.loads`` on the same bytes
(with skyllh installed, so that pickle resolves the original classes), our
``dumps`` against ``pickle.dumps`` of the original command, and the grammar's
``loads_checked``.  Each pair is timed in alternation, about 20 ms a turn,
and each time is its minimum over the turns (``loads`` 25 each).

Guards (exit 1 when broken): the geometric mean of loads / pickle.loads over
ACK, RegisterCN, MSG('hello') and MSG({'trial': 3, 'seed': None}) at most 0.5,
and every payload of the conformance scenario within 2x.  The other values
(nested containers, runs of ints and strs) are measured and printed.  Values
of at most two container levels take a template (wire/decoder.py); deeper
ones go through the semantic core, a pure-Python call per opcode, where C
pickle is a switch.  loads / pickle.loads before the templates of MSG values
(main at f8b4010) and after, side by side on the shared 2-core machine:

    MSG(nested dict)     14.8x -> 16-20x  (four levels: still the core)
    MSG(100 ints)        10.1x -> 0.9x
    MSG(50 short strs)    9.6x -> 3.3x
    MSG(20 str->float)    7.8x -> 2.5x

Then the regression corpus of hostile payloads (tests/hostile_payloads.py):
how long ``loads`` and ``loads_checked`` take to refuse each, and the length
of the reason.  Guards: every refusal by ``loads`` under 0.2 s, every reason
under 64 KB.
"""

from __future__ import annotations

import math
import pickle
import sys
import time
import timeit
from pathlib import Path
from typing import Any, Callable, List, Tuple

import skyllh.cluster.commands as original

from skyllh_cluster.codec import dumps, loads, loads_checked
from skyllh_cluster.commands import ACK, MSG, Command, RegisterCN, ShutdownCN
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.scenario import SCENARIO_PAYLOADS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hostile_payloads import CORPUS  # noqa: E402

LIMIT = 2.0
GEOMEAN_LIMIT = 0.5
GEOMEAN_CASES = ("ACK", "RegisterCN", "MSG('hello')", "scenario MSG({'trial': 3, 'seed': None})")
REFUSAL_LIMIT = 0.2  # seconds
REASON_LIMIT = 64 * 1024


def label(value: Any) -> str:
    """A short name for a MSG value."""
    if type(value) in (str, bytes) and len(value) > 20:
        return f"MSG({len(value)} {'chars' if type(value) is str else 'bytes'})"
    return f"MSG({value!r})"


def cases() -> List[Tuple[str, Command, Any, bool]]:
    """(label, our command, the original's, guarded) for every payload measured."""
    nested = {"trial": 3, "seed": None, "grid": [[i * 0.5, str(i), (i, -i)] for i in range(8)], "tag": b"\x00\xff"}
    values = [
        ("MSG('hello')", "hello", False),
        ("MSG(100 chars)", "y" * 100, False),
        *((f"scenario {label(p)}", p, True) for p in SCENARIO_PAYLOADS),
        ("MSG(nested dict)", nested, False),
        ("MSG(100 ints)", list(range(100)), False),
        ("MSG(50 short strs)", [f"s{i}" for i in range(50)], False),
        ("MSG(20 str->float)", {f"k{i}": i * 0.25 for i in range(20)}, False),
    ]
    return [
        ("ACK", ACK(), original.ACK(), False),
        ("ShutdownCN", ShutdownCN(), original.ShutdownCN(), False),
        ("RegisterCN", RegisterCN(1732560000, 7200), original.RegisterCN(1732560000, 7200), False),
        *((name, MSG(value), original.MSG(value), guarded) for name, value, guarded in values),
    ]


def best(function: Callable[[], Any], repeat: int = 7) -> float:
    """Seconds per call: the minimum over ``repeat`` timeit runs."""
    timer = timeit.Timer(function)
    number, _ = timer.autorange()
    number = max(number, 1)
    return min(timer.repeat(repeat=repeat, number=number)) / number


def side_by_side(theirs: Callable[[], Any], ours: Callable[[], Any], rounds: int = 25) -> Tuple[float, float]:
    """Seconds per call of each, timed in alternation (about 20 ms a turn): the minimum of each over ``rounds``.

    On a shared machine the load changes from second to second; timing the
    two in turns gives both the same conditions, so that the ratio is theirs.
    """
    timers = [timeit.Timer(theirs), timeit.Timer(ours)]
    number = max(1, timers[0].autorange()[0] // 10)
    times: List[List[float]] = [[], []]
    for _ in range(rounds):
        for timer, found in zip(timers, times):
            found.append(timer.timeit(number) / number)
    return min(times[0]), min(times[1])


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
        t_pickle_loads, t_loads = side_by_side(lambda: pickle.loads(payload), lambda: loads(payload))
        t_pickle_dumps, t_dumps = side_by_side(lambda: pickle.dumps(theirs, protocol=4), lambda: dumps(ours), rounds=7)
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
    ratios = {row[0]: row[4] for row in rows}
    geomean = math.exp(sum(math.log(ratios[name]) for name in GEOMEAN_CASES) / len(GEOMEAN_CASES))
    print(f"geometric mean of loads/pickle.loads over {', '.join(GEOMEAN_CASES)}: {geomean:.2f}")
    status = 0
    if failed:
        print(f"FAIL: loads is more than {LIMIT}x pickle.loads for {', '.join(failed)}", file=sys.stderr)
        status = 1
    else:
        print(f"ok: loads is within {LIMIT}x pickle.loads for the {len(guarded)} scenario payloads")
    if geomean > GEOMEAN_LIMIT:
        print(f"FAIL: the geometric mean {geomean:.2f} is above {GEOMEAN_LIMIT}", file=sys.stderr)
        status = 1
    return status | hostile()


def refusal(decode: Callable[[bytes], Any], payload: bytes) -> Tuple[float, ProtocolError]:
    """Seconds to refuse ``payload`` (the best of 3), and the error."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        try:
            decode(payload)
        except ProtocolError as exc:
            error = exc
        else:
            raise AssertionError("a hostile payload was accepted")
        times.append(time.perf_counter() - started)
    return min(times), error


def hostile() -> int:
    print(f"{'hostile payload':<30}{'bytes':>7}{'loads':>10}{'loads_checked':>15}{'clause':>8}{'reason':>8}")
    status = 0
    for name, make in CORPUS.items():
        payload = make()
        fast, error = refusal(loads, payload)
        checked, _ = refusal(loads_checked, payload)
        print(f"{name:<30}{len(payload):>7}{fast * 1e3:>8.2f}ms{checked * 1e3:>13.1f}ms{error.clause:>8}{len(str(error)):>7}B")
        if fast > REFUSAL_LIMIT or len(str(error)) > REASON_LIMIT:
            print(f"FAIL: {name} took {fast:.3f} s or a reason of {len(str(error))} bytes", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
