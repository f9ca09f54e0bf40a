"""The meaning of the pickle profile: one handler per opcode, one machine.

Theory of operation
-------------------
A payload is a program for a small stack machine, cut down from pickle's.
Reading it has two halves, kept apart:

* *Syntax* turns bytes into opcodes with their decoded arguments.  It is done
  twice, independently: by the hand-written tokenizer of
  :mod:`~skyllh_cluster.wire.decoder` (the fast path of ``loads``) and by the
  construct grammar of :mod:`~skyllh_cluster.wire.grammar` (the normative
  parser behind ``loads_checked`` and the kit).
* *Meaning* is given here, once: :data:`HANDLERS` maps every opcode of the
  profile (:data:`~skyllh_cluster.wire.opcodes.PROFILE_OPCODES`) to the
  function that runs it on a :class:`Machine`.  Both tokenizers call these
  handlers and :func:`finish`, so a clause of the profile changes in one place.

A handler that finds a violation raises :class:`Refusal` (a clause and a
reason); the tokenizer that called it adds the opcode's offset and raises
:class:`~skyllh_cluster.errors.ProtocolError`.  Reasons name types, counts and
sizes, never a decoded value: an error costs little whatever the payload holds.

The machine knows nothing above the wire: a command is a
:class:`CommandToken` (its class name and state) and the allowed globals are
:class:`NamedGlobal` names, never objects (ENC-5).  The result of a payload is
``(class_name, state)``; :func:`skyllh_cluster.commands.make_command` makes the command.

Limits (ENC-6), counted as ``spec/encoding-profile.md`` section 5 defines:

* every container's *height* (nesting levels) is checked when the container
  is made or grows, before anything hashes it, so no later step recurses deep;
* every container's *cost* (:func:`cost` of its items, a memo reference
  counting the whole object again) stays within :data:`MAX_VALUE_COST`;
* the keys put into dicts in one payload cost at most :data:`MAX_VALUE_COST`
  in total (hashing a tuple or an int key walks it again at every insertion);
* at most :data:`MAX_SAME_HASH_KEYS` distinct keys of one dict, other than
  str and bytes, have one hash (a payload can choose int, float and tuple
  hashes, and keys with one hash make every insertion probe them all);
* nothing but a command's own parts may be filled before the command exists,
  and a RegisterCN payload puts at most two str -> int entries into dicts:
  a hostile state is refused before it is hashed (CMD-1, CMD-3).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

from ..errors import excerpt
from . import opcodes as op
from .values import MAX_DEPTH, MAX_SAME_HASH_KEYS, MAX_VALUE_COST

__all__ = ["Machine", "Refusal", "NamedGlobal", "CommandToken", "HANDLERS", "finish", "cost", "Decoded"]

#: What a payload decodes to: the command's class name and its state.
Decoded = Tuple[str, Dict[str, Any]]

# A container may be one level deeper than a MSG value: the value sits in the state dict.
_MAX_HEIGHT = MAX_DEPTH + 1
_REGISTER_KEYS = ("_cn_start_time", "_cn_live_time")
_STATE_CLAUSE = {"RegisterCN": "CMD-3", "MSG": "CMD-4", "ACK": "CMD-2", "ShutdownCN": "CMD-2"}


class Refusal(Exception):
    """A violation found by a handler; the tokenizer adds the offset."""

    def __init__(self, clause: str, reason: str) -> None:
        super().__init__(clause, reason)
        self.clause = clause
        self.reason = reason


class NamedGlobal:
    """An allowed global as the machine sees it: its name and role, never the object."""

    __slots__ = ("module", "name", "role")

    def __init__(self, module: str, name: str, role: op.GlobalRole) -> None:
        self.module, self.name, self.role = module, name, role

    def __repr__(self) -> str:
        return f"NamedGlobal({self.module}.{self.name})"


class CommandToken:
    """The command a payload makes: its class name, then the state BUILD gives it."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str) -> None:
        self.class_name = class_name
        self.state: Optional[Dict[str, Any]] = None


