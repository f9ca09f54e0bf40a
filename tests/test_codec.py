"""The codec: golden frames, the canonical encoder's choices and refusals, no execution."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest
import skyllh.cluster.commands as original

from skyllh_cluster.codec import dumps, loads, loads_checked, make_command
from skyllh_cluster.commands import ACK, MSG, Command, RegisterCN, ShutdownCN
from skyllh_cluster.errors import LocalProtocolError, ProtocolError
from skyllh_cluster.wire.encoder import encode_int
from skyllh_cluster.wire.framing import FrameBuffer, encode_frame
from skyllh_cluster.wire.grammar import parse_frame
from skyllh_cluster.wire.values import MAX_DEPTH
from skyllh_cluster.wire import opcodes as op

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"

# The four frames of /work/shared/original-skyllh-cluster.md, as the original sent them.
GOLDEN = [
    (ACK(), "310080049526000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0341434b9493942981942e"),
    (
        ShutdownCN(),
        "38008004952d000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a53687574646f776e434e"
        "9493942981942e",
    ),
    (
        RegisterCN(1732560000, 7200),
        "66008004955b000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0a5265676973746572434e"
        "9493942981947d94288c0e5f636e5f73746172745f74696d65944a80c444678c0d5f636e5f6c6976655f74696d65944d201c75622e",
    ),
    (
        MSG("hello"),
        "430080049538000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473948c034d53479493942981947d94"
        "8c036d7367948c0568656c6c6f9473622e",
    ),
]


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("command, frame_hex", GOLDEN, ids=lambda x: type(x).__name__ if isinstance(x, Command) else "")
def test_golden_frames_decode_and_reencode_byte_identically(command: Command, frame_hex: str) -> None:
    frame = bytes.fromhex(frame_hex)
    payload = frame[2:]
    assert loads(payload) == command
    assert loads_checked(payload) == command
    assert parse_frame(frame, make_command) == command
    assert encode_frame(dumps(command)) == frame
    assert encode_frame(dumps(loads(payload))) == frame


@pytest.mark.parametrize(
    "make",
    [
        original.ACK,
        original.ShutdownCN,
        lambda: original.RegisterCN(-(2**40), 2**31),
        lambda: original.MSG("MSG"),  # the class name's memo entry is referenced
        lambda: original.MSG("msg"),  # the dict key's memo entry is referenced
        lambda: original.MSG({i: None for i in range(1000)}),  # CPython's empty trailing SETITEMS
        lambda: original.MSG([None] * 2001),
        lambda: original.MSG([str(i) for i in range(300)] * 2),  # LONG_BINGET
        lambda: original.MSG(("x" * 70000)[:60000]),
    ],
)
def test_dumps_writes_what_the_originals_pickle_writes(make: Any) -> None:
    theirs = make()
    cls = {c.__name__: c for c in (ACK, MSG, RegisterCN, ShutdownCN)}[type(theirs).__name__]
    ours = cls.__new__(cls)
    ours.__dict__.update(theirs.__dict__)
    assert dumps(ours) == pickle.dumps(theirs, protocol=4)


def test_msg_referring_to_the_class_name_is_not_reencoded_identically() -> None:
    # pickle.loads does not intern strings either: the decoded 'MSG' is a new
    # object, so re-encoding writes it out again, as CPython would.
    payload = dumps(MSG("MSG"))
    assert b"h\x01" in payload
    decoded = loads(payload)
    assert decoded == MSG("MSG")
    assert dumps(decoded) == pickle.dumps(original.MSG("".join(["M", "SG"])), protocol=4)


@pytest.mark.parametrize(
    "value, opcode",
    [(0, "K"), (255, "K"), (256, "M"), (65535, "M"), (65536, "J"), (-1, "J"), (2**31 - 1, "J"), (-(2**31), "J"),
     (2**31, "\x8a"), (-(2**31) - 1, "\x8a"), (-128, "J"), (2**2039 - 1, "\x8a"), (2**2039, "\x8b"), (-(2**2039), "\x8a"),
     (-(2**2039) - 1, "\x8b")],
)
def test_encode_int_picks_cpythons_opcode(value: int, opcode: str) -> None:
    encoded = encode_int(value)
    assert encoded[0] == ord(opcode)
    assert pickle.dumps(value, protocol=2)[2:-1] == encoded  # unframed: ints are written alike at 2..5


@pytest.mark.parametrize("payload_type", [bytearray, memoryview])
def test_loads_accepts_any_buffer(payload_type: type) -> None:
    assert loads(payload_type(dumps(MSG([1])))) == MSG([1])
    assert loads_checked(payload_type(dumps(MSG([1])))) == MSG([1])


def test_loads_refuses_a_non_buffer() -> None:
    with pytest.raises(TypeError):
        loads("not bytes")  # type: ignore[arg-type]


def with_state(cls: type, **state: Any) -> Command:
    command = cls.__new__(cls)
    command.__dict__.update(state)
    return command


def cyclic_list() -> list:
    value: list = []
    value.append(value)
    return value


def shared_bomb() -> list:
    value: list = [0]
    for _ in range(25):
        value = [value, value]
    return value


def too_deep_through_sharing() -> list:
    # Each part alone is within MAX_DEPTH; the second use of ``inner`` is a
    # memo reference 61 levels further down, which makes it 211 deep.
    inner = nested(150)
    outer: list = [inner]
    for _ in range(60):
        outer = [outer]
    return [inner, outer]


@pytest.mark.parametrize(
    "command, clause",
    [
        (with_state(ACK, x=1), "CMD-2"),
        (with_state(ShutdownCN, x=1), "CMD-2"),
        (with_state(RegisterCN, _cn_start_time="1", _cn_live_time=2), "CMD-3"),
        (with_state(RegisterCN, _cn_start_time=1, _cn_live_time=True), "CMD-3"),
        (with_state(RegisterCN, _cn_start_time=1), "CMD-3"),
        (with_state(MSG, msg=1, extra=2), "CMD-4"),
        (with_state(MSG), "CMD-4"),
        (with_state(MSG, msg={1, 2}), "VAL-1"),
        (with_state(MSG, msg=[ACK()]), "VAL-1"),
        (with_state(MSG, msg={frozenset(): 1}), "VAL-2"),
        (with_state(MSG, msg=cyclic_list()), "VAL-3"),
        (with_state(MSG, msg=nested(MAX_DEPTH + 1)), "ENC-6"),
        (with_state(MSG, msg=too_deep_through_sharing()), "ENC-6"),
        (with_state(MSG, msg=shared_bomb()), "ENC-6"),
        (MSG("x" * 65536), "FRM-2"),
        (object(), "CMD-1"),
    ],
)
def test_dumps_refuses_what_the_protocol_forbids(command: Any, clause: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        dumps(command)
    assert info.value.clause == clause


def test_dumps_accepts_exactly_max_depth() -> None:
    inner = nested(150)
    outer: list = [inner]
    for _ in range(48):
        outer = [outer]
    value = [inner, outer]  # 200 deep through a memo reference
    assert loads(dumps(MSG(value))) == MSG(value)
    assert loads(dumps(MSG(nested(MAX_DEPTH)))) == MSG(nested(MAX_DEPTH))


def test_the_largest_frame_is_accepted_and_one_byte_more_is_refused() -> None:
    text = "x" * (0xFFFF - 65)
    payload = dumps(MSG(text))
    assert len(payload) == 0xFFFF
    assert loads(payload) == MSG(text)
    with pytest.raises(LocalProtocolError) as info:
        dumps(MSG(text + "x"))
    assert info.value.clause == "FRM-2"


# --- no execution (ENC-5, SEC-1) ----------------------------------------------

CANARY_CALLS: List[Any] = []


def canary(*args: Any) -> None:
    CANARY_CALLS.append(args)


class CallsCanary:
    def __reduce__(self) -> Any:
        return (canary, ("ran",))


def malicious_payloads() -> List[bytes]:
    payloads = []
    for name in ("invalid.json", "original_protocols.json"):
        document = json.loads((VECTORS / name).read_text())
        for group in document["testGroups"]:
            for test in group["tests"]:
                if "frame" in test and test["result"] == "invalid" and "TruncatedFrame" not in test["flags"]:
                    payloads.append(bytes.fromhex(test["frame"])[2:])
    for protocol in (2, 3, 4, 5):
        payloads.append(pickle.dumps(CallsCanary(), protocol=protocol))
        payloads.append(pickle.dumps(original.MSG([1, CallsCanary()]), protocol=protocol))
    return payloads


def test_the_canary_payload_would_run_under_pickle() -> None:
    # Proves the canary is live: the unrestricted unpickler (on our own bytes) calls it.
    CANARY_CALLS.clear()
    pickle.loads(pickle.dumps(CallsCanary(), protocol=4))
    assert CANARY_CALLS == [("ran",)]
    CANARY_CALLS.clear()


def test_decoding_never_imports_calls_or_executes(monkeypatch: pytest.MonkeyPatch) -> None:
    touched: List[str] = []
    real_import = builtins.__import__

    def spy_import(name: str, *args: Any, **kwargs: Any) -> Any:
        touched.append(f"import {name}")
        return real_import(name, *args, **kwargs)

    # Warm the lazy import of the grammar first, so that any import after it is the payload's.
    loads_checked(dumps(ACK()))
    payloads = malicious_payloads()
    monkeypatch.setattr(os, "system", lambda *a: touched.append("os.system"))
    monkeypatch.setattr(builtins, "eval", lambda *a: touched.append("eval"))
    monkeypatch.setattr(builtins, "exec", lambda *a: touched.append("exec"))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: touched.append("Popen"))
    monkeypatch.setattr(builtins, "__import__", spy_import)  # last: monkeypatch itself imports
    CANARY_CALLS.clear()
    outcomes = []
    for payload in payloads:
        for decode in (loads, loads_checked):
            try:
                outcomes.append(decode(payload))
            except ProtocolError as exc:
                outcomes.append(exc)
    monkeypatch.undo()
    assert len(payloads) > 60
    assert all(isinstance(outcome, ProtocolError) for outcome in outcomes)
    assert touched == []
    assert CANARY_CALLS == []


def test_loads_works_with_skyllh_blocked_from_import() -> None:
    program = f"""
