"""A strict, table-driven decoder of the encoding profile, written from spec/ alone.

The payload is read opcode by opcode.  :data:`OPCODES` maps each byte of the
profile (spec/encoding-profile.md §2) to its name, the protocol that
introduced it and the shape of its argument; a handler method named after the
opcode then acts on a stack of :class:`Item` records.  Each record carries,
beside the decoded Python value, what the limits need: its nesting depth and
its size as a tree (ENC-6), whether it can be a dict key (VAL-2), and
whether a memo reference to it has been taken (VAL-3).  Nothing is ever
imported, looked up or called (ENC-5); the decoder is iterative, so no input
can exhaust the call stack.

Refusals raise :class:`Refusal`, naming the clause, the offset within the
payload and the reason (ERR-2), without echoing payload bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

MAX_DEPTH = 200  #: ENC-6: the deepest MSG value
MAX_CONTAINER_DEPTH = MAX_DEPTH + 1  #: the value sits in the one-level state dict
MAX_NODES = 2**20  #: ENC-6: cost of one value, and of all dict keys of a payload
MAX_SAME_HASH = 64  #: ENC-6: distinct keys of one dict, other than str and bytes, with one hash


def scalar_cost(value: Any) -> int:
    """ENC-6: a str or bytes costs 1 + its length, an int 1 + bit_length // 8, anything else 1."""
    if type(value) in (str, bytes):
        return 1 + len(value)
    if type(value) is int:
        return 1 + value.bit_length() // 8
    return 1

COMMAND_MODULE = "skyllh.cluster.commands"
COMMAND_NAMES = ("ACK", "MSG", "ShutdownCN", "RegisterCN")
STATELESS = ("ACK", "ShutdownCN")
REGISTER_KEYS = ("_cn_start_time", "_cn_live_time")

#: ENC-3: every allowed global and what it stands for.
ALLOWED_GLOBALS: Dict[Tuple[str, str], str] = {
    **{(COMMAND_MODULE, name): name for name in COMMAND_NAMES},
    ("_codecs", "encode"): "latin1-bytes",
    ("__builtin__", "bytes"): "empty-bytes",
    ("builtins", "bytes"): "empty-bytes",
}


class Refusal(Exception):
    """A payload the profile does not allow (a remote error, §8)."""

    def __init__(self, clause: str, offset: int, reason: str) -> None:
        super().__init__(f"[{clause}] at offset {offset}: {reason}")
        self.clause = clause
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True)
class Command:
    """A decoded command: its class name and, for RegisterCN and MSG, its state dict."""

    name: str
    state: Optional[Dict[str, Any]] = None


# The kinds of stack items.
SCALAR, LIST, TUPLE, DICT, GLOBAL, COMMAND = "scalar", "list", "tuple", "dict", "global", "command"


class Item:
    """One object on the decoder's stack or in its memo."""

    __slots__ = ("kind", "value", "depth", "nodes", "hashable", "referenced", "built", "state")

    def __init__(self, kind: str, value: Any, depth: int = 0, nodes: int = 1, hashable: bool = True) -> None:
        self.kind = kind
        self.value = value
        self.depth = depth
        self.nodes = nodes
        self.hashable = hashable
        self.referenced = False  # VAL-3: a memo reference was taken
        self.built = False  # CMD-3/CMD-4: the command's BUILD was applied
        self.state: Optional[Dict[str, Any]] = None  # a command's state, once built


@dataclass(frozen=True)
class Opcode:
    """One row of the opcode table: name, first protocol, argument shape."""

    name: str
    protocol: int
    argument: str