class Machine:
    """The state of one payload's run: a stack, the stacks below open MARKs, a memo.

    ``figures`` holds, for every container built, its height and its cost
    (ENC-6), by id.  Every container is entered when it is made, so an id
    reused after an object died always holds the current object's figures.
    """

    __slots__ = ("stack", "metastack", "memo", "figures", "referenced", "key_budget", "command", "entries", "hashes")

    def __init__(
        self, stack: Optional[List[Any]] = None, memo: Optional[Dict[int, Any]] = None, command: Optional[CommandToken] = None
    ) -> None:
        self.stack: List[Any] = stack if stack is not None else []
        self.metastack: List[List[Any]] = []
        self.memo: Dict[int, Any] = memo if memo is not None else {}
        self.figures: Dict[int, Tuple[int, int]] = {id(()): (1, 1)}
        self.referenced: set = set()  # ids of the lists and dicts fetched from the memo
        self.key_budget = MAX_VALUE_COST
        self.command = command
        self.entries = 0  # dict entries put into a RegisterCN payload
        self.hashes: Dict[int, Tuple[dict, Dict[int, int]]] = {}  # id -> (dict, {hash: keys}), keys other than str, bytes


def fail(clause: str, reason: str) -> NoReturn:
    raise Refusal(clause, reason)


def describe(obj: Any) -> str:
    """Names what ``obj`` is (its type, or which global or command), never its value."""
    if type(obj) is NamedGlobal:
        return f"the global {obj.module}.{obj.name}"
    if type(obj) is CommandToken:
        return f"a {obj.class_name} command"
    return f"a {type(obj).__name__}"


def cost(value: Any, figures: Dict[int, Tuple[int, int]]) -> int:
    """The cost of one value (ENC-6): 1 per node, plus str and bytes length, plus int bytes."""
    kind = type(value)
    if kind is str or kind is bytes:
        return 1 + len(value)
    if kind is int:
        return 1 + (value.bit_length() >> 3)
    if kind is list or kind is dict or kind is tuple:
        return figures[id(value)][1]
    return 1


def measure(m: Machine, items: List[Any], where: str) -> Tuple[int, int, int]:
    """The greatest height, the total cost and the cost of every other item (from the first) of ``items``.

    Every item must be a value: a global is ENC-3, the command CMD-1.  For
    dict items (key, value, key, ...) the third figure is the keys' cost.
    """
    figures = m.figures
    height = total = keys = 0
    is_key = True
    for item in items:
        kind = type(item)
        if kind is str or kind is bytes:
            item_cost = 1 + len(item)
        elif kind is int:
            item_cost = 1 + (item.bit_length() >> 3)
        elif kind is list or kind is dict or kind is tuple:
            item_height, item_cost = figures[id(item)]
            if item_height > height:
                height = item_height
        elif kind is NamedGlobal:
            fail("ENC-3", f"{describe(item)} may not be used as {where}")
        elif kind is CommandToken:
            fail("CMD-1", f"a command may only be the outermost object, not {where}")
        else:
            item_cost = 1
        total += item_cost
        if is_key:
            keys += item_cost
        is_key = not is_key
    return height, total, keys


def check_figures(height: int, total: int) -> None:
    if height > _MAX_HEIGHT:
        fail("ENC-6", f"the value is nested deeper than {MAX_DEPTH} containers")
    if total > MAX_VALUE_COST:
        fail("ENC-6", f"an object costs more than {MAX_VALUE_COST} (a shared part counts at every use)")


def take(m: Machine, count: int, what: str) -> List[Any]:
    """The top ``count`` objects above the innermost MARK, bottom first."""
    stack = m.stack
    if len(stack) < count:
        fail("ENC-1", f"{what} finds {len(stack)} of the {count} objects it needs on the stack")
    items = stack[-count:]
    del stack[-count:]
    return items