import sys
sys.modules['skyllh'] = None  # any import of skyllh now raises ImportError
import json
from skyllh_cluster.codec import loads, loads_checked
document = json.load(open({str(VECTORS / 'original_protocols.json')!r}))
count = 0
for group in document['testGroups']:
    for test in group['tests']:
        if test['result'] == 'valid':
            payload = bytes.fromhex(test['frame'])[2:]
            assert loads(payload) == loads_checked(payload)
            count += 1
assert not any(name == 'skyllh' or name.startswith('skyllh.') for name in sys.modules if sys.modules[name] is not None)
print(count)
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 20


# --- the reader on whole input, byte by byte and with trailing data (h11 style) --


def decode_stream(chunks: List[bytes]) -> List[Command]:
    buffer = FrameBuffer()
    out = []
    for chunk in chunks:
        buffer.feed(chunk)
        while True:
            payload = buffer.next_payload()
            if payload is None:
                break
            out.append(loads(payload))
    return out


STREAM_COMMANDS = [RegisterCN(1, 2), ACK(), MSG({"a": [1, 2.5]}), MSG("x" * 300), ShutdownCN()]
STREAM = b"".join(encode_frame(dumps(c)) for c in STREAM_COMMANDS)


def test_reader_whole_input() -> None:
    assert decode_stream([STREAM]) == STREAM_COMMANDS