#: ENC-2: the profile's opcodes (encoding-profile.md §2).  Argument shapes are
#: read by ``_Decoder._read_<shape>``.
OPCODES: Dict[int, Opcode] = {
    0x28: Opcode("MARK", 2, "none"),
    0x2E: Opcode("STOP", 2, "none"),
    0x4E: Opcode("NONE", 2, "none"),
    0x52: Opcode("REDUCE", 2, "none"),
    0x61: Opcode("APPEND", 2, "none"),
    0x62: Opcode("BUILD", 2, "none"),
    0x63: Opcode("GLOBAL", 2, "lines"),
    0x73: Opcode("SETITEM", 2, "none"),
    0x74: Opcode("TUPLE", 2, "none"),
    0x29: Opcode("EMPTY_TUPLE", 2, "none"),
    0x47: Opcode("BINFLOAT", 2, "float8"),
    0x4A: Opcode("BININT", 2, "int4"),
    0x4B: Opcode("BININT1", 2, "uint1"),
    0x4D: Opcode("BININT2", 2, "uint2"),
    0x58: Opcode("BINUNICODE", 2, "text4"),
    0x5D: Opcode("EMPTY_LIST", 2, "none"),
    0x65: Opcode("APPENDS", 2, "none"),
    0x68: Opcode("BINGET", 2, "uint1"),
    0x6A: Opcode("LONG_BINGET", 2, "uint4"),
    0x71: Opcode("BINPUT", 2, "uint1"),
    0x72: Opcode("LONG_BINPUT", 2, "uint4"),
    0x75: Opcode("SETITEMS", 2, "none"),
    0x7D: Opcode("EMPTY_DICT", 2, "none"),
    0x80: Opcode("PROTO", 2, "uint1"),
    0x81: Opcode("NEWOBJ", 2, "none"),
    0x85: Opcode("TUPLE1", 2, "none"),
    0x86: Opcode("TUPLE2", 2, "none"),
    0x87: Opcode("TUPLE3", 2, "none"),
    0x88: Opcode("NEWTRUE", 2, "none"),
    0x89: Opcode("NEWFALSE", 2, "none"),
    0x8A: Opcode("LONG1", 2, "long1"),
    0x8B: Opcode("LONG4", 2, "long4"),
    0x42: Opcode("BINBYTES", 3, "bytes4"),
    0x43: Opcode("SHORT_BINBYTES", 3, "bytes1"),
    0x8C: Opcode("SHORT_BINUNICODE", 4, "text1"),
    0x8D: Opcode("BINUNICODE8", 4, "text8"),
    0x8E: Opcode("BINBYTES8", 4, "bytes8"),
    0x93: Opcode("STACK_GLOBAL", 4, "none"),
    0x94: Opcode("MEMOIZE", 4, "none"),
    0x95: Opcode("FRAME", 4, "uint8"),
}

#: The opcodes that push one scalar, and how its value is made from the argument.
SCALARS: Dict[str, Callable[[Any], Any]] = {
    "NONE": lambda _: None,
    "NEWTRUE": lambda _: True,
    "NEWFALSE": lambda _: False,
    **dict.fromkeys(["BININT", "BININT1", "BININT2", "BINFLOAT"], lambda number: number),
    **dict.fromkeys(["LONG1", "LONG4"], lambda raw: int.from_bytes(raw, "little", signed=True)),
    **dict.fromkeys(["SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"], lambda text: text),
    **dict.fromkeys(["SHORT_BINBYTES", "BINBYTES", "BINBYTES8"], lambda raw: raw),
}

_FIXED = {"uint1": "<B", "uint2": "<H", "int4": "<i", "uint4": "<I", "uint8": "<Q", "float8": ">d"}
_COUNTED = {"long1": "<B", "long4": "<i", "text1": "<B", "text4": "<I", "text8": "<Q",
            "bytes1": "<B", "bytes4": "<I", "bytes8": "<Q"}


def decode(payload: bytes, expect: Optional[Tuple[str, str]] = None) -> Command:
    """Decode one payload to a :class:`Command` or raise :class:`Refusal`.

    ``expect``, a command name and a clause, refuses any other command under
    that clause as soon as its class is known (MST-3 for a master's first
    frame): a master then never spends work on the value of a MSG.
    """
    return _Decoder(bytes(payload), expect).run()