def take_mark(m: Machine, what: str) -> List[Any]:
    """Everything above the innermost MARK, which closes."""
    if not m.metastack:
        fail("ENC-1", f"{what} without a MARK")
    items = m.stack
    m.stack = m.metastack.pop()
    return items


# --- handlers: one per opcode ------------------------------------------------


def mark(m: Machine, arg: None) -> None:
    m.metastack.append(m.stack)
    m.stack = []


def memo_put(m: Machine, index: int) -> None:
    if not m.stack:
        fail("ENC-1", "nothing on the stack to store in the memo")
    if index in m.memo:
        fail("ENC-4", f"memo index {index} is already in use")
    m.memo[index] = m.stack[-1]


def memoize(m: Machine, arg: None) -> None:
    memo = m.memo
    index = len(memo)
    if not m.stack or index in memo:
        memo_put(m, index)  # to refuse it
    memo[index] = m.stack[-1]


def memo_get(m: Machine, index: int) -> None:
    try:
        item = m.memo[index]
    except KeyError:
        fail("ENC-4", f"memo index {index} was never stored")
    kind = type(item)
    if kind is list or kind is dict:
        m.referenced.add(id(item))
    m.stack.append(item)


def push_argument(m: Machine, arg: Any) -> None:
    m.stack.append(arg)


def push_true(m: Machine, arg: None) -> None:
    m.stack.append(True)


def push_false(m: Machine, arg: None) -> None:
    m.stack.append(False)


def empty_list(m: Machine, arg: None) -> None:
    value: list = []
    m.figures[id(value)] = (1, 1)
    m.stack.append(value)


def empty_dict(m: Machine, arg: None) -> None:
    value: dict = {}
    m.figures[id(value)] = (1, 1)
    m.stack.append(value)


def empty_tuple(m: Machine, arg: None) -> None:
    m.stack.append(())


def fill_target(m: Machine, kind: type, what: str) -> Any:
    """The list or dict below the items of APPEND(S)/SETITEM(S), checked."""
    if not m.stack:
        fail("ENC-1", f"{what} without a container below its items")
    target = m.stack[-1]
    if type(target) is not kind:
        fail("ENC-1", f"{what} needs a {kind.__name__}, not {describe(target)}")
    if id(target) in m.referenced:
        fail("VAL-3", "a container is changed after a memo reference to it (it could contain itself)")
    return target


def grow(m: Machine, target: Any, items: List[Any], where: str) -> int:
    """Count ``items`` into the height and cost of ``target`` (ENC-6); return the cost of every other item."""
    height, total = m.figures[id(target)]
    item_height, item_cost, key_cost = measure(m, items, where)
    if item_height >= height:
        height = item_height + 1
    total += item_cost
    if height > _MAX_HEIGHT or total > MAX_VALUE_COST:
        check_figures(height, total)
    m.figures[id(target)] = (height, total)
    return key_cost


def fill_list(m: Machine, items: List[Any], what: str) -> None:
    target = fill_target(m, list, what)
    grow(m, target, items, "an item of a list")
    target.extend(items)


def append(m: Machine, arg: None) -> None:
    if not m.stack:
        fail("ENC-1", "APPEND finds no item on the stack")
    fill_list(m, [m.stack.pop()], "APPEND")


def appends(m: Machine, arg: None) -> None:
    fill_list(m, take_mark(m, "APPENDS"), "APPENDS")


def check_registration(m: Machine, keys: List[Any], values: List[Any]) -> None:
    """A RegisterCN payload puts exactly its two str -> int entries into dicts (CMD-3)."""
    m.entries += len(keys)
    if m.entries > 2:
        fail("CMD-3", f"a RegisterCN payload puts {m.entries} entries into dicts; its state has exactly 2")
    for key, value in zip(keys, values):
        if type(key) is not str or key not in _REGISTER_KEYS:
            fail("CMD-3", f"RegisterCN state keys are _cn_start_time and _cn_live_time, not {describe(key)}")
        if type(value) is not int:
            fail("CMD-3", f"RegisterCN {key.lstrip('_')} must be an int, not {describe(value)}")


