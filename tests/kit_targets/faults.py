"""What the faulty targets send instead of the right bytes, clause by clause.

Also :func:`emulate_unsafe_unpickler`: how the targets play an implementation
that gives what it receives to ``pickle.loads``, without calling pickle.  It
reads the payload with :func:`pickletools.genops` (which only parses) and, if
the payload calls ``socket.create_connection`` on a loopback address, makes
exactly that connection: the one effect the kit's canary payloads have.
"""

from __future__ import annotations

import ipaddress
import pickletools
import socket
import struct
from typing import Any, List, Tuple

from skyllh_cluster.codec import dumps
from skyllh_cluster.commands import MSG, RegisterCN
from skyllh_cluster.wire.framing import encode_frame

from skyllh_cluster.conformance.payloads import COMMANDS_MODULE, Assembler, encode

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def frame(payload: bytes, big_endian: bool = False) -> bytes:
    """``payload`` behind its length prefix; a big-endian prefix is the FRM-1 fault."""
    if big_endian:
        return len(payload).to_bytes(2, "big") + payload
    return encode_frame(payload)


def command_with_raw_state(name: str, raw_state: bytes, *, args: bytes = b")") -> bytes:
    """A command payload whose state (the dict for BUILD) is ``raw_state`` opcodes."""
    asm = Assembler(4)
    asm.global_(COMMANDS_MODULE, name)
    asm.op(args).op(b"\x81").memoize()
    if raw_state:
        asm.op(raw_state).op(b"b")
    return asm.finish(frame=True)


def msg_with_raw_value(raw_value: bytes) -> bytes:
    """A MSG payload whose value is the opcodes ``raw_value``."""
    return command_with_raw_state("MSG", b"}\x94\x8c\x03msg\x94" + raw_value + b"s")


#: Faulty payloads, by clause: each replaces one payload of a conforming sender.
def bad_msg(clause: str) -> bytes:
    """A MSG payload that breaks ``clause`` (ENC-*, CMD-4, VAL-2, VAL-3)."""
    if clause == "ENC-1":
        return dumps(MSG("trailing")) + b"."
    if clause == "ENC-2":
        return msg_with_raw_value(b"\x8f")  # EMPTY_SET: not in the profile
    if clause == "ENC-3":
        return msg_with_raw_value(b"\x8c\x02os\x8c\x06system\x93")  # a reference to os.system
    if clause == "ENC-4":
        return msg_with_raw_value(b"h\x63")  # BINGET 99: never stored
    if clause == "CMD-4":
        return command_with_raw_state("MSG", b"}(\x8c\x03msgK\x01\x8c\x05extraK\x02u")
    if clause == "VAL-2":
        return msg_with_raw_value(b"}](K\x01eK\x02s")  # {[1]: 2}
    if clause == "VAL-3":
        return msg_with_raw_value(b"]\x94(h\x06e")  # a list that contains itself (memo 6)
    raise KeyError(clause)


def bad_ack(clause: str) -> bytes:
    """An ACK payload that breaks ``clause`` (CMD-1, CMD-2)."""
    if clause == "CMD-1":
        return command_with_raw_state("ACK", b"", args=b"K\x01\x85")  # NEWOBJ with (1,)
    if clause == "CMD-2":
        return command_with_raw_state("ACK", b"}(\x8c\x01xK\x01u")
    raise KeyError(clause)


def bad_registration(clause: str, start: int, live: int) -> bytes:
    """A RegisterCN payload that breaks ``clause``."""
    if clause == "ENC-1":
        return dumps(RegisterCN(start, live)) + b"."
    if clause == "ENC-2":
        times = b"}(\x8c\x0e_cn_start_timeI" + str(start).encode() + b"\n\x8c\r_cn_live_timeI" + str(live).encode() + b"\nu"
        return command_with_raw_state("RegisterCN", times)
    if clause == "ENC-3":
        asm = Assembler(4)
        asm.global_("skyllh.cluster.evil", "RegisterCN").op(b")").op(b"\x81")
        return asm.finish(frame=True)
    if clause == "ENC-4":
        return command_with_raw_state("RegisterCN", b"}(\x8c\x0e_cn_start_timeh\x63\x8c\r_cn_live_timeJ" + struct.pack("<i", live) + b"u")
    if clause == "ENC-7":
        return encode(RegisterCN(start, live), 2)
    if clause == "CMD-1":
        state = b"}(\x8c\x0e_cn_start_timeJ" + struct.pack("<i", start) + b"\x8c\r_cn_live_timeJ" + struct.pack("<i", live) + b"u"
        return command_with_raw_state("RegisterCN", state, args=b"K\x01\x85")
    if clause == "CMD-3":
        asm = Assembler(4)
        asm.global_(COMMANDS_MODULE, "RegisterCN").op(b")").op(b"\x81").memoize()
        asm.op(b"}").memoize().op(b"(").text("_cn_start_time").text(str(start)).text("_cn_live_time").text(str(live))
        return asm.op(b"u").op(b"b").finish(frame=True)
    raise KeyError(clause)


def emulate_unsafe_unpickler(payload: bytes, where: str) -> bool:
    """Play ``pickle.loads`` for the kit's canary; return whether it "ran".

    ``where`` is ``"top"`` (only a call at the top level of the payload, the
    classic malicious pickle) or ``"nested"`` (only a call inside a command's
    state).  Nothing is unpickled: the payload is only parsed.
    """
    events: List[Tuple[str, Any]] = []
    try:
        for opcode, arg, _ in pickletools.genops(payload):
            name = opcode.name
            if name in ("SHORT_BINUNICODE", "BINUNICODE"):
                events.append(("str", arg))
            elif name in ("BININT", "BININT1", "BININT2"):
                events.append(("int", arg))
            elif name == "GLOBAL":
                events.append(("global", tuple(arg.split(" ", 1))))
            elif name == "STACK_GLOBAL" and len(events) >= 2:
                events[-2:] = [("global", (events[-2][1], events[-1][1]))]
    except Exception:  # noqa: BLE001 - a payload pickletools cannot parse runs nothing
        return False
    globals_ = [value for kind, value in events if kind == "global"]
    if ("socket", "create_connection") not in globals_:
        return False
    if (where == "top") != (globals_[0] == ("socket", "create_connection")):
        return False
    for i, (kind, value) in enumerate(events):
        if kind == "str" and _is_loopback(value):
            port = next((v for k, v in events[i + 1 :] if k == "int"), None)
            if port is None:
                return False
            try:
                socket.create_connection((value, port), timeout=1).close()
            except OSError:
                return False
            return True
    return False


def _is_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text) in LOOPBACK
    except ValueError:
        return False


__all__ = ["frame", "bad_msg", "bad_ack", "bad_registration", "emulate_unsafe_unpickler"]
