"""The payloads the kit sends: other valid encodings, invalid ones, and canaries.

Canonical payloads come from :func:`skyllh_cluster.codec.dumps`.  Everything
else is assembled here, opcode by opcode, because the kit must be able to
send what no well-behaved encoder writes:

* :func:`encode` writes a command in another valid encoding (pickle protocol
  2, 3, 4 or 5, with or without ``FRAME`` and memo opcodes), as other
  picklers do; ENC-8 says a receiver accepts all of them.  Every payload it
  returns is checked against the normative grammar before use, so the kit
  never blames a target for refusing something invalid.
* :data:`INVALID_FIRST_FRAMES` and :func:`invalid_registration` are first
  frames a master must refuse (MST-3).
* :func:`canary` is a pickle that connects back to the kit if, and only if,
  something unpickles it with an unrestricted unpickler (SEC-1, ENC-5): the
  "code" it runs is ``socket.create_connection((host, port))``, which does
  nothing but open a connection to the kit's canary listener.
"""

from __future__ import annotations

import pickletools
import struct
from typing import Any, Callable, Dict, List, Tuple

from skyllh_cluster.codec import dumps, loads_checked
from skyllh_cluster.commands import ACK, MSG, Command, RegisterCN, ShutdownCN
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.wire import opcodes as opc
from skyllh_cluster.wire.framing import encode_frame
from skyllh_cluster.wire.values import values_equal

from .failures import KitError

__all__ = [
    "COMMANDS_MODULE",
    "Assembler",
    "encode",
    "ENCODING_STYLES",
    "STATE_LAYOUTS",
    "checked_valid",
    "canary",
    "canary_inside",
    "INVALID_FIRST_FRAMES",
    "invalid_registration",
    "invalid_state",
    "foreign_value_ops",
]

COMMANDS_MODULE = "skyllh.cluster.commands"

#: The encodings :func:`encode` can write: (protocol, FRAME opcode, memo opcodes).
ENCODING_STYLES: Tuple[Tuple[int, bool, bool], ...] = (
    (2, False, True),
    (2, False, False),
    (3, False, True),
    (4, False, False),
    (4, True, True),
    (5, True, True),
    (5, False, False),
)

#: How :func:`encode` may lay out a command's state: (keys in reverse order, one SETITEM per key).
STATE_LAYOUTS: Tuple[Tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))