def test_reader_byte_by_byte() -> None:
    assert decode_stream([STREAM[i : i + 1] for i in range(len(STREAM))]) == STREAM_COMMANDS


def test_reader_with_trailing_partial_frame() -> None:
    trailing = encode_frame(dumps(ACK()))[:7]
    assert decode_stream([STREAM + trailing]) == STREAM_COMMANDS
    buffer = FrameBuffer()
    buffer.feed(STREAM + trailing)
    while buffer.next_payload() is not None:
        pass
    buffer.feed(b"")
    with pytest.raises(ProtocolError) as info:
        buffer.next_payload()
    assert info.value.clause == "FRM-5"


def test_profile_tables_are_consistent() -> None:
    assert set(op.PROFILE_OPCODES) == {spec.code for spec in op.PROFILE_OPCODES.values()}
    assert op.PROFILE_OPCODES[op.SHORT_BINUNICODE].protocols == frozenset({4, 5})
    assert op.PROFILE_OPCODES[op.STOP].protocols == frozenset({2, 3, 4, 5})
    assert op.opcode_name(ord("R")) == "REDUCE" and op.opcode_name(0xFF) == "0xff"
    assert all(module == op.COMMAND_MODULE for (module, _), role in op.ALLOWED_GLOBALS.items()
               if role is op.GlobalRole.COMMAND_CLASS)
