"""The codec: commands to payloads and back, safely (spec section 3).

A *payload* is the content of one frame, without its 2-byte length prefix.
It is a pickle, but it is never given to :mod:`pickle`: :func:`loads` reads
the small data-only profile of pickle that the protocol allows, and
:func:`dumps` writes exactly the bytes ``pickle.dumps(command, protocol=4)``
writes for the original's command classes.

>>> from skyllh_cluster.commands import MSG
>>> payload = dumps(MSG({"trial": 3, "seed": None}))
>>> loads(payload)
MSG(msg={'trial': 3, 'seed': None})
>>> loads(payload) == loads_checked(payload) == MSG({"trial": 3, "seed": None})
True
>>> loads(b"cos\\nsystem\\n(S'echo owned'\\ntR.")
Traceback (most recent call last):
  ...
skyllh_cluster.errors.ProtocolError: [ENC-1] at offset 0: a payload starts with PROTO, not GLOBAL
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Dict, Union

from .commands import COMMAND_CLASSES, MSG, Command, RegisterCN, command_payload, make_command
from .wire.decoder import (
    CLASS_NAME_SIZE_AT,
    CONSTANT_PAYLOADS,
    CONSTANT_SIZE,
    NO_MATCH,
    decode_untemplated,
    msg_value,
    register_times,
)
from .wire.encoder import encode_payload
from .wire.vector_json import value_from_json, value_to_json

__all__ = ["loads", "dumps", "loads_checked", "make_command", "command_to_json", "command_from_json"]

Buffer = Union[bytes, bytearray, memoryview]
_new = object.__new__
_CONSTANT_CLASSES = {payload: COMMAND_CLASSES[name] for payload, name in CONSTANT_PAYLOADS.items()}


def _as_bytes(payload: Buffer) -> bytes:
    if type(payload) is bytes:
        return payload
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    if isinstance(payload, memoryview):
        return payload.tobytes()
    raise TypeError(f"a payload is bytes, bytearray or memoryview, not {type(payload).__name__}")


def loads(payload: Buffer) -> Command:
    """Decode one payload into a command, with the fast decoder.

    Accepts every valid encoding at pickle protocols 2 to 5 (ENC-8), never
    imports, calls or executes anything the payload names (ENC-5), and bounds
    nesting and cost while decoding (ENC-6).  Any input other than a valid
    payload raises :class:`~skyllh_cluster.errors.ProtocolError` naming the
    clause, the byte offset in the payload and the reason; no other
    exception escapes (a non-bytes argument is a ``TypeError``).

    >>> loads(bytes.fromhex(
    ...     "80049526000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473"
    ...     "948c0341434b9493942981942e"))
    ACK()
    """
    # Every frame comes this way: the templates of wire.decoder first, each
    # command made here without a call more than it needs.
    if type(payload) is not bytes:
        payload = _as_bytes(payload)
    if len(payload) <= CONSTANT_SIZE:
        cls = _CONSTANT_CLASSES.get(payload)
        if cls is not None:
            return _new(cls)
    else:
        name_size = payload[CLASS_NAME_SIZE_AT]  # which template could take it
        if name_size == 3:
            value = msg_value(payload)
            if value is not NO_MATCH:
                command = _new(MSG)
                command.msg = value  # a template's value never holds the key object
                return command
        elif name_size == 10:
            times = register_times(payload)
            if times is not None:
                command = _new(RegisterCN)
                command._cn_start_time, command._cn_live_time = times
                return command
    return make_command(*decode_untemplated(payload))


def loads_checked(payload: Buffer) -> Command:
    """Decode one payload with the normative grammar (slow, for audits).

    Same contract and same results as :func:`loads`: construct parses the
    bytes, and the same semantic core (:mod:`skyllh_cluster.wire.machine`)
    gives them meaning.  Use it to audit untrusted payloads where a clear,
    table-driven parse matters more than speed.
    """
    return make_command(*_grammar().parse_payload(_as_bytes(payload)))


@functools.lru_cache(maxsize=None)
def _grammar() -> ModuleType:
    # construct is imported on first use only: loads and dumps do not need it.
    from .wire import grammar

    return grammar


def dumps(command: Command) -> bytes:
    """Encode a command canonically: byte for byte what the original sends.

    That is ``pickle.dumps(command, protocol=4)`` of the same command of the
    original ``skyllh.cluster.commands`` (ENC-7).  Raises
    :class:`~skyllh_cluster.errors.LocalProtocolError` for a command whose
    state is outside the protocol (CMD-1 to CMD-4, VAL-1 to VAL-3, ENC-6) or
    whose payload would not fit in a frame (FRM-2).

    >>> from skyllh_cluster.commands import RegisterCN
    >>> len(dumps(RegisterCN(1732560000, 7200)))
    102
    """
    return command_payload(command)


def command_to_json(command: Command) -> Dict[str, Any]:
    """The JSON form of a command used by the test vectors: its class name and its instance dict."""
    state = [[key, value_to_json(value)] for key, value in command.__dict__.items()]
    return {"class": type(command).__name__, "state": state}


def command_from_json(node: Dict[str, Any]) -> Command:
    """The command a JSON form describes (built without calling its __init__)."""
    command = _new(COMMAND_CLASSES[node["class"]])
    for key, value in node["state"]:
        command.__dict__[key] = value_from_json(value)
    return command