class Assembler:
    """Writes pickle opcodes one by one (only what the kit needs).

    Opcodes are named from the profile's opcode table,
    :mod:`skyllh_cluster.wire.opcodes`; :meth:`op` also takes raw bytes, for
    the invalid payloads the kit must be able to write.
    """

    def __init__(self, protocol: int, *, memo: bool = True) -> None:
        self.protocol = protocol
        self.memo = memo
        self._memo_count = 0
        self.out = bytearray()

    def op(self, code: "int | bytes", arg: bytes = b"") -> "Assembler":
        """Append an opcode (a byte of the opcode table, or raw bytes) and its argument."""
        self.out += (bytes((code,)) if isinstance(code, int) else code) + arg
        return self

    def memoize(self) -> "Assembler":
        if not self.memo:
            return self
        if self.protocol >= 4:
            self.op(opc.MEMOIZE)
        elif self._memo_count < 256:
            self.op(opc.BINPUT, bytes([self._memo_count]))
        else:
            self.op(opc.LONG_BINPUT, struct.pack("<I", self._memo_count))
        self._memo_count += 1
        return self

    def global_(self, module: str, name: str) -> "Assembler":
        if self.protocol >= 4:
            self.text(module).text(name).op(opc.STACK_GLOBAL)
        else:
            self.op(opc.GLOBAL, f"{module}\n{name}\n".encode("ascii"))
        return self.memoize()

    def text(self, s: str) -> "Assembler":
        raw = s.encode("utf-8", "surrogatepass")
        if self.protocol >= 4 and len(raw) < 256:
            self.op(opc.SHORT_BINUNICODE, bytes([len(raw)]) + raw)
        else:
            self.op(opc.BINUNICODE, struct.pack("<I", len(raw)) + raw)
        return self.memoize()

    def integer(self, n: int) -> "Assembler":
        if 0 <= n < 0x100:
            return self.op(opc.BININT1, bytes([n]))
        if 0 <= n < 0x10000:
            return self.op(opc.BININT2, struct.pack("<H", n))
        if -(2**31) <= n < 2**31:
            return self.op(opc.BININT, struct.pack("<i", n))
        raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
        return self.op(opc.LONG1, bytes([len(raw)]) + raw)

    def value(self, v: Any) -> "Assembler":
        kind = type(v)
        if v is None:
            return self.op(opc.NONE)
        if kind is bool:
            return self.op(opc.NEWTRUE if v else opc.NEWFALSE)
        if kind is int:
            return self.integer(v)
        if kind is float:
            return self.op(opc.BINFLOAT, struct.pack(">d", v))
        if kind is str:
            return self.text(v)
        if kind is bytes:
            return self._bytes(v)
        if kind is list:
            self.op(opc.EMPTY_LIST).memoize()
            if v:
                self.op(opc.MARK)
                for item in v:
                    self.value(item)
                self.op(opc.APPENDS)
            return self
        if kind is tuple:
            if not v:
                return self.op(opc.EMPTY_TUPLE)
            self.op(opc.MARK)
            for item in v:
                self.value(item)
            return self.op(opc.TUPLE).memoize()
        if kind is dict:
            self.op(opc.EMPTY_DICT).memoize()
            if v:
                self.op(opc.MARK)
                for key, item in v.items():
                    self.value(key).value(item)
                self.op(opc.SETITEMS)
            return self
        raise KitError(f"the kit cannot encode a {kind.__name__}")

    def _bytes(self, b: bytes) -> "Assembler":
        if self.protocol >= 3:
            if len(b) < 256:
                return self.op(opc.SHORT_BINBYTES, bytes([len(b)]) + b).memoize()
            return self.op(opc.BINBYTES, struct.pack("<I", len(b)) + b).memoize()
        # Protocol 2 has no bytes opcode: CPython writes a call of
        # _codecs.encode(latin-1 text, 'latin1'), which the profile reads as data.
        if not b:
            return self.global_("__builtin__", "bytes").op(opc.EMPTY_TUPLE).op(opc.REDUCE).memoize()
        self.global_("_codecs", "encode")
        self.text(b.decode("latin-1")).text("latin1").op(opc.TUPLE2).memoize()
        return self.op(opc.REDUCE).memoize()

    def finish(self, *, frame: bool) -> bytes:
        body = bytes(self.out) + bytes((opc.STOP,))
        head = bytes((opc.PROTO, self.protocol))
        if frame and self.protocol >= 4:
            head += bytes((opc.FRAME,)) + struct.pack("<Q", len(body))
        return head + body


def _state(command: Command) -> Dict[str, Any]:
    return dict(vars(command))


def encode(
    command: Command,
    protocol: int = 4,
    *,
    frame: bool = True,
    memo: bool = True,
    reverse_keys: bool = False,
    setitem: bool = False,
) -> bytes:
    """Encode ``command`` in another valid, usually non-canonical, way.

    ``reverse_keys`` writes the state's keys in the other order (CMD-3 names
    the keys, not their order); ``setitem`` fills the state with one
    ``SETITEM`` per key instead of ``MARK ... SETITEMS`` (ENC-8).

    Raises :class:`KitError` if the result is not valid under the grammar or
    does not decode to ``command``: the kit only sends as valid what is.
    """
    asm = Assembler(protocol, memo=memo)
    asm.global_(COMMANDS_MODULE, type(command).__name__)
    asm.op(opc.EMPTY_TUPLE).op(opc.NEWOBJ).memoize()
    state = list(_state(command).items())
    if reverse_keys:
        state.reverse()
    if state:
        asm.op(opc.EMPTY_DICT).memoize()
        if not setitem:
            asm.op(opc.MARK)
        for key, item in state:
            asm.text(key).value(item)
            if setitem:
                asm.op(opc.SETITEM)
        if not setitem:
            asm.op(opc.SETITEMS)
        asm.op(opc.BUILD)
    return checked_valid(asm.finish(frame=frame), command)


def checked_valid(payload: bytes, expected: Command) -> bytes:
    """Return ``payload`` after checking that the grammar decodes it to ``expected``."""
    try:
        decoded = loads_checked(payload)
    except ProtocolError as exc:
        raise KitError(f"the kit built an invalid payload {payload.hex()}: {exc}") from None
    got, want = _state(decoded), _state(expected)
    if type(decoded) is not type(expected) or set(got) != set(want) or not all(values_equal(got[k], want[k]) for k in want):
        raise KitError(f"the kit's payload {payload.hex()} decodes to {decoded!r}, not {expected!r}")
    return payload


