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
from typing import Union

from .commands import Command
from .errors import ProtocolError
from .wire.decoder import decode_payload
from .wire.encoder import encode_command

__all__ = ["loads", "dumps", "loads_checked"]

Buffer = Union[bytes, bytearray, memoryview]


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
    nesting and size while decoding (ENC-6).  Any input other than a valid
    payload raises :class:`~skyllh_cluster.errors.ProtocolError` naming the
    clause, the byte offset in the payload and the reason; no other
    exception escapes (a non-bytes argument is a ``TypeError``).

    >>> loads(bytes.fromhex(
    ...     "80049526000000000000008c17736b796c6c682e636c75737465722e636f6d6d616e6473"
    ...     "948c0341434b9493942981942e"))
    ACK()
    """
    data = _as_bytes(payload)
    try:
        return decode_payload(data)
    except ProtocolError:
        raise
    except (RecursionError, MemoryError) as exc:  # pragma: no cover - the limits keep these away
        raise ProtocolError("ENC-6", f"decoding ran out of resources: {type(exc).__name__}", None) from exc


def loads_checked(payload: Buffer) -> Command:
    """Decode one payload with the normative grammar (slow, for audits).

    Same contract and same results as :func:`loads`; the two are held
    together by property tests.  Use it to audit untrusted payloads where a
    clear, table-driven parse matters more than speed.
    """
    return _grammar().parse_payload(_as_bytes(payload))


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
    state is outside the protocol (CMD-2 to CMD-4, VAL-1 to VAL-3, ENC-6) or
    whose payload would not fit in a frame (FRM-2).

    >>> from skyllh_cluster.commands import RegisterCN
    >>> len(dumps(RegisterCN(1732560000, 7200)))
    102
    """
    return encode_command(command)