def fill_dict(m: Machine, items: List[Any], what: str) -> None:
    """SETITEM(S): every rule on the entries is checked before a key is hashed."""
    stack = m.stack
    target = stack[-1] if stack else None
    if type(target) is not dict or id(target) in m.referenced:
        fill_target(m, dict, what)  # to refuse it
    key_cost = grow(m, target, items, "a dict key or value")
    if len(items) & 1:
        fail("ENC-1", f"{what} with an odd number of items ({len(items)})")
    m.key_budget -= key_cost
    if m.key_budget < 0:
        fail("ENC-6", f"the dict keys of the payload cost more than {MAX_VALUE_COST}")
    if m.command is None:
        fail("CMD-1", "a dict is filled before the command exists: it cannot be part of the command")
    keys, values = items[0::2], items[1::2]
    if m.command.class_name == "RegisterCN":
        check_registration(m, keys, values)
    try:
        for key, value in zip(keys, values):
            if type(key) is str:
                target[key] = value
            else:
                put_counted(m, target, key, value)
    except TypeError:
        fail("VAL-2", f"a dict key must be hashable, not {describe(key)} holding a list or dict")


def put_counted(m: Machine, target: dict, key: Any, value: Any) -> None:
    """Put one entry whose key's hash a payload can choose (ENC-6): at most MAX_SAME_HASH_KEYS keys per hash.

    Every key but a str or bytes: their hashes are keyed per process, while
    ints, floats and tuples of them hash alike everywhere (an int ``k *
    (2**61 - 1)`` hashes to 0).  Keys with one hash make a dict probe all of
    them at every insertion; counted after the insertion, so that a key
    replacing an equal one counts once, each insertion compares with at most
    MAX_SAME_HASH_KEYS others, and decoding stays linear.
    """
    size = len(target)
    target[key] = value
    if len(target) == size or type(key) is bytes:
        return
    counts = m.hashes.get(id(target))
    if counts is None or counts[0] is not target:  # a dict seen first, or a new one at a dead one's id
        counts = m.hashes[id(target)] = (target, {})
    digest = hash(key)
    count = counts[1].get(digest, 0) + 1
    if count > MAX_SAME_HASH_KEYS:
        fail("ENC-6", f"more than {MAX_SAME_HASH_KEYS} keys of one dict have the same hash")
    counts[1][digest] = count


def setitem(m: Machine, arg: None) -> None:
    stack = m.stack
    if len(stack) < 2:
        fail("ENC-1", f"SETITEM finds {len(stack)} of the 2 items it needs on the stack")
    items = stack[-2:]
    del stack[-2:]
    fill_dict(m, items, "SETITEM")


def setitems(m: Machine, arg: None) -> None:
    if not m.metastack:
        fail("ENC-1", "SETITEMS without a MARK")
    items = m.stack
    m.stack = m.metastack.pop()
    fill_dict(m, items, "SETITEMS")


def make_tuple(m: Machine, items: List[Any]) -> None:
    height, total, _ = measure(m, items, "an item of a tuple")
    if height >= _MAX_HEIGHT or total >= MAX_VALUE_COST:
        check_figures(height + 1, total + 1)
    value = tuple(items)
    m.figures[id(value)] = (height + 1, total + 1)
    m.stack.append(value)


def take_tuple(m: Machine, count: int, what: str) -> None:
    stack = m.stack
    if len(stack) < count:
        fail("ENC-1", f"{what} finds {len(stack)} of the {count} objects it needs on the stack")
    items = stack[-count:]
    del stack[-count:]
    make_tuple(m, items)


def tuple1(m: Machine, arg: None) -> None:
    take_tuple(m, 1, "TUPLE1")