def _must_be_invalid(payload: bytes) -> bytes:
    try:
        loads_checked(payload)
    except ProtocolError:
        return payload
    raise KitError(f"the kit meant {payload.hex()} to be invalid, but it decodes")


# -- canaries (SEC-1, ENC-5) -------------------------------------------------------
def _connect_back(asm: Assembler, host: str, port: int) -> Assembler:
    """``socket.create_connection((host, port))``: the canary's only effect."""
    asm.global_("socket", "create_connection")
    asm.text(host).integer(port).op(opc.TUPLE2)  # the address
    asm.op(opc.TUPLE1)  # the argument tuple
    return asm.op(opc.REDUCE)


def canary(host: str, port: int, protocol: int = 2) -> bytes:
    """A payload that connects to ``host:port`` when given to ``pickle.loads``.

    The classic shape of a malicious pickle (a call at the top level).  A
    receiver that meets SEC-1 refuses it without connecting anywhere.
    """
    asm = Assembler(protocol)
    return _must_be_invalid(_connect_back(asm, host, port).finish(frame=protocol >= 4))


def canary_inside(command_name: str, host: str, port: int) -> bytes:
    """A command of the right class whose state hides the canary's call.

    For ``RegisterCN`` the call is the start time; for ``MSG`` it sits inside
    a list in the value.  A receiver that unpickles first and checks the
    result afterwards has already run it (ENC-5).
    """
    asm = Assembler(4)
    asm.global_(COMMANDS_MODULE, command_name).op(opc.EMPTY_TUPLE).op(opc.NEWOBJ).memoize()
    asm.op(opc.EMPTY_DICT).memoize().op(opc.MARK)
    if command_name == "RegisterCN":
        asm.text("_cn_start_time")
        _connect_back(asm, host, port)
        asm.text("_cn_live_time").integer(7200)
    else:
        asm.text("msg").op(opc.EMPTY_LIST).memoize().op(opc.MARK).value("canary")
        _connect_back(asm, host, port)
        asm.op(opc.APPENDS)
    asm.op(opc.SETITEMS).op(opc.BUILD)
    return _must_be_invalid(asm.finish(frame=True))


# -- invalid first frames (MST-3) --------------------------------------------------
def invalid_registration(fields: Dict[str, Any]) -> bytes:
    """A RegisterCN payload with the given (invalid) state, canonical in every other way."""
    return invalid_state("RegisterCN", fields)


def invalid_state(command_name: str, fields: Dict[str, Any]) -> bytes:
    """A payload of the command class ``command_name`` with the given (invalid) state."""
    asm = Assembler(4)
    asm.global_(COMMANDS_MODULE, command_name).op(opc.EMPTY_TUPLE).op(opc.NEWOBJ).memoize()
    asm.op(opc.EMPTY_DICT).memoize().op(opc.MARK)
    for key, item in fields.items():
        asm.text(key).value(item)
    asm.op(opc.SETITEMS).op(opc.BUILD)
    return _must_be_invalid(asm.finish(frame=True))


def _deep_registration(depth: int) -> bytes:
    """A RegisterCN whose start time is an int inside ``depth`` nested lists."""
    asm = Assembler(4, memo=False)
    asm.global_(COMMANDS_MODULE, "RegisterCN").op(opc.EMPTY_TUPLE).op(opc.NEWOBJ)
    asm.op(opc.EMPTY_DICT).op(opc.MARK).text("_cn_start_time")
    for _ in range(depth):  # written flat: EMPTY_LIST MARK ... APPENDS, inside out
        asm.op(opc.EMPTY_LIST).op(opc.MARK)
    asm.integer(1732560000)
    for _ in range(depth):
        asm.op(opc.APPENDS)
    asm.text("_cn_live_time").integer(7200).op(opc.SETITEMS).op(opc.BUILD)
    return _must_be_invalid(asm.finish(frame=True))


def _bad_utf8_registration() -> bytes:
    """A RegisterCN whose first key is a BINUNICODE str that is not UTF-8 (ENC-1): a decoder's UnicodeDecodeError."""
    raw = b"_cn_start\xc3(_time"
    asm = Assembler(4)
    asm.global_(COMMANDS_MODULE, "RegisterCN").op(opc.EMPTY_TUPLE).op(opc.NEWOBJ).memoize()
    asm.op(opc.EMPTY_DICT).memoize().op(opc.MARK)
    asm.op(opc.BINUNICODE, struct.pack("<I", len(raw)) + raw).memoize().integer(1732560000)
    asm.text("_cn_live_time").integer(7200).op(opc.SETITEMS).op(opc.BUILD)
    return _must_be_invalid(asm.finish(frame=True))


