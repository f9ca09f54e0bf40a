"""Regenerate the test vectors in spec/vectors/ from one place.

Valid vectors are produced by the original: ``pickle.dumps`` of the real
``skyllh.cluster.commands`` classes of skyllh==24.1.0 at protocols 2 to 5
(these are bytes we make ourselves; nothing is ever unpickled).  Invalid
vectors are written by hand below, as data, with the clause each must be
refused under.  The output is deterministic.

    python scripts/regenerate_vectors.py           # rewrite spec/vectors/*.json
    python scripts/regenerate_vectors.py --check   # exit 1 if the files differ
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import struct
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import skyllh.cluster.commands as original

from skyllh_cluster import codec
from skyllh_cluster.commands import Command
from skyllh_cluster.codec import command_to_json
from skyllh_cluster.wire import opcodes as op
from skyllh_cluster.wire.framing import encode_frame
from skyllh_cluster.wire.values import MAX_DEPTH, MAX_SAME_HASH_KEYS, MAX_VALUE_COST

VECTOR_DIR = Path(__file__).resolve().parent.parent / "spec" / "vectors"
#: The kit sends every invalid vector to targets; it ships this copy of invalid.json.
KIT_COPY = Path(__file__).resolve().parent.parent / "conformance" / "invalid_vectors.json"
GENERATOR_VERSION = "3"
ALGORITHM = "skyllh-cluster-frame"

NOTES = {
    "Canonical": "The frame is exactly what the canonical encoder (pickle protocol 4 as CPython writes it) produces",
    "OriginalProtocol": "Written by pickle.dumps(command, protocol=N) of the original skyllh.cluster.commands classes",
    "NonCanonical": "A valid encoding that the canonical encoder would write differently (ENC-8)",
    "SizeClass": "Exercises the boundary between two argument sizes of an opcode",
    "Shared": "The value holds the same object more than once, written with memo references",
    "MaxSize": "The largest payload that fits in one frame",
    "TruncatedFrame": "The frame is shorter than its length prefix says; a stream reader reports FRM-5 at end of stream",
    "Malicious": "A payload that would run code or exhaust memory in an unrestricted unpickler",
    "ForbiddenOpcode": "Uses an opcode outside the profile, or one newer than its protocol",
    "ForbiddenGlobal": "Names a global outside the profile, or an allowed one outside its position",
    "Malformed": "Breaks the pickle structure: truncated, trailing bytes, wrong stack shape, bad frames",
    "BadState": "A command with the wrong state",
    "BadValue": "A MSG value outside the subset",
    "Limits": "Exceeds a decoding limit (depth or size)",
    "EncodeOnly": "No frame: the command must be refused by the encoder",
}

HEADER = [
    "Test vectors for the SkyLLH cluster protocol (spec/protocol.md).",
    "frame: hex of the whole frame, 2-byte little-endian length prefix included.",
    "command: the decoded command as lossless JSON (see spec/vectors/README.md).",
    "clause: for invalid vectors, the clause a decoder reports.",
]


# --- helpers to write payloads by hand -----------------------------------------


def frame(payload: bytes) -> bytes:
    """The payload behind its length prefix.

    Vectors may lie: the empty payload and an oversized one, which
    ``encode_frame`` refuses, are written as they are (the prefix wrapped).
    """
    if 0 < len(payload) <= 0xFFFF:
        return encode_frame(payload)
    return (len(payload) & 0xFFFF).to_bytes(2, "little") + payload


def proto4(body: bytes) -> bytes:
    """PROTO 4 and one FRAME around ``body``."""
    return b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body


def short_str(text: str) -> bytes:
    data = text.encode("utf-8")
    return bytes((op.SHORT_BINUNICODE, len(data))) + data


def stack_global(module: str, name: str) -> bytes:
    return short_str(module) + b"\x94" + short_str(name) + b"\x94\x93\x94"


CMD_CLASS = {name: stack_global(op.COMMAND_MODULE, name) for name in op.COMMAND_CLASS_NAMES}
NEW = b")\x81\x94"  # EMPTY_TUPLE NEWOBJ MEMOIZE


def msg_with(value_ops: bytes) -> bytes:
    """A canonical MSG payload whose value is written by ``value_ops`` (memo from 6)."""
    return proto4(CMD_CLASS["MSG"] + NEW + b"}\x94" + short_str("msg") + b"\x94" + value_ops + b"sb.")


def original_dumps(make: Callable[[], Any], protocol: int) -> bytes:
    return pickle.dumps(make(), protocol=protocol)


def with_state(cls: type, state: Dict[str, Any]) -> Any:
    """An original command object with exactly this __dict__ (setters bypassed)."""
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


class _SystemCall:
    """Pickles as a call of os.system, as in the classic exploit.  Never unpickled."""

    def __reduce__(self) -> Any:
        return (os.system, ("echo owned",))


class _EvalCall:
    def __reduce__(self) -> Any:
        return (eval, ("__import__('os').system('echo owned')",))


# --- value sets -------------------------------------------------------------------

SHARED_STR = "a" * 300
SHARED_LIST = [1, 2]
SHARED_TUPLE = (1, "t")
SHARED_DICT = {"k": None}


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _max_str() -> str:
    # MSG(str) of a BINUNICODE: header 56 bytes + 5 + n + 4 (MEMOIZE SETITEM BUILD STOP)
    return "x" * (0xFFFF - 56 - 5 - 4)


def _costing(total: int) -> Any:
    """A MSG value whose state dict costs exactly ``total`` (ENC-6): 1 + 4 for the key 'msg', then the value.

    A list of 1048 references to one 999-character str (1000 each) and one
    more str to make up the rest: about 4 KB on the wire.
    """
    shared = "s" * 999
    rest = total - 5 - 1 - 1048 * 1000 - 1
    return [shared] * 1048 + ["y" * rest]


MERSENNE_61 = 2**61 - 1


def _one_hash(count: int, as_tuples: bool = False) -> Dict[Any, None]:
    """A dict of ``count`` keys k * (2**61 - 1) (or 1-tuples of them): all have one hash."""
    return {((k * MERSENNE_61,) if as_tuples else k * MERSENNE_61): None for k in range(1, count + 1)}


def _one_hash_json(count: int) -> Dict[str, Any]:
    items = [[{"type": "int", "value": str(k * MERSENNE_61)}, {"type": "none"}] for k in range(1, count + 1)]
    return {"class": "MSG", "state": [["msg", {"type": "dict", "items": items}]]}


VALUES: List[tuple] = [
    # (comment, value, flags)
    ("None", None, []),
    ("True", True, []),
    ("False", False, []),
    ("int 0", 0, ["SizeClass"]),
    ("int 255, largest BININT1", 255, ["SizeClass"]),
    ("int 256, smallest BININT2", 256, ["SizeClass"]),
    ("int 65535, largest BININT2", 65535, ["SizeClass"]),
    ("int 65536, BININT", 65536, ["SizeClass"]),
    ("int -1, BININT", -1, ["SizeClass"]),
    ("int 2**31-1, largest BININT", 2**31 - 1, ["SizeClass"]),
    ("int -2**31, smallest BININT", -(2**31), ["SizeClass"]),
    ("int 2**31, LONG1", 2**31, ["SizeClass"]),
    ("int -2**31-1, LONG1", -(2**31) - 1, ["SizeClass"]),
    ("int 2**64", 2**64, []),
    ("int -2**64", -(2**64), []),
    ("int -128 * 256**253, largest negative LONG1 magnitude", -(2**2039), ["SizeClass"]),
    ("int 2**2039, smallest LONG4 (256 bytes)", 2**2039, ["SizeClass"]),
    ("int 10**4000, huge LONG4", 10**4000, []),
    ("float 0.0", 0.0, []),
    ("float -0.0", -0.0, []),
    ("float 1.5", 1.5, []),
    ("float inf", float("inf"), []),
    ("float -inf", float("-inf"), []),
    ("float nan", float("nan"), []),
    ("float smallest subnormal", 5e-324, []),
    ("empty str", "", []),
    ("str 'hello'", "hello", []),
    ("str of 255 UTF-8 bytes, largest SHORT_BINUNICODE", "y" * 255, ["SizeClass"]),
    ("str of 256 UTF-8 bytes, smallest BINUNICODE", "y" * 256, ["SizeClass"]),
    ("str of 2-byte characters, 254 bytes", "é" * 127, ["SizeClass"]),
    ("unicode", "ünïcødé ✓", []),
    ("non-BMP characters", "\U0001f600\U00010348", []),
    ("lone surrogate (surrogatepass)", "a\ud800b", []),
    ("empty bytes", b"", []),
    ("bytes of 255, largest SHORT_BINBYTES", bytes(range(255)), ["SizeClass"]),
    ("bytes of 256, smallest BINBYTES", bytes(range(256)), ["SizeClass"]),
    ("empty list", [], []),
    ("list of 1 (APPEND)", [1], []),
    ("list of 2 (APPENDS)", [1, "a"], []),
    ("list of 1000, one batch", list(range(1000)), ["SizeClass"]),
    ("list of 1001, two batches", [None] * 1001, ["SizeClass"]),
    ("empty tuple", (), []),
    ("tuple of 1", (1,), []),
    ("tuple of 2", (1, 2), []),
    ("tuple of 3", (1, 2, 3), []),
    ("tuple of 4 (MARK TUPLE)", (1, 2, 3, 4), []),
    ("empty dict", {}, []),
    ("dict of 1 (SETITEM)", {"a": 1}, []),
    ("dict of 2 (SETITEMS)", {"trial": 3, "seed": None}, []),
    ("dict of 1000, with CPython's empty second batch", {i: i for i in range(1000)}, ["SizeClass"]),
    ("dict of 1001", {i: None for i in range(1001)}, ["SizeClass"]),
    ("dict with keys of every hashable type", {None: 1, True: 2, 3: 3, 1.5: 4, "s": 5, b"b": 6, (1, ("x",)): 7}, []),
    ("nesting", [1, "a", [2.5, (None, {"k": [b"v"]})]], []),
    ("nesting of exactly MAX_DEPTH lists", _nested(MAX_DEPTH), ["Limits"]),
    ("shared str (BINGET)", [SHARED_STR, SHARED_STR], ["Shared"]),
    ("shared list", [SHARED_LIST, SHARED_LIST, SHARED_LIST], ["Shared"]),
    ("shared tuple", {"a": SHARED_TUPLE, "b": SHARED_TUPLE}, ["Shared"]),
    ("shared dict", (SHARED_DICT, SHARED_DICT), ["Shared"]),
    ("more than 256 memo entries (LONG_BINGET)", [str(i) for i in range(300)] + ["299"] + [None], ["Shared"]),
    ("the str 'msg', a memo reference to the state's key", "msg", ["Shared"]),
    ("the str 'MSG', a memo reference to the class name", "MSG", ["Shared"]),
    ("largest payload: exactly 65535 bytes", _max_str(), ["MaxSize"]),
]
# The 300 strings above are distinct objects, and the last reference must
# name one of them: make the list hold the very same object twice.
_MEMO_LIST = VALUES[-4][1]
_MEMO_LIST[300] = _MEMO_LIST[299]
_MEMO_LIST.pop()


# --- building the files ---------------------------------------------------------


def _ours(original_command: Any) -> Command:
    """Our command with the same class and the same state objects (identities kept)."""
    from skyllh_cluster.commands import COMMAND_CLASSES

    cls = COMMAND_CLASSES[type(original_command).__name__]
    command = cls.__new__(cls)
    command.__dict__.update(original_command.__dict__)
    return command


def canonical_payload(command: Command) -> bytes:
    """The canonical encoding of ``command``: CMD-3's key order for RegisterCN, the encoder's bytes otherwise.

    The encoder writes a command's state in its own order; a RegisterCN
    decoded from a payload with its keys the other way round is rebuilt in
    the canonical order first (``_cn_start_time``, then ``_cn_live_time``).
    """
    from skyllh_cluster.commands import RegisterCN

    if isinstance(command, RegisterCN):
        state = vars(command)
        command = RegisterCN(state["_cn_start_time"], state["_cn_live_time"])
    return codec.dumps(command)


def holds_shared_objects(command: Command) -> bool:
    """Whether the decoded value holds one object at two places (the decoder keeps memo references shared).

    Ints, floats, None and bools are never memo references in a payload;
    the empty tuple is written without the memo, so it is left out too.
    """
    seen: set = set()
    stack = list(vars(command).values())
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind not in (str, bytes, list, tuple, dict) or item == ():
            continue
        if id(item) in seen:
            return True
        seen.add(id(item))
        if kind is dict:
            stack.extend(x for pair in item.items() for x in pair)
        elif kind in (list, tuple):
            stack.extend(item)
    return False


class VectorFile:
    def __init__(self, name: str, description: str) -> None:
        self.name, self.description = name, description
        self.groups: List[Dict[str, Any]] = []
        self.next_id = 1

    def group(self, kind: str, source: str, comment: str) -> List[Dict[str, Any]]:
        tests: List[Dict[str, Any]] = []
        self.groups.append({"type": kind, "source": source, "comment": comment, "tests": tests})
        return tests

    def valid(self, tests: List[Dict[str, Any]], comment: str, payload: bytes, flags: List[str]) -> None:
        command = codec.loads_checked(payload)
        canonical = canonical_payload(command) == payload if len(payload) <= 0xFFFF else False
        shared = ["Shared"] if holds_shared_objects(command) else []
        tests.append(
            {
                "tcId": self._id(),
                "comment": comment,
                "flags": sorted(set(flags + shared + (["Canonical"] if canonical else ["NonCanonical"]))),
                "frame": frame(payload).hex(),
                "result": "valid",
                "command": command_to_json(command),
                "canonical": canonical,
            }
        )

    def invalid(
        self,
        tests: List[Dict[str, Any]],
        comment: str,
        clause: str,
        reason: str,
        flags: List[str],
        raw_frame: Optional[bytes] = None,
        payload: Optional[bytes] = None,
        command: Optional[Dict[str, Any]] = None,
    ) -> None:
        test: Dict[str, Any] = {"tcId": self._id(), "comment": comment, "flags": sorted(flags)}
        if raw_frame is not None or payload is not None:
            test["frame"] = (raw_frame if raw_frame is not None else frame(payload or b"")).hex()
        if command is not None:
            test["command"] = command
        test.update({"result": "invalid", "clause": clause, "reason": reason, "canonical": False})
        tests.append(test)

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def render(self) -> str:
        count = sum(len(g["tests"]) for g in self.groups)
        document = {
            "algorithm": ALGORITHM,
            "generatorVersion": GENERATOR_VERSION,
            "description": self.description,
            "numberOfTests": count,
            "header": HEADER,
            "notes": {flag: NOTES[flag] for flag in sorted(NOTES)},
            "testGroups": self.groups,
        }
        return json.dumps(document, indent=1, ensure_ascii=True, sort_keys=False) + "\n"


def commands_file() -> VectorFile:
    out = VectorFile("commands.json", "Every command, as the original writes it at its default protocol 4")
    tests = out.group("ValidCommand", "original-skyllh-24.1.0 protocol 4", "pickle.dumps of the original commands")
    cases = [
        ("ACK()", original.ACK),
        ("ShutdownCN()", original.ShutdownCN),
        ("RegisterCN(1732560000, 7200), the golden frame", lambda: original.RegisterCN(1732560000, 7200)),
        ("RegisterCN(0, 0)", lambda: original.RegisterCN(0, 0)),
        ("RegisterCN with negative and LONG1 times", lambda: original.RegisterCN(-1, 2**40)),
        ("RegisterCN with huge times", lambda: original.RegisterCN(2**100, -(2**100))),
        ("MSG('hello'), the golden frame", lambda: original.MSG("hello")),
        ("MSG(None)", lambda: original.MSG(None)),
    ]
    for comment, make in cases:
        out.valid(tests, comment, original_dumps(make, 4), ["OriginalProtocol"])
    tests = out.group("ValidCommand", "hand-written", "Valid encodings the original does not write (ENC-8)")
    reversed_state = proto4(
        CMD_CLASS["RegisterCN"] + NEW + b"}\x94(" + short_str("_cn_live_time") + b"\x94K\x05"
        + short_str("_cn_start_time") + b"\x94K\x07ub."
    )
    out.valid(tests, "RegisterCN with its state keys in the other order", reversed_state, [])
    unframed = original_dumps(original.ACK, 4)
    out.valid(tests, "ACK at protocol 4 without FRAME", b"\x80\x04" + unframed[11:], ["NonCanonical"])
    ack_body = original_dumps(original.ACK, 4)[11:]
    split = b"\x80\x04" + b"\x95" + struct.pack("<Q", 26) + ack_body[:26] + b"\x95" + struct.pack("<Q", len(ack_body) - 26) + ack_body[26:]
    out.valid(tests, "ACK in two frames", split, ["NonCanonical"])
    wide_ints = proto4(
        CMD_CLASS["RegisterCN"] + NEW + b"}\x94(" + short_str("_cn_start_time") + b"\x94J\x05\x00\x00\x00"
        + short_str("_cn_live_time") + b"\x94\x8a\x02\x07\x00ub."
    )
    out.valid(tests, "RegisterCN with non-minimal int encodings", wide_ints, ["NonCanonical"])
    binput = b"\x80\x04" + short_str(op.COMMAND_MODULE) + b"q\x00" + short_str("ACK") + b"q\x01\x93q\x02)\x81q\x03."
    out.valid(tests, "ACK with BINPUT instead of MEMOIZE", binput, ["NonCanonical"])
    global_at_4 = b"\x80\x04c" + op.COMMAND_MODULE.encode() + b"\nShutdownCN\n)\x81."
    out.valid(tests, "ShutdownCN with GLOBAL at protocol 4, no memo", global_at_4, ["NonCanonical"])
    long_binput = (b"\x80\x04" + short_str(op.COMMAND_MODULE) + b"r\x00\x00\x00\x00" + short_str("ACK")
                   + b"r\x01\x00\x00\x00\x93r\x02\x00\x00\x00)\x81.")
    out.valid(tests, "ACK with LONG_BINPUT instead of MEMOIZE", long_binput, ["NonCanonical"])
    out.valid(tests, "MSG of a str written with BINUNICODE8", msg_with(b"\x8d" + struct.pack("<Q", 5) + b"hello\x94"),
              ["NonCanonical", "SizeClass"])
    out.valid(tests, "MSG of bytes written with BINBYTES8", msg_with(b"\x8e" + struct.pack("<Q", 3) + b"abc\x94"),
              ["NonCanonical", "SizeClass"])
    for module in ("builtins", "__builtin__"):
        empty_bytes = (b"\x80\x02c" + op.COMMAND_MODULE.encode() + b"\nMSG\n)\x81}X\x03\x00\x00\x00msgc"
                       + module.encode() + b"\nbytes\n)Rsb.")
        out.valid(tests, f"MSG of b'' written as {module}.bytes() at protocol 2", empty_bytes, ["NonCanonical"])
    one = struct.pack(">d", 1.0)
    equal_keys = msg_with(b"}\x94(K\x01" + short_str("a") + b"\x94G" + one + short_str("b") + b"\x94\x88"
                          + short_str("c") + b"\x94u")
    out.valid(tests, "MSG of a dict written with the equal keys 1, 1.0, True: one entry, key 1, value 'c' (VAL-2)",
              equal_keys, ["NonCanonical"])
    nan = struct.pack(">d", float("nan"))
    out.valid(tests, "MSG of a dict with two NaN keys written apart: two entries (VAL-2)",
              msg_with(b"}\x94(G" + nan + b"K\x01G" + nan + b"K\x02u"), [])
    out.valid(tests, "MSG of a dict with one NaN key written twice through the memo: one entry (VAL-2)",
              msg_with(b"}\x94(G" + nan + b"\x94K\x01h\x07K\x02u"), ["NonCanonical"])
    return out


def values_file() -> VectorFile:
    out = VectorFile("values.json", "MSG values of every type and size class, as the original writes them at protocol 4")
    tests = out.group("ValidMsgValue", "original-skyllh-24.1.0 protocol 4", "pickle.dumps(MSG(value)) of the original")
    for comment, value, flags in VALUES:
        payload = pickle.dumps(original.MSG(value), protocol=4)
        assert len(payload) <= 0xFFFF, comment
        out.valid(tests, comment, payload, flags + ["OriginalProtocol"])
    tests = out.group("EncodeRefusal", "hand-written", "Commands the encoder must refuse: the payload would not fit")
    out.invalid(
        tests,
        "MSG of a str one byte too long for a frame",
        "FRM-2",
        "the payload would be 65536 bytes",
        ["EncodeOnly", "MaxSize"],
        command={"class": "MSG", "state": [["msg", {"type": "str", "utf8": (_max_str() + "x").encode().hex()}]]},
    )
    # Added in generator version 3; appended so that earlier tcIds stay as they were.
    tests = out.group("ValidMsgValue", "original-skyllh-24.1.0 protocol 4", "ENC-6 limits reached exactly (generator version 3)")
    for comment, value in [
        ("a state dict costing exactly MAX_VALUE_COST (2**20), through 1048 references to one str", _costing(MAX_VALUE_COST)),
        (f"a dict of {MAX_SAME_HASH_KEYS} int keys that all hash to 0 (k * (2**61 - 1))", _one_hash(MAX_SAME_HASH_KEYS)),
        (f"a dict of {MAX_SAME_HASH_KEYS} tuple keys (k * (2**61 - 1),) of one hash", _one_hash(MAX_SAME_HASH_KEYS, True)),
    ]:
        out.valid(tests, comment, pickle.dumps(original.MSG(value), protocol=4), ["Limits", "OriginalProtocol"])
    return out


def original_protocols_file() -> VectorFile:
    out = VectorFile("original_protocols.json", "Commands written by the original at pickle protocols 2, 3, 4 and 5")
    makers = [
        ("ACK()", original.ACK),
        ("ShutdownCN()", original.ShutdownCN),
        ("RegisterCN(1732560000, 7200)", lambda: original.RegisterCN(1732560000, 7200)),
        ("MSG('hello')", lambda: original.MSG("hello")),
        ("MSG of bytes (protocol 2 writes _codecs.encode)", lambda: original.MSG([b"ab\xff", b"ab\xff", b"", b""])),
        ("MSG of every type", lambda: original.MSG([None, True, 7, -(2**70), 2.5, "é", b"\x00", (1, "t"), {"k": [()]}])),
        ("MSG of a shared str", lambda: original.MSG([SHARED_STR, SHARED_STR])),
    ]
    for protocol in (2, 3, 4, 5):
        tests = out.group(
            "ValidCommand", f"original-skyllh-24.1.0 protocol {protocol}", f"pickle.dumps(command, protocol={protocol})"
        )
        for comment, make in makers:
            out.valid(tests, comment, original_dumps(make, protocol), ["OriginalProtocol"])
    tests = out.group("InvalidCommand", "original-skyllh-24.1.0 protocols 0 and 1", "protocols the profile refuses (ENC-1)")
    for protocol in (0, 1):
        for comment, make in makers[:4]:
            out.invalid(
                tests, f"{comment} at protocol {protocol}", "ENC-1", "a payload starts with PROTO 2 to 5",
                ["Malformed", "OriginalProtocol"], payload=original_dumps(make, protocol),
            )
    return out


def invalid_file() -> VectorFile:  # noqa: C901 - a table
    out = VectorFile("invalid.json", "Frames a receiver must refuse, with the clause it reports")
    ack = original_dumps(original.ACK, 4)
    hello = original_dumps(lambda: original.MSG("hello"), 4)
    register = original_dumps(lambda: original.RegisterCN(1732560000, 7200), 4)

    t = out.group("InvalidFrame", "hand-written", "Framing errors (FRM-1)")
    out.invalid(t, "length prefix says 69, 40 bytes follow", "FRM-1", "truncated frame", ["TruncatedFrame"],
                raw_frame=frame(hello)[:42])
    out.invalid(t, "length prefix in big-endian byte order", "FRM-1", "the prefix is little-endian",
                ["TruncatedFrame"], raw_frame=len(hello).to_bytes(2, "big") + hello)
    out.invalid(t, "only one byte of the length prefix", "FRM-1", "truncated prefix", ["TruncatedFrame"],
                raw_frame=b"\x05")

    t = out.group("InvalidPayload", "hand-written", "The pickle structure (ENC-1)")
    out.invalid(t, "empty payload", "ENC-1", "empty", ["Malformed"], payload=b"")
    out.invalid(t, "trailing byte after STOP", "ENC-1", "bytes after STOP", ["Malformed"], payload=ack + b"\x00")
    out.invalid(t, "a second pickle after STOP", "ENC-1", "bytes after STOP", ["Malformed"], payload=ack + ack)
    out.invalid(t, "STOP missing", "ENC-1", "no STOP", ["Malformed"], payload=b"\x80\x04" + ack[11:-1])
    out.invalid(t, "cut inside an argument", "ENC-1", "truncated", ["Malformed"], payload=b"\x80\x04" + ack[11:20])
    out.invalid(t, "FRAME longer than the payload", "ENC-1", "frame past the end", ["Malformed"],
                payload=b"\x80\x04\x95" + struct.pack("<Q", len(ack)) + ack[11:])
    body = ack[11:]
    out.invalid(t, "FRAME inside a frame", "ENC-1", "nested frame", ["Malformed"],
                payload=b"\x80\x04\x95" + struct.pack("<Q", len(body) + 9) + b"\x95" + struct.pack("<Q", len(body)) + body)
    out.invalid(t, "an opcode runs past the end of its frame", "ENC-1", "straddles the frame end", ["Malformed"],
                payload=b"\x80\x04\x95" + struct.pack("<Q", 5) + body)
    for protocol in (0, 1, 6, 255):
        out.invalid(t, f"PROTO {protocol}", "ENC-1", "protocol not 2 to 5", ["Malformed"],
                    payload=bytes((0x80, protocol)) + ack[2:])
    out.invalid(t, "PROTO twice", "ENC-1", "PROTO only first", ["Malformed"], payload=b"\x80\x04\x80\x04" + ack[11:])
    out.invalid(t, "invalid UTF-8 in a str", "ENC-1", "bad UTF-8", ["Malformed"], payload=msg_with(b"\x8c\x02\xc3\x28\x94"))
    out.invalid(t, "LONG4 with an absurd length", "ENC-1", "length past the end", ["Malformed", "Malicious"],
                payload=msg_with(b"\x8b\xff\xff\xff\x7f\x01"))
    out.invalid(t, "LONG4 with a negative length", "ENC-1", "negative length", ["Malformed"],
                payload=msg_with(b"\x8b\xff\xff\xff\xff\x01"))
    out.invalid(t, "BINUNICODE8 of 2**63 bytes", "ENC-1", "length past the end", ["Malformed", "Malicious"],
                payload=msg_with(b"\x8d" + struct.pack("<Q", 2**63) + b"abc"))
    out.invalid(t, "BINBYTES8 of 2**64-1 bytes", "ENC-1", "length past the end", ["Malformed", "Malicious"],
                payload=msg_with(b"\x8e" + struct.pack("<Q", 2**64 - 1) + b"abc"))
    out.invalid(t, "an extra object left on the stack at STOP", "ENC-1", "stack not single", ["Malformed"],
                payload=b"\x80\x04N" + ack[11:])
    out.invalid(t, "a MARK left open at STOP", "ENC-1", "open mark", ["Malformed"], payload=b"\x80\x04(" + ack[11:])
    out.invalid(t, "APPEND to a tuple", "ENC-1", "APPEND needs a list", ["Malformed"], payload=msg_with(b")Na"))
    out.invalid(t, "SETITEMS with an odd number of items", "ENC-1", "odd items", ["Malformed"],
                payload=msg_with(b"}\x94(NNNu"))
    out.invalid(t, "APPENDS without MARK", "ENC-1", "no mark", ["Malformed"], payload=msg_with(b"]\x94e"))
    out.invalid(t, "MEMOIZE on an empty stack", "ENC-1", "nothing to store", ["Malformed"], payload=b"\x80\x04\x94" + ack[11:])

    t = out.group("InvalidPayload", "hand-written", "Opcodes outside the profile (ENC-2)")
    forbidden = [
        ("INST", b"\x80\x02(iposix\nsystem\n."), ("OBJ", b"\x80\x02(o."), ("EXT1", b"\x80\x02\x82\x01."),
        ("EXT2", b"\x80\x02\x83\x01\x00."), ("PERSID", b"\x80\x02P1\n."), ("BINPERSID", b"\x80\x02NQ."),
        ("NEWOBJ_EX", b"\x80\x04\x92."), ("POP", b"\x80\x02N0."), ("DUP", b"\x80\x02N2."),
        ("STRING", b"\x80\x02S'a'\n."), ("INT", b"\x80\x02I1\n."), ("EMPTY_SET", b"\x80\x04\x8f."),
        ("FROZENSET", b"\x80\x04(\x91."), ("BYTEARRAY8", b"\x80\x05\x96\x00\x00\x00\x00\x00\x00\x00\x00."),
        ("NEXT_BUFFER", b"\x80\x05\x97."), ("READONLY_BUFFER", b"\x80\x05N\x98."), ("byte 0xff", b"\x80\x04\xff."),
    ]
    for name, payload in forbidden:
        out.invalid(t, f"opcode {name}", "ENC-2", "not in the profile", ["ForbiddenOpcode"], payload=payload)
    out.invalid(t, "SHORT_BINUNICODE in a protocol 2 payload", "ENC-2", "too new", ["ForbiddenOpcode"],
                payload=b"\x80\x02\x8c\x01a.")
    out.invalid(t, "FRAME in a protocol 3 payload", "ENC-2", "too new", ["ForbiddenOpcode"],
                payload=b"\x80\x03\x95" + struct.pack("<Q", 1) + b".")
    out.invalid(t, "BUILD on a list", "ENC-2", "BUILD only on the command", ["ForbiddenOpcode"],
                payload=msg_with(b"]\x94}\x94b"))
    out.invalid(t, "MSG of a set, as the original writes it", "ENC-2", "EMPTY_SET", ["ForbiddenOpcode", "BadValue"],
                payload=original_dumps(lambda: original.MSG({1, 2}), 4))

    t = out.group("InvalidPayload", "hand-written", "Globals outside the profile (ENC-3)")
    for module, name in [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"),
                         ("builtins", "getattr"), ("subprocess", "Popen"), ("copyreg", "_reconstructor"),
                         ("skyllh.cluster.commands", "Command"), ("skyllh.cluster.commands", "pickle"),
                         ("__builtin__", "eval"), ("_codecs", "decode")]:
        out.invalid(t, f"STACK_GLOBAL {module}.{name}", "ENC-3", "global not allowed", ["ForbiddenGlobal", "Malicious"],
                    payload=proto4(stack_global(module, name) + b")R."))
    out.invalid(t, "GLOBAL os.system, the classic exploit at protocol 2", "ENC-3", "global not allowed",
                ["ForbiddenGlobal", "Malicious"], payload=b"\x80\x02cos\nsystem\nX\n\x00\x00\x00echo owned\x85R.")
    out.invalid(t, "the classic protocol 0 exploit", "ENC-1", "not a PROTO 2..5 pickle", ["Malicious"],
                payload=b"cos\nsystem\n(S'echo owned'\ntR.")
    for protocol in (2, 3, 4, 5):
        out.invalid(t, f"__reduce__ to os.system, pickled at protocol {protocol}", "ENC-3", "global not allowed",
                    ["ForbiddenGlobal", "Malicious"], payload=pickle.dumps(_SystemCall(), protocol=protocol))
    out.invalid(t, "MSG holding a __reduce__ to eval", "ENC-3", "global not allowed", ["ForbiddenGlobal", "Malicious"],
                payload=pickle.dumps(original.MSG(["x", _EvalCall()]), protocol=4))
    out.invalid(t, "MSG of a bytearray, as the original writes it", "ENC-3", "builtins.bytearray",
                ["ForbiddenGlobal", "BadValue"], payload=original_dumps(lambda: original.MSG(bytearray(b"ab")), 4))
    out.invalid(t, "MSG of a complex, as the original writes it", "ENC-3", "builtins.complex",
                ["ForbiddenGlobal", "BadValue"], payload=original_dumps(lambda: original.MSG(1j), 4))
    out.invalid(t, "REDUCE of a command class", "ENC-3", "REDUCE not allowed", ["ForbiddenGlobal"],
                payload=proto4(CMD_CLASS["ACK"] + b")R."))
    out.invalid(t, "NEWOBJ of _codecs.encode", "ENC-3", "NEWOBJ only of commands", ["ForbiddenGlobal"],
                payload=proto4(stack_global("_codecs", "encode") + b")\x81."))
    out.invalid(t, "REDUCE of _codecs.encode with utf-8", "ENC-3", "only (str, 'latin1')", ["ForbiddenGlobal"],
                payload=msg_with(stack_global("_codecs", "encode") + short_str("ab") + short_str("utf-8") + b"\x86R"))
    out.invalid(t, "REDUCE of _codecs.encode with a code point above 255", "ENC-3", "not latin-1",
                ["ForbiddenGlobal"],
                payload=msg_with(stack_global("_codecs", "encode") + short_str("\u0100") + short_str("latin1") + b"\x86R"))
    out.invalid(t, "REDUCE of builtins.bytes with an argument", "ENC-3", "only ()", ["ForbiddenGlobal"],
                payload=msg_with(stack_global("builtins", "bytes") + b"K\x05\x85R"))
    out.invalid(t, "STACK_GLOBAL of two ints", "ENC-3", "needs str", ["ForbiddenGlobal"], payload=b"\x80\x04K\x01K\x02\x93.")
    out.invalid(t, "the class used as a MSG value", "ENC-3", "global as a value", ["ForbiddenGlobal"],
                payload=msg_with(b"h\x02"))

    t = out.group("InvalidPayload", "hand-written", "Memo references (ENC-4)")
    out.invalid(t, "BINGET of an index never stored", "ENC-4", "undefined memo", ["Malformed"], payload=msg_with(b"h\x63"))
    out.invalid(t, "LONG_BINGET of an index never stored", "ENC-4", "undefined memo", ["Malformed"],
                payload=msg_with(b"j\x00\x00\x00\x01"))
    out.invalid(t, "BINPUT over an index in use", "ENC-4", "memo index reused", ["Malformed"], payload=msg_with(b"Nq\x01"))

    t = out.group("InvalidPayload", "hand-written", "Decoding limits (ENC-6)")
    bomb = b"]\x94"  # memo 6: the empty list
    for level in range(7):
        bomb += b"]\x94(" + b"h" + bytes((6 + level,)) + (b"h" + bytes((6 + level,))) * 9 + b"e"
    out.invalid(t, "billion laughs: 7 levels of 10 memo references", "ENC-6", "tree too large", ["Limits", "Malicious"],
                payload=msg_with(bomb))
    out.invalid(t, "lists nested MAX_DEPTH + 1 deep", "ENC-6", "too deep", ["Limits", "Malicious"],
                payload=msg_with(b"]" * (MAX_DEPTH + 1) + b"a" * MAX_DEPTH))
    out.invalid(t, "tuples nested 30000 deep", "ENC-6", "too deep", ["Limits", "Malicious"],
                payload=msg_with(b")" + b"\x85" * 30000))
    key_tuple = b"\x8c\x01a\x94" + b"".join((b"h" + bytes((6 + level,))) * 2 + b"\x86\x94" for level in range(18))
    out.invalid(t, "a tuple of 2**19 nodes used as a key in three dicts", "ENC-6", "key work bounded",
                ["Limits", "Malicious"], payload=msg_with(key_tuple + b"(" + b"}h\x18Ns" * 3 + b"t"))

    t = out.group("InvalidPayload", "hand-written", "Commands (CMD-1 to CMD-4)")
    out.invalid(t, "a pickled int, not a command", "CMD-1", "not a command", ["BadState"], payload=pickle.dumps(42, protocol=4))
    out.invalid(t, "a pickled str, not a command", "CMD-1", "not a command", ["BadState"], payload=pickle.dumps("ACK", protocol=4))
    out.invalid(t, "NEWOBJ with arguments", "CMD-1", "NEWOBJ needs ()", ["BadState"],
                payload=proto4(CMD_CLASS["ACK"] + b"K\x01\x85\x81."))
    out.invalid(t, "MSG holding an ACK, as the original writes it", "CMD-1", "one command", ["BadState"],
                payload=original_dumps(lambda: original.MSG(original.ACK()), 4))
    out.invalid(t, "MSG holding itself through the memo", "CMD-1", "command as a value", ["BadState"],
                payload=msg_with(b"h\x03"))
    out.invalid(t, "ACK with a state", "CMD-2", "ACK has no state", ["BadState"],
                payload=original_dumps(lambda: with_state(original.ACK, {"x": 1}), 4))
    out.invalid(t, "ShutdownCN with an empty state dict", "CMD-2", "no state", ["BadState"],
                payload=proto4(CMD_CLASS["ShutdownCN"] + NEW + b"}b."))
    for comment, state in [
        ("str start time", {"_cn_start_time": "1732560000", "_cn_live_time": 7200}),
        ("float live time", {"_cn_start_time": 1, "_cn_live_time": 7200.0}),
        ("bool live time", {"_cn_start_time": 1, "_cn_live_time": True}),
        ("None start time", {"_cn_start_time": None, "_cn_live_time": 1}),
        ("an extra key", {"_cn_start_time": 1, "_cn_live_time": 2, "_extra": 3}),
        ("a missing key", {"_cn_start_time": 1}),
        ("public key names", {"cn_start_time": 1, "cn_live_time": 2}),
    ]:
        out.invalid(t, f"RegisterCN with {comment}", "CMD-3", "RegisterCN state", ["BadState"],
                    payload=original_dumps(lambda state=state: with_state(original.RegisterCN, state), 4))
    out.invalid(t, "RegisterCN without BUILD", "CMD-3", "no state", ["BadState"], payload=proto4(CMD_CLASS["RegisterCN"] + NEW + b"."))
    out.invalid(t, "RegisterCN built twice", "CMD-3", "state twice", ["BadState"],
                payload=register[:-1] + b"}\x94b.")
    out.invalid(t, "MSG with an extra key", "CMD-4", "MSG state", ["BadState"],
                payload=original_dumps(lambda: with_state(original.MSG, {"msg": 1, "extra": 2}), 4))
    out.invalid(t, "MSG without BUILD", "CMD-4", "no state", ["BadState"], payload=proto4(CMD_CLASS["MSG"] + NEW + b"."))
    out.invalid(t, "MSG with an empty state dict", "CMD-4", "no msg", ["BadState"], payload=proto4(CMD_CLASS["MSG"] + NEW + b"}b."))
    out.invalid(t, "MSG with a list as state", "CMD-4", "state not a dict", ["BadState"],
                payload=proto4(CMD_CLASS["MSG"] + NEW + b"]b."))
    out.invalid(t, "MSG with a bytes key", "CMD-4", "key not str", ["BadState"],
                payload=proto4(CMD_CLASS["MSG"] + NEW + b"}C\x03msgNsb."))

    t = out.group("InvalidPayload", "hand-written", "Values (VAL-2, VAL-3)")
    out.invalid(t, "dict with a list key", "VAL-2", "unhashable key", ["BadValue"], payload=msg_with(b"}\x94]\x94Ns"))
    out.invalid(t, "dict with a tuple key holding a list", "VAL-2", "unhashable key", ["BadValue"],
                payload=msg_with(b"}\x94]\x94\x85\x94Ns"))
    cyclic: List[Any] = []
    cyclic.append(cyclic)
    out.invalid(t, "a list that contains itself, as the original writes it", "VAL-3", "cycle", ["BadValue", "Malicious"],
                payload=original_dumps(lambda: original.MSG(cyclic), 4))
    cyclic_dict: Dict[str, Any] = {}
    cyclic_dict["self"] = [cyclic_dict]
    out.invalid(t, "a dict that contains itself through a list", "VAL-3", "cycle", ["BadValue", "Malicious"],
                payload=original_dumps(lambda: original.MSG(cyclic_dict), 4))
    out.invalid(t, "a list changed after a memo reference to it", "VAL-3", "changed after reference", ["BadValue"],
                payload=msg_with(b"]\x94h\x06K\x01a"))

    # Added in generator version 2; appended so that earlier tcIds stay as they were.
    t = out.group("InvalidPayload", "hand-written", "The pickle structure and globals, second set (ENC-1, ENC-3)")
    out.invalid(t, "MEMOIZE right after MARK", "ENC-1", "a MARK is not an object", ["Malformed"],
                payload=b"\x80\x04(\x94" + ack[11:])
    out.invalid(t, "GLOBAL without a newline", "ENC-1", "GLOBAL needs two lines", ["Malformed"],
                payload=b"\x80\x02c" + op.COMMAND_MODULE.encode())
    out.invalid(t, "GLOBAL with one newline, then STOP", "ENC-1", "GLOBAL needs two lines", ["Malformed"],
                payload=b"\x80\x02c" + op.COMMAND_MODULE.encode() + b"\nACK.")
    out.invalid(t, "GLOBAL with a non-ASCII module name", "ENC-3", "global not allowed", ["ForbiddenGlobal"],
                payload=b"\x80\x02cskyllh.cl\xc3\xbcster.commands\nACK\n)\x81.")
    out.invalid(t, "GLOBAL with a class name that is not UTF-8", "ENC-3", "global not allowed", ["ForbiddenGlobal"],
                payload=b"\x80\x02c" + op.COMMAND_MODULE.encode() + b"\nAC\xff\n)\x81.")

    t = out.group("EncodeRefusal", "hand-written", "Values the encoder must refuse (ENC-6, VAL-2, VAL-3 as a sender)")
    deep: Dict[str, Any] = {"type": "list", "items": []}
    for _ in range(MAX_DEPTH):
        deep = {"type": "list", "items": [deep]}
    out.invalid(t, f"MSG of lists nested {MAX_DEPTH + 1} deep", "ENC-6", "too deep to send", ["EncodeOnly", "Limits"],
                command={"class": "MSG", "state": [["msg", deep]]})
    out.invalid(t, "MSG of a dict with a list key", "VAL-2", "unhashable key", ["EncodeOnly", "BadValue"],
                command={"class": "MSG", "state": [["msg", {"type": "dict", "items": [
                    [{"type": "list", "items": []}, {"type": "none"}]]}]]})
    out.invalid(t, "MSG of a dict with a tuple key that holds a dict", "VAL-2", "unhashable key", ["EncodeOnly", "BadValue"],
                command={"class": "MSG", "state": [["msg", {"type": "dict", "items": [
                    [{"type": "tuple", "items": [{"type": "dict", "items": []}]}, {"type": "none"}]]}]]})
    out.invalid(t, "MSG of a list that contains itself", "VAL-3", "cycle", ["EncodeOnly", "BadValue"],
                command={"class": "MSG", "state": [["msg", {"type": "list", "items": [{"type": "ref", "up": 0}]}]]})
    out.invalid(t, "MSG of a dict that contains itself through a list", "VAL-3", "cycle", ["EncodeOnly", "BadValue"],
                command={"class": "MSG", "state": [["msg", {"type": "dict", "items": [
                    [{"type": "str", "utf8": "73656c66"}, {"type": "list", "items": [{"type": "ref", "up": 1}]}]]}]]})

    # Added in generator version 3; appended so that earlier tcIds stay as they were.
    t = out.group("InvalidPayload", "original-skyllh-24.1.0 protocol 4", "ENC-6 limits passed by one (generator version 3)")
    out.invalid(t, "a state dict costing MAX_VALUE_COST + 1, through 1048 references to one str", "ENC-6",
                "cost over 2**20 at the state's SETITEM", ["Limits", "Malicious"],
                payload=original_dumps(lambda: original.MSG(_costing(MAX_VALUE_COST + 1)), 4))
    out.invalid(t, f"a dict of {MAX_SAME_HASH_KEYS + 1} int keys that all hash to 0", "ENC-6", "too many keys of one hash",
                ["Limits", "Malicious"], payload=original_dumps(lambda: original.MSG(_one_hash(MAX_SAME_HASH_KEYS + 1)), 4))
    out.invalid(t, f"a dict of {MAX_SAME_HASH_KEYS + 1} tuple keys of one hash", "ENC-6", "too many keys of one hash",
                ["Limits", "Malicious"],
                payload=original_dumps(lambda: original.MSG(_one_hash(MAX_SAME_HASH_KEYS + 1, True)), 4))
    out.invalid(t, "a 60 KB dict of 4999 int keys that all hash to 0 (quadratic to build)", "ENC-6",
                "too many keys of one hash", ["Limits", "Malicious"],
                payload=original_dumps(lambda: original.MSG(_one_hash(4999)), 4))
    t = out.group("EncodeRefusal", "hand-written", "Values the encoder must refuse, second set (ENC-6; generator version 3)")
    out.invalid(t, f"MSG of a dict of {MAX_SAME_HASH_KEYS + 1} int keys that all hash to 0", "ENC-6",
                "too many keys of one hash to send", ["EncodeOnly", "Limits"], command=_one_hash_json(MAX_SAME_HASH_KEYS + 1))
    # Appended so that earlier tcIds stay as they were: a lenient decoder maps these to a value, so a MSG
    # that is valid around them must still be refused.
    t = out.group("InvalidPayload", "hand-written", "Opcodes outside the profile inside an otherwise valid MSG (ENC-2)")
    for name, value_ops in [("BINSTRING", b"T\x02\x00\x00\x00hi"), ("SHORT_BINSTRING", b"U\x02hi"),
                            ("PERSID", b"Phi\n"), ("BINPERSID", b"\x8c\x02idQ")]:
        out.invalid(t, f"MSG whose value is written with {name}", "ENC-2", "not in the profile", ["ForbiddenOpcode"],
                    payload=msg_with(value_ops))
    return out


def all_files() -> List[VectorFile]:
    return [commands_file(), values_file(), original_protocols_file(), invalid_file()]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if spec/vectors/*.json differ from what is generated")
    parser.add_argument("--directory", type=Path, default=VECTOR_DIR)
    args = parser.parse_args(argv)
    stale = []
    outputs = [(args.directory / f.name, f.render()) for f in all_files()]
    if args.directory == VECTOR_DIR:
        outputs += [(KIT_COPY, text) for path, text in outputs if path.name == "invalid.json"]
    for path, text in outputs:
        if args.check:
            if not path.exists() or path.read_text(encoding="ascii") != text:
                stale.append(str(path))
        else:
            path.write_text(text, encoding="ascii")
    if stale:
        print("stale test vectors (run scripts/regenerate_vectors.py):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
