"""Fuzz the codec: mutated and structure-aware payloads through loads and loads_checked.

Usage: ``python scripts/fuzz_codec.py [--count N] [--jobs J] [--seed S] [--time-limit SECONDS]``
(``make fuzz`` runs 10^6 inputs).  Each input goes through:

* ``loads`` (templates, fast tokenizer, semantic core) and ``loads_checked``
  (construct grammar, the same core): each must return a command or raise
  :class:`ProtocolError`, within the CPU time limit (CPU, not wall-clock
  time: a loaded machine is no hang), and they must agree (both
  refuse, or both accept the same command);
* when ours accepts, a restricted ``pickle.Unpickler`` on the same bytes: it
  must accept too and build an equal command (ours accepts a subset of what
  pickle accepts, and means the same by it).  The unpickler can execute
  nothing: ``find_class`` returns inert stand-ins for the four command
  classes, ``_codecs.encode`` and ``bytes`` and raises for anything else, and
  it has no ``persistent_load``.  Only payloads our decoder accepted, and so
  bounded by ENC-6, ever reach it.

Inputs: canonical and protocol 2, 3 and 5 encodings of random commands, the
test vectors and the hostile corpus (tests/hostile_payloads.py), mutated by
bit flips, byte and opcode insertions, deletions, splices, duplicated ranges,
changed length fields and truncation.  Progress goes to stderr; the exit
status is 1 on any exception other than ProtocolError, any input over the
time limit, or any disagreement, and each such input is printed in hex.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import pickle
import random
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hostile_payloads import CORPUS  # noqa: E402

from skyllh_cluster.codec import loads, loads_checked  # noqa: E402
from skyllh_cluster.commands import Command  # noqa: E402
from skyllh_cluster.errors import ProtocolError  # noqa: E402
from skyllh_cluster.wire import opcodes as op  # noqa: E402
from skyllh_cluster.wire.values import values_equal  # noqa: E402


class _Inert:
    """A stand-in class: NEWOBJ makes an empty instance, BUILD fills its __dict__."""

    def __reduce__(self) -> Any:  # pragma: no cover - never pickled
        raise TypeError("a stand-in is never pickled")


_STAND_INS = {name: type(name, (_Inert,), {}) for name in op.COMMAND_CLASS_NAMES}


def _latin1(text: Any, encoding: Any) -> bytes:
    if type(text) is not str or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode with other arguments")
    return text.encode("latin-1")


def _empty_bytes(*args: Any) -> bytes:
    if args:
        raise pickle.UnpicklingError("bytes with arguments")
    return b""


class InertUnpickler(pickle.Unpickler):
    """Resolves only the profile's globals, each to something that can do nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if module == op.COMMAND_MODULE and name in _STAND_INS:
            return _STAND_INS[name]
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        if (module, name) in (("builtins", "bytes"), ("__builtin__", "bytes")):
            return _empty_bytes
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed here")


def inert_loads(payload: bytes) -> Any:
    return InertUnpickler(io.BytesIO(payload)).load()


# --- inputs ----------------------------------------------------------------------


def random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(12 if depth < 4 else 7)
    if choice == 0:
        return None
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.choice([0, 1, 255, 256, 65535, 65536, -1, 2**31, -(2**31) - 1, 2**64, rng.getrandbits(rng.randrange(1, 3000))])
    if choice == 3:
        return rng.choice([1.5, float("inf"), float("nan"), -0.0, rng.random()])
    if choice in (4, 5):
        return "".join(chr(rng.choice([97, 233, 0x2713, 0xD800, 0x1F600])) for _ in range(rng.randrange(0, 300)))
    if choice == 6:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
    items = [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 6))]
    if choice in (7, 8):
        return items
    if choice == 9:
        return tuple(items)
    keys = [rng.choice([rng.randrange(100), "k" + str(rng.randrange(100)), (1, "a"), None, 2.5]) for _ in items]
    return dict(zip(keys, items))


def random_payload(rng: random.Random) -> bytes:
    """A valid encoding of a random command, at a random protocol (our own bytes, pickled by us)."""
    import skyllh.cluster.commands as original  # the original's classes, for pickle.dumps at any protocol

    kind = rng.randrange(4)
    if kind == 0:
        command: Any = original.RegisterCN(rng.getrandbits(40) - 2**39, rng.randrange(2**20))
    elif kind == 1:
        command = rng.choice([original.ACK(), original.ShutdownCN()])
    else:
        value = random_value(rng)
        if rng.random() < 0.2:
            value = [value, value]  # shared
        command = original.MSG(value)
    return pickle.dumps(command, protocol=rng.choice([2, 3, 4, 4, 5]))


def seed_payloads() -> List[bytes]:
    seeds = [make() for make in CORPUS.values()]
    for path in sorted((ROOT / "spec" / "vectors").glob("*.json")):
        for group in json.loads(path.read_text())["testGroups"]:
            seeds += [bytes.fromhex(test["frame"])[2:] for test in group["tests"] if "frame" in test]
    return [seed for seed in seeds if seed]


_OPCODES = list(op.PROFILE_OPCODES) + [ord(c) for c in "0124FILPSVadgjp"] + [0x8F, 0x90, 0x91, 0x92, 0x96, 0x97, 0x98]