def _garbage() -> bytes:
    return b"GET / HTTP/1.0\r\nHost: master\r\n\r\n"


#: First frames that are not a valid RegisterCN, by name: each is a payload
#: the kit sends in a well-formed frame.  Built lazily so that importing the
#: kit costs nothing.
INVALID_FIRST_FRAMES: Dict[str, Callable[[], bytes]] = {
    "garbage": _garbage,
    "ACK": lambda: dumps(ACK()),
    "MSG": lambda: dumps(MSG("register me")),
    "ShutdownCN": lambda: dumps(ShutdownCN()),
    "RegisterCN with str times": lambda: invalid_registration(
        {"_cn_start_time": "1732560000", "_cn_live_time": "7200"}
    ),
    "RegisterCN with float start time": lambda: invalid_registration(
        {"_cn_start_time": 1732560000.5, "_cn_live_time": 7200}
    ),
    "RegisterCN with bool live time": lambda: invalid_registration(
        {"_cn_start_time": 1732560000, "_cn_live_time": True}
    ),
    "RegisterCN with an extra key": lambda: invalid_registration(
        {"_cn_start_time": 1732560000, "_cn_live_time": 7200, "host": "evil"}
    ),
    "RegisterCN nested 1000 deep": lambda: _deep_registration(1000),
    "protocol 0 pickle": lambda: _must_be_invalid(b"(iskyllh.cluster.commands\nRegisterCN\np0\n(dp1\nb."),
    "empty payload": lambda: b"",
    "RegisterCN with a key not UTF-8": _bad_utf8_registration,
}


def registration(start_time: int, live_time: int) -> bytes:
    """The canonical RegisterCN payload."""
    return dumps(RegisterCN(start_time, live_time))


def frame(payload: bytes) -> bytes:
    """``payload`` behind its u16 little-endian length prefix.

    :func:`~skyllh_cluster.wire.framing.encode_frame` writes it; only the
    empty frame, which that refuses (FRM-3) but the kit must send, is written
    here.
    """
    return encode_frame(payload) if payload else b"\x00\x00"


def split(data: bytes, cuts: List[int]) -> List[bytes]:
    """``data`` cut at the given offsets."""
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


#: A small argument for each kind of pickle opcode argument that a value-pushing opcode outside the profile takes.
_FOREIGN_ARGS: Dict[str, bytes] = {
    "stringnl": b"'hi'\n",
    "stringnl_noescape": b"hi\n",
    "string1": b"\x02hi",
    "string4": b"\x02\x00\x00\x00hi",
    "unicodestringnl": b"hi\n",
    "decimalnl_short": b"5\n",
    "decimalnl_long": b"5L\n",
    "floatnl": b"1.5\n",
    "bytes8": b"\x02" + bytes(7) + b"hi",
    "unicodestring8": b"\x02" + bytes(7) + b"hi",
    "bytearray8": b"\x02" + bytes(7) + b"hi",
}


def foreign_value_ops() -> Dict[str, bytes]:
    """Opcodes outside the profile (ENC-2) that stand for one value, each as the opcodes of a MSG's value.

    Drawn from pickle's own opcode table: every opcode the profile lacks that
    pushes one object from an empty stack (with a small argument of its
    kind), and ``BINPERSID``, which turns a persistent id on the stack into
    an object.  A lenient decoder maps some of them to a value (protocol 0/1
    strings to str, a persistent id to None); inside an otherwise valid MSG
    that MSG must still be refused.
    """
    found: Dict[str, bytes] = {}
    for code in pickletools.opcodes:
        if ord(code.code) in opc.PROFILE_OPCODES or code.stack_before or len(code.stack_after) != 1:
            continue
        if code.arg is None:
            found[code.name] = code.code.encode("latin-1")
        elif code.arg.name in _FOREIGN_ARGS:
            found[code.name] = code.code.encode("latin-1") + _FOREIGN_ARGS[code.arg.name]
    found["BINPERSID"] = b"\x8c\x02idQ"  # SHORT_BINUNICODE 'id' (in the profile), then BINPERSID
    return found