def tuple2(m: Machine, arg: None) -> None:
    take_tuple(m, 2, "TUPLE2")


def tuple3(m: Machine, arg: None) -> None:
    take_tuple(m, 3, "TUPLE3")


def tuple_mark(m: Machine, arg: None) -> None:
    make_tuple(m, take_mark(m, "TUPLE"))


def name_global(m: Machine, module: str, name: str) -> None:
    role = op.ALLOWED_GLOBALS.get((module, name))
    if role is None:
        fail("ENC-3", f"the global {excerpt(module)}.{excerpt(name)} is not allowed")
    m.stack.append(NamedGlobal(module, name, role))


def global_(m: Machine, arg: Tuple[bytes, bytes]) -> None:
    name_global(m, arg[0].decode("utf-8", "replace"), arg[1].decode("utf-8", "replace"))


def stack_global(m: Machine, arg: None) -> None:
    module, name = take(m, 2, "STACK_GLOBAL")
    if type(module) is not str or type(name) is not str:
        fail("ENC-3", f"STACK_GLOBAL needs two str, the module and the name, not {describe(module)}, {describe(name)}")
    name_global(m, module, name)


def newobj(m: Machine, arg: None) -> None:
    cls, args = take(m, 2, "NEWOBJ")
    if type(cls) is not NamedGlobal or cls.role is not op.GlobalRole.COMMAND_CLASS:
        fail("ENC-3", f"NEWOBJ of {describe(cls)}: only the command classes may be instantiated")
    if type(args) is not tuple or len(args):
        fail("CMD-1", f"a command is made with NEWOBJ and (), not {describe(args)}")
    if m.command is not None:
        fail("CMD-1", "a payload holds exactly one command")
    m.command = CommandToken(cls.name)
    m.stack.append(m.command)


def reduce(m: Machine, arg: None) -> None:
    """Protocol 2's spellings of bytes, read as data: nothing is called (ENC-5)."""
    func, args = take(m, 2, "REDUCE")
    if type(func) is not NamedGlobal or func.role is op.GlobalRole.COMMAND_CLASS:
        fail("ENC-3", f"REDUCE of {describe(func)}: only the bytes spellings of protocol 2 are allowed")
    if func.role is op.GlobalRole.EMPTY_BYTES:
        if type(args) is not tuple or len(args):
            fail("ENC-3", f"REDUCE of {func.module}.bytes needs (), not {describe(args)}")
        m.stack.append(b"")
        return
    if type(args) is not tuple or len(args) != 2 or type(args[0]) is not str or type(args[1]) is not str:
        fail("ENC-3", "REDUCE of _codecs.encode needs (str, 'latin1')")
    if args[1] != "latin1":
        fail("ENC-3", "REDUCE of _codecs.encode needs (str, 'latin1')")
    try:
        m.stack.append(args[0].encode("latin-1"))
    except UnicodeEncodeError:
        fail("ENC-3", "REDUCE of _codecs.encode with a code point above 255")


def check_state(class_name: str, state: Any) -> None:
    """CMD-2 to CMD-4: the state BUILD gives a command of class ``class_name``."""
    if class_name == "MSG" and type(state) is dict and len(state) == 1 and next(iter(state)) == "msg":
        return  # only a str equals "msg"
    clause = _STATE_CLAUSE[class_name]
    if clause == "CMD-2":
        fail("CMD-2", f"{class_name} carries no state, but BUILD gives it one")
    if type(state) is not dict:
        fail(clause, f"the state of {class_name} must be a dict, not {describe(state)}")
    keys = list(state)
    if not all(type(key) is str for key in keys):
        fail(clause, "the state's keys are attribute names (str)")
    if class_name == "RegisterCN":
        if len(keys) != 2 or set(keys) != set(_REGISTER_KEYS):
            fail("CMD-3", f"RegisterCN state must be _cn_start_time and _cn_live_time, not {len(keys)} other keys")
        for key in keys:
            if type(state[key]) is not int:
                fail("CMD-3", f"RegisterCN {key.lstrip('_')} must be an int, not {describe(state[key])}")
    elif keys != ["msg"]:
        fail("CMD-4", f"MSG state must be exactly the key msg, not {len(keys)} keys")