def mutate(rng: random.Random, data: bytes, others: List[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        if not out:
            out.append(rng.getrandbits(8))
        at = rng.randrange(len(out))
        how = rng.randrange(9)
        if how == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif how == 1:
            out[at] = rng.getrandbits(8)
        elif how == 2:
            out.insert(at, rng.choice(_OPCODES))
        elif how == 3:
            del out[at : at + rng.randrange(1, 9)]
        elif how == 4:
            other = rng.choice(others)
            start = rng.randrange(len(other))
            out[at:at] = other[start : start + rng.randrange(1, 64)]
        elif how == 5:
            length = rng.randrange(1, 32)
            out[at:at] = out[at : at + length] * rng.randrange(1, 200)
        elif how == 6:
            out[at : at + 4] = struct.pack("<I", rng.choice([0, 1, 255, 256, 2**31 - 1, 2**32 - 1, len(out)]))
        elif how == 7:
            del out[at:]
        else:
            out[at : at + 8] = struct.pack("<Q", rng.choice([0, 1, len(out), max(0, len(out) - 11), 2**63]))
    return bytes(out[:0xFFFF])


def inputs(rng: random.Random, seeds: List[bytes]) -> bytes:
    base = rng.choice(seeds) if rng.random() < 0.3 else random_payload(rng)
    return base if rng.random() < 0.1 else mutate(rng, base, seeds)


# --- checks ----------------------------------------------------------------------


class Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Timeout()


def same_command(ours: Command, theirs: Any) -> bool:
    if type(theirs).__name__ != type(ours).__name__ or not isinstance(theirs, _Inert):
        return False
    mine, other = ours.__dict__, theirs.__dict__
    return list(mine) == list(other) and all(values_equal(mine[k], other[k]) for k in mine)


def check(payload: bytes, time_limit: float) -> Optional[str]:
    """None if refused alike, "valid" if accepted alike by all three, else what went wrong."""
    outcomes: List[Any] = []
    signal.setitimer(signal.ITIMER_VIRTUAL, time_limit)
    try:
        for decode in (loads, loads_checked):
            try:
                outcomes.append(decode(payload))
            except ProtocolError as exc:
                outcomes.append(exc)
    except Timeout:
        return f"over the limit of {time_limit} s of CPU time"
    except Exception as exc:  # noqa: BLE001 - the finding
        return f"{type(exc).__name__} escaped: {str(exc)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    fast, checked = outcomes
    if isinstance(fast, ProtocolError) or isinstance(checked, ProtocolError):
        if not (isinstance(fast, ProtocolError) and isinstance(checked, ProtocolError)):
            return f"loads and loads_checked disagree: {fast!r:.200} / {checked!r:.200}"
        return None
    if not (type(fast) is type(checked) and fast == checked):
        return "loads and loads_checked decode different commands"
    try:
        theirs = inert_loads(payload)
    except MemoryError:
        # C pickle keeps its memo in an array as long as the largest index: a
        # valid LONG_BINPUT of index 2**31 is beyond it, not beyond the profile.
        return "valid"
    except Exception as exc:  # noqa: BLE001 - pickle refusing what we accept is the finding
        return f"we accept, the restricted pickle refuses: {type(exc).__name__}: {str(exc)[:200]}"
    if not same_command(fast, theirs):
        return "we and the restricted pickle decode different commands"
    return "valid"


def worker(job: Tuple[int, int, float]) -> Tuple[int, int, List[Tuple[str, str]]]:
    seed, count, time_limit = job
    signal.signal(signal.SIGVTALRM, _alarm)
    rng = random.Random(seed)
    seeds = seed_payloads()
    accepted = 0
    failures: List[Tuple[str, str]] = []
    for _ in range(count):
        payload = inputs(rng, seeds)
        problem = check(payload, time_limit)
        if problem == "valid":
            accepted += 1
        elif problem is not None:
            failures.append((payload.hex(), problem))
    return count, accepted, failures


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10**6, help="inputs in all (default 10^6)")
    parser.add_argument("--jobs", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=30.0, help="CPU seconds per input, both decoders (the grammar takes seconds for 65535 bytes)")
    args = parser.parse_args(argv)
    chunk = 2000
    jobs = [(args.seed * 1_000_003 + i, min(chunk, args.count - start), args.time_limit)
            for i, start in enumerate(range(0, args.count, chunk))]
    done = accepted = 0
    failures: List[Tuple[str, str]] = []
    started = time.monotonic()
    pool = multiprocessing.get_context("fork").Pool(args.jobs) if args.jobs > 1 else None
    try:
        for count, ok, found in pool.imap_unordered(worker, jobs) if pool else map(worker, jobs):
            done, accepted = done + count, accepted + ok
            failures += found
            for payload_hex, problem in found:  # at once: a long run keeps what it found
                print(f"FINDING: {problem}\n  {payload_hex[:2000]}", flush=True)
            rate = done / (time.monotonic() - started)
            print(f"\r{done}/{args.count} inputs, {accepted} valid, {len(failures)} findings, {rate:.0f}/s",
                  end="", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    print(file=sys.stderr)
    elapsed = time.monotonic() - started
    print(f"{done} inputs ({accepted} valid) in {elapsed:.0f} s: {len(failures)} findings")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