class _Decoder:
    """The state of decoding one payload."""

    def __init__(self, data: bytes, expect: Optional[Tuple[str, str]] = None) -> None:
        self.data = data
        self.expect = expect
        self.pos = 0
        self.protocol = 0
        self.frame_end: Optional[int] = None
        self.stack: List[Item] = []
        self.marks: List[int] = []
        self.memo: Dict[int, Item] = {}
        self.key_nodes = 0
        self.hashes: Dict[int, Dict[int, int]] = {}  # per dict Item (alive all along): keys per hash
        self.has_command = False
        self.at = 0  # offset of the opcode being handled
        self.result: Optional[Command] = None

    # -- the loop ---------------------------------------------------------
    def run(self) -> Command:
        """Handle opcodes until STOP (ENC-1)."""
        if not self.data:
            raise Refusal("ENC-1", 0, "empty payload")
        while self.result is None:
            self._step()
        return self.result

    def _step(self) -> None:
        """Read one opcode and its argument, then act on it."""
        self.at = self.pos
        if self.pos >= len(self.data):
            raise Refusal("ENC-1", self.pos, "the payload ends before STOP")
        byte = self.data[self.pos]
        if self.pos == 0 and byte != 0x80:
            raise Refusal("ENC-1", 0, "the payload does not start with PROTO")
        opcode = OPCODES.get(byte)
        if opcode is None:
            raise Refusal("ENC-2", self.pos, f"opcode byte 0x{byte:02x} is not in the profile")
        if self.pos > 0 and opcode.protocol > self.protocol:
            needs = f"{opcode.name} needs protocol {opcode.protocol}"
            raise Refusal("ENC-2", self.pos, f"{needs}, the payload is protocol {self.protocol}")
        self._take(1)
        argument = getattr(self, "_read_" + opcode.argument)(opcode.argument)
        if self.frame_end == self.pos:
            self.frame_end = None
        scalar = SCALARS.get(opcode.name)
        if scalar is not None:
            value = scalar(argument)
            self._push(Item(SCALAR, value, nodes=scalar_cost(value)))
        else:
            getattr(self, "_op_" + opcode.name)(argument)

    # -- arguments ----------------------------------------------------------
    def _take(self, count: int) -> bytes:
        """The next ``count`` bytes; ENC-1 if they run past the frame or the payload."""
        limit = self.frame_end if self.frame_end is not None else len(self.data)
        if count > limit - self.pos:
            where = "its FRAME" if self.frame_end is not None else "the payload"
            raise Refusal("ENC-1", self.at, f"an argument runs past the end of {where}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def _read_none(self, shape: str) -> None:
        return None

    def _read_fixed(self, shape: str) -> Any:
        layout = _FIXED[shape]
        return struct.unpack(layout, self._take(struct.calcsize(layout)))[0]

    _read_uint1 = _read_uint2 = _read_int4 = _read_uint4 = _read_uint8 = _read_float8 = _read_fixed

    def _read_counted(self, shape: str) -> bytes:
        """A length then that many bytes, the length checked before any allocation (ENC-6, ENC-1)."""
        layout = _COUNTED[shape]
        length = struct.unpack(layout, self._take(struct.calcsize(layout)))[0]
        if length < 0:
            raise Refusal("ENC-1", self.at, "negative length")
        return self._take(length)

    def _read_text(self, shape: str) -> str:
        raw = self._read_counted(shape)
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise Refusal("ENC-1", self.at, "a str argument is not valid UTF-8") from None

    _read_long1 = _read_long4 = _read_bytes1 = _read_bytes4 = _read_bytes8 = _read_counted
    _read_text1 = _read_text4 = _read_text8 = _read_text

    def _read_line(self) -> str:
        limit = self.frame_end if self.frame_end is not None else len(self.data)
        end = self.data.find(b"\n", self.pos, limit)
        if end < 0:
            raise Refusal("ENC-1", self.at, "a GLOBAL line has no newline")
        raw = self._take(end - self.pos)
        self._take(1)
        if not raw.isascii():
            raise Refusal("ENC-3", self.at, "a GLOBAL line is not ASCII")
        return raw.decode("ascii")

    def _read_lines(self, shape: str) -> Tuple[str, str]:
        return self._read_line(), self._read_line()

    # -- stack helpers --------------------------------------------------------
    def _floor(self) -> int:
        return self.marks[-1] if self.marks else 0

    def _pop(self) -> Item:
        """Pop an operand that lies above the innermost MARK (ENC-1)."""
        if len(self.stack) <= self._floor():
            raise Refusal("ENC-1", self.at, "an opcode is missing an operand")
        return self.stack.pop()

    def _top(self) -> Item:
        if len(self.stack) <= self._floor():
            raise Refusal("ENC-1", self.at, "an opcode is missing an operand")
        return self.stack[-1]

    def _pop_to_mark(self) -> List[Item]:
        if not self.marks:
            raise Refusal("ENC-1", self.at, "no open MARK")
        floor = self.marks.pop()
        items = self.stack[floor:]
        del self.stack[floor:]
        return items

    def _push(self, item: Item) -> None:
        self.stack.append(item)

    def _as_value(self, item: Item) -> Item:
        """Refuse what may not sit inside a value: a global (ENC-3), a command (CMD-1)."""
        if item.kind == GLOBAL:
            raise Refusal("ENC-3", self.at, "a global is used as a value")
        if item.kind == COMMAND:
            raise Refusal("CMD-1", self.at, "a command is used as a value")
        return item

    def _check_limits(self, depth: int, nodes: int) -> None:
        """ENC-6: container depth and tree size, checked before the container grows."""
        if depth > MAX_CONTAINER_DEPTH:
            raise Refusal("ENC-6", self.at, f"containers nested deeper than {MAX_CONTAINER_DEPTH}")
        if nodes > MAX_NODES:
            raise Refusal("ENC-6", self.at, f"a value of more than {MAX_NODES} nodes")

    # -- structure -------------------------------------------------------------
    def _op_PROTO(self, number: int) -> None:
        if self.at != 0:
            raise Refusal("ENC-1", self.at, "PROTO after the first opcode")
        if not 2 <= number <= 5:
            raise Refusal("ENC-1", self.at, f"protocol {number} is not 2 to 5")
        self.protocol = number

    def _op_FRAME(self, length: int) -> None:
        if self.frame_end is not None:
            raise Refusal("ENC-1", self.at, "a FRAME inside a FRAME")
        if length > len(self.data) - self.pos:
            raise Refusal("ENC-1", self.at, "a FRAME runs past the end of the payload")
        self.frame_end = self.pos + length if length else None

    def _op_STOP(self, _: None) -> None:
        if self.pos != len(self.data):
            raise Refusal("ENC-1", self.at, f"{len(self.data) - self.pos} bytes after STOP")
        if self.marks or len(self.stack) != 1:
            raise Refusal("ENC-1", self.at, "the stack at STOP is not exactly one object")
        self.result = self._finish(self.stack[0])

    def _finish(self, item: Item) -> Command:
        """CMD-1 to CMD-4: the one object left must be a complete command."""
        if item.kind != COMMAND:
            raise Refusal("CMD-1", self.at, "the payload is not a command")
        if item.value in STATELESS:
            return Command(item.value)
        if not item.built:
            clause = "CMD-3" if item.value == "RegisterCN" else "CMD-4"
            raise Refusal(clause, self.at, f"{item.value} without BUILD")
        return Command(item.value, item.state)

    def _op_MARK(self, _: None) -> None:
        self.marks.append(len(self.stack))

    # -- containers ------------------------------------------------------------------
    def _op_EMPTY_LIST(self, _: None) -> None:
        self._push(Item(LIST, [], depth=1, hashable=False))

    def _op_EMPTY_DICT(self, _: None) -> None:
        self._push(Item(DICT, {}, depth=1, hashable=False))

    def _op_EMPTY_TUPLE(self, _: None) -> None:
        self._push(Item(TUPLE, (), depth=1))

    def _tuple(self, items: List[Item]) -> None:
        values = [self._as_value(item) for item in items]
        depth = 1 + max((v.depth for v in values), default=0)
        nodes = 1 + sum(v.nodes for v in values)
        self._check_limits(depth, nodes)
        hashable = all(v.hashable for v in values)
        self._push(Item(TUPLE, tuple(v.value for v in values), depth, nodes, hashable))

    def _op_TUPLE(self, _: None) -> None:
        self._tuple(self._pop_to_mark())

    def _op_TUPLE1(self, _: None) -> None:
        self._tuple([self._pop()])

    def _op_TUPLE2(self, _: None) -> None:
        second, first = self._pop(), self._pop()
        self._tuple([first, second])

    def _op_TUPLE3(self, _: None) -> None:
        third, second, first = self._pop(), self._pop(), self._pop()
        self._tuple([first, second, third])

    def _target(self, kind: str, changes: bool = True) -> Item:
        """The list or dict an APPEND or SETITEM adds to (ENC-1), not yet referenced if it changes (VAL-3)."""
        target = self._top()
        if target.kind != kind:
            raise Refusal("ENC-1", self.at, f"adding items to a {target.kind}, not a {kind}")
        if target.referenced and changes:
            raise Refusal("VAL-3", self.at, f"a {kind} changed after a memo reference to it")
        return target

    def _append(self, target: Item, items: List[Item]) -> None:
        for item in map(self._as_value, items):
            depth, nodes = max(target.depth, 1 + item.depth), target.nodes + item.nodes
            self._check_limits(depth, nodes)
            target.depth, target.nodes = depth, nodes
            target.value.append(item.value)

    def _op_APPEND(self, _: None) -> None:
        item = self._pop()
        self._append(self._target(LIST), [item])

    def _op_APPENDS(self, _: None) -> None:
        items = self._pop_to_mark()
        self._append(self._target(LIST, changes=bool(items)), items)

    def _set_items(self, target: Item, items: List[Item]) -> None:
        for index in range(0, len(items), 2):
            key, value = self._as_value(items[index]), self._as_value(items[index + 1])
            if not key.hashable:
                raise Refusal("VAL-2", self.at, "a dict key that is or holds a list or dict")
            self.key_nodes += key.nodes
            self._check_limits(0, self.key_nodes)  # before the key is hashed
            depth = max(target.depth, 1 + key.depth, 1 + value.depth)
            nodes = target.nodes + key.nodes + value.nodes
            self._check_limits(depth, nodes)
            target.depth, target.nodes = depth, nodes
            size = len(target.value)
            target.value[key.value] = value.value  # VAL-2: a repeated key keeps its place
            if len(target.value) > size and type(key.value) not in (str, bytes):
                self._count_hash(target, key.value)

    def _count_hash(self, target: Item, key: Any) -> None:
        """ENC-6: at most MAX_SAME_HASH distinct keys of one dict (not str or bytes) share a hash."""
        counts = self.hashes.setdefault(id(target), {})
        counts[hash(key)] = counts.get(hash(key), 0) + 1
        if counts[hash(key)] > MAX_SAME_HASH:
            raise Refusal("ENC-6", self.at, f"more than {MAX_SAME_HASH} keys of one dict with one hash")

    def _op_SETITEM(self, _: None) -> None:
        value, key = self._pop(), self._pop()
        self._set_items(self._target(DICT), [key, value])

    def _op_SETITEMS(self, _: None) -> None:
        items = self._pop_to_mark()
        if len(items) % 2:
            raise Refusal("ENC-1", self.at, "SETITEMS with an odd number of items")
        self._set_items(self._target(DICT, changes=bool(items)), items)

    # -- memo ---------------------------------------------------------------------------
    def _store(self, index: int) -> None:
        if index in self.memo:
            raise Refusal("ENC-4", self.at, f"memo index {index} stored twice")
        self.memo[index] = self._top()

    def _op_MEMOIZE(self, _: None) -> None:
        self._store(len(self.memo))

    def _op_BINPUT(self, index: int) -> None:
        self._store(index)

    _op_LONG_BINPUT = _op_BINPUT

    def _op_BINGET(self, index: int) -> None:
        item = self.memo.get(index)
        if item is None:
            raise Refusal("ENC-4", self.at, f"memo index {index} was never stored")
        item.referenced = True
        self._push(item)

    _op_LONG_BINGET = _op_BINGET

    # -- globals and objects ---------------------------------------------------------
    def _global(self, module: str, name: str) -> None:
        if (module, name) not in ALLOWED_GLOBALS:
            raise Refusal("ENC-3", self.at, "a global outside the profile")
        self._push(Item(GLOBAL, ALLOWED_GLOBALS[(module, name)], hashable=False))

    def _op_GLOBAL(self, names: Tuple[str, str]) -> None:
        self._global(*names)

    def _op_STACK_GLOBAL(self, _: None) -> None:
        name, module = self._pop(), self._pop()
        if not all(i.kind == SCALAR and type(i.value) is str for i in (module, name)):
            raise Refusal("ENC-3", self.at, "STACK_GLOBAL of something other than two str")
        self._global(module.value, name.value)

    def _op_NEWOBJ(self, _: None) -> None:
        arguments, cls = self._pop(), self._pop()
        if cls.kind != GLOBAL or cls.value not in COMMAND_NAMES:
            raise Refusal("ENC-3", self.at, "NEWOBJ of something other than a command class")
        if arguments.kind != TUPLE or arguments.value != ():
            raise Refusal("CMD-1", self.at, "NEWOBJ of a command with arguments other than ()")
        if self.has_command:
            raise Refusal("CMD-1", self.at, "a second command in one payload")
        if self.expect and cls.value != self.expect[0]:
            raise Refusal(self.expect[1], self.at, f"{cls.value}, not {self.expect[0]}")
        self.has_command = True
        self._push(Item(COMMAND, cls.value, hashable=False))

    def _op_REDUCE(self, _: None) -> None:
        arguments, function = self._pop(), self._pop()
        meaning = function.value if function.kind == GLOBAL else None
        if meaning == "latin1-bytes" and _is_latin1_call(arguments):
            value = arguments.value[0].encode("latin-1")
            self._push(Item(SCALAR, value, nodes=scalar_cost(value)))
        elif meaning == "empty-bytes" and arguments.kind == TUPLE and arguments.value == ():
            self._push(Item(SCALAR, b""))
        else:
            raise Refusal("ENC-3", self.at, "REDUCE other than protocol 2's bytes")

    def _op_BUILD(self, _: None) -> None:
        state = self._pop()
        command = self._top()
        if command.kind != COMMAND:
            raise Refusal("ENC-2", self.at, "BUILD on something other than the command")
        if command.value in STATELESS:
            raise Refusal("CMD-2", self.at, f"{command.value} with a state")
        check = _check_register_state if command.value == "RegisterCN" else _check_msg_state
        clause = "CMD-3" if command.value == "RegisterCN" else "CMD-4"
        if command.built:
            raise Refusal(clause, self.at, f"{command.value} built twice")
        if state.kind != DICT:
            raise Refusal(clause, self.at, f"the state of {command.value} is not a dict")
        problem = check(state.value)
        if problem:
            raise Refusal(clause, self.at, problem)
        command.built = True
        command.state = dict(state.value)


def _is_latin1_call(arguments: Item) -> bool:
    """ENC-3: ``_codecs.encode`` takes exactly ``(s, 'latin1')`` with every code point of s below 256."""
    if arguments.kind != TUPLE or len(arguments.value) != 2:
        return False
    text, encoding = arguments.value
    return type(text) is str and type(encoding) is str and encoding == "latin1" and all(ord(c) < 256 for c in text)


def _check_register_state(state: Dict[Any, Any]) -> str:
    """CMD-3: exactly the two str keys, each an int (not bool)."""
    keys = list(state)
    if len(keys) != 2 or any(type(k) is not str for k in keys) or set(keys) != set(REGISTER_KEYS):
        return "RegisterCN state must have exactly _cn_start_time and _cn_live_time"
    if any(type(state[k]) is not int for k in keys):
        return "RegisterCN times must be int"
    return ""


def _check_msg_state(state: Dict[Any, Any]) -> str:
    """CMD-4: exactly the str key ``msg``."""
    keys = list(state)
    if len(keys) != 1 or type(keys[0]) is not str or keys[0] != "msg":
        return "MSG state must have exactly the key msg"
    return ""