def build(m: Machine, arg: None) -> None:
    stack = m.stack
    if len(stack) < 2:
        fail("ENC-1", f"BUILD finds {len(stack)} of the 2 objects it needs on the stack")
    state = stack.pop()
    target = stack[-1]
    if type(target) is not CommandToken:
        fail("ENC-2", f"BUILD is allowed only on the command, not on {describe(target)}")
    if target.state is not None:
        fail(_STATE_CLAUSE[target.class_name], "the command's state is set twice")
    if not (type(state) is dict and len(state) == 1 and target.class_name == "MSG" and next(iter(state)) == "msg"):
        check_state(target.class_name, state)  # anything but the one valid MSG state
    target.state = state


def proto(m: Machine, arg: int) -> None:
    fail("ENC-1", "PROTO is allowed only as the first opcode")


def frame(m: Machine, arg: int) -> None:
    """FRAME has no meaning beyond syntax: the tokenizers check where frames end."""


def stop(m: Machine, arg: None) -> None:
    fail("ENC-1", "STOP is handled by finish()")  # pragma: no cover - the tokenizers call finish


def finish(m: Machine) -> Decoded:
    """STOP: the payload's result, ``(class_name, state)``."""
    if m.metastack or len(m.stack) != 1:
        fail("ENC-1", f"STOP with {len(m.stack)} objects and {len(m.metastack)} marks on the stack")
    result = m.stack[0]
    if type(result) is not CommandToken:
        fail("CMD-1", f"the payload is {describe(result)}, not a command")
    if result.state is None:
        if result.class_name in ("RegisterCN", "MSG"):
            fail(_STATE_CLAUSE[result.class_name], f"{result.class_name} without its state")
        return result.class_name, {}
    return result.class_name, result.state


Handler = Callable[[Machine, Any], None]

#: The meaning of every opcode of the profile, in the order of its table.
HANDLERS: Dict[int, Handler] = {
    op.PROTO: proto,
    op.FRAME: frame,
    op.STOP: stop,
    op.MARK: mark,
    op.MEMOIZE: memoize,
    op.BINPUT: memo_put,
    op.LONG_BINPUT: memo_put,
    op.BINGET: memo_get,
    op.LONG_BINGET: memo_get,
    op.NONE: push_argument,  # both tokenizers give NONE the argument None
    op.NEWTRUE: push_true,
    op.NEWFALSE: push_false,
    op.BININT1: push_argument,
    op.BININT2: push_argument,
    op.BININT: push_argument,
    op.LONG1: push_argument,
    op.LONG4: push_argument,
    op.BINFLOAT: push_argument,
    op.SHORT_BINUNICODE: push_argument,
    op.BINUNICODE: push_argument,
    op.BINUNICODE8: push_argument,
    op.SHORT_BINBYTES: push_argument,
    op.BINBYTES: push_argument,
    op.BINBYTES8: push_argument,
    op.EMPTY_LIST: empty_list,
    op.APPEND: append,
    op.APPENDS: appends,
    op.EMPTY_DICT: empty_dict,
    op.SETITEM: setitem,
    op.SETITEMS: setitems,
    op.EMPTY_TUPLE: empty_tuple,
    op.TUPLE1: tuple1,
    op.TUPLE2: tuple2,
    op.TUPLE3: tuple3,
    op.TUPLE: tuple_mark,
    op.GLOBAL: global_,
    op.STACK_GLOBAL: stack_global,
    op.NEWOBJ: newobj,
    op.REDUCE: reduce,
    op.BUILD: build,
}
