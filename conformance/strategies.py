"""Hypothesis strategies for the SkyLLH cluster protocol.

One module holds every strategy the project's tests and the conformance kit
draw from.  The codec's strategies:

* :func:`hashable_values`, :func:`values`: values of the MSG subset (VAL-1,
  VAL-2), including sharing (the same object at several places);
* :func:`commands`: the four commands with such values;
* :func:`payload_mutations`: a payload with bytes flipped, inserted, deleted,
  cut off or opcodes spliced in, for agreement and robustness tests;
* :func:`split_points`: where to cut a byte string into pieces, to feed a
  stream reader.

The conformance kit's strategies (at the end of the module):

* :func:`send_plans`: split points and pauses for writing a frame;
* :func:`registration_times`: plausible, unexpired registrations;
* :func:`invalid_registrations`: mutated RegisterCN payloads;
* :func:`printable_values`: subset values a node can print.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from hypothesis import strategies as st

from skyllh_cluster.commands import ACK, MSG, Command, RegisterCN, ShutdownCN
from skyllh_cluster.wire import opcodes as op

__all__ = [
    "integers",
    "floats",
    "texts",
    "hashable_values",
    "values",
    "commands",
    "payload_mutations",
    "split_points",
]


def integers() -> st.SearchStrategy[int]:
    """Ints around every opcode boundary, and huge ones."""
    edges = [0, 255, 256, 65535, 65536, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**63, -(2**2039), 2**2039]
    return st.one_of(
        st.integers(-300, 70000),
        st.integers(),
        st.sampled_from(edges).flatmap(lambda edge: st.integers(edge - 2, edge + 2)),
        st.integers(0, 3000).map(lambda bits: 1 << bits),
        st.integers(0, 3000).map(lambda bits: -(1 << bits)),
    )


def floats() -> st.SearchStrategy[float]:
    """Every float, NaNs and infinities included."""
    return st.floats(allow_nan=True, allow_infinity=True)


def texts(max_size: int = 40) -> st.SearchStrategy[str]:
    """Strings of any code points, lone surrogates included, short and long."""
    any_char = st.characters(blacklist_categories=())
    return st.one_of(
        st.text(any_char, max_size=max_size),
        st.integers(250, 300).map(lambda n: "é" * (n // 2)),  # around the 256-byte boundary
        st.sampled_from(["msg", "MSG", "skyllh.cluster.commands", "latin1", ""]),
    )


def _bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=40), st.integers(250, 300).map(lambda n: b"\xfe" * n))


def hashable_values() -> st.SearchStrategy[Any]:
    """Values that may be dict keys (VAL-2): scalars and tuples of them."""
    scalars = st.one_of(st.none(), st.booleans(), integers(), floats(), texts(), _bytes())
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=8)


@st.composite
def _with_sharing(draw: st.DrawFn, inner: st.SearchStrategy[Any]) -> Any:
    """A list that holds one object several times (memo references)."""
    shared = draw(inner)
    others = draw(st.lists(inner, max_size=3))
    picks = draw(st.lists(st.integers(0, len(others)), min_size=2, max_size=5))
    return [shared if pick == len(others) else others[pick] for pick in picks]


def values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Any value of the MSG subset (VAL-1): acyclic, within MAX_DEPTH."""
    scalars = st.one_of(st.none(), st.booleans(), integers(), floats(), texts(), _bytes())

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.lists(inner, max_size=5),
            st.lists(inner, max_size=5).map(tuple),
            st.dictionaries(hashable_values(), inner, max_size=4),
            _with_sharing(inner),
        )

    return st.recursive(scalars, extend, max_leaves=max_leaves)


def commands(msg_values: st.SearchStrategy[Any] = None) -> st.SearchStrategy[Command]:  # type: ignore[assignment]
    """The four commands; MSG with values of the subset."""
    return st.one_of(
        st.builds(ACK),
        st.builds(ShutdownCN),
        st.builds(RegisterCN, integers(), integers()),
        st.builds(MSG, msg_values if msg_values is not None else values()),
    )


_SPLICE_OPCODES: List[bytes] = [
    bytes((code,)) for code in sorted(op.PROFILE_OPCODES)
] + [b"R", b"i", b"o", b"\x82", b"P", b"Q", b"\x92", b"0", b"2", b"\x8f", b"\x96", b"\x97", b"\x98", b"h\x00", b"h\x03"]


@st.composite
def payload_mutations(draw: st.DrawFn, payloads: st.SearchStrategy[bytes]) -> bytes:
    """A payload from ``payloads`` with 1 to 3 random edits."""
    data = bytearray(draw(payloads))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice", "duplicate"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 3))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            data[at:at] = draw(st.sampled_from(_SPLICE_OPCODES))
        elif kind == "duplicate":
            end = draw(st.integers(at, min(len(data), at + 12)))
            data[at:at] = data[at:end]
    return bytes(data)


def split_points(data: bytes) -> st.SearchStrategy[List[int]]:
    """Sorted cut positions inside ``data`` (possibly none, possibly repeated)."""
    return st.lists(st.integers(0, len(data)), max_size=8).map(sorted)


# -- the conformance kit's strategies ---------------------------------------------------
# The kit draws how to send (split points and pauses), what to register
# with, what invalid first frames to try and which values to send to a
# compute node.  Pauses are short: the kit's speed budget is seconds.

#: The longest pause the kit makes between two pieces of a frame.
MAX_PAUSE = 0.02


@st.composite
def send_plans(draw: st.DrawFn, size: int, max_pieces: int = 8) -> "Tuple[List[int], List[float]]":
    """How to write ``size`` bytes: cut offsets, and the pause before each later piece."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, size - 1)), max_size=max_pieces - 1))))
    cuts = [c for c in cuts if 0 < c < size]
    pauses = draw(st.lists(st.sampled_from([0.0, 0.001, 0.005, MAX_PAUSE]), min_size=len(cuts), max_size=len(cuts)))
    return cuts, pauses


def registration_times() -> st.SearchStrategy["Tuple[int, int]"]:
    """(start offset from now in seconds, live time): plausible registrations that have not expired."""
    return st.tuples(
        st.one_of(st.integers(-5, 5), st.sampled_from([-3000, 0])),
        st.one_of(st.integers(3600, 2**31 - 1), st.sampled_from([3600, 7200, 2**31 - 1, 2**40])),
    )


def invalid_registrations(valid: bytes) -> st.SearchStrategy[bytes]:
    """Mutations of a valid RegisterCN payload (the caller keeps those the grammar refuses)."""
    return payload_mutations(st.just(valid))


def printable_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Values of the subset without lone surrogates.

    A node may print what it receives (the original does); a lone surrogate
    cannot be written to a UTF-8 stdout, and that is the application's
    business, not the protocol's.  Every other part of the subset is drawn.
    """
    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
    scalars = st.one_of(st.none(), st.booleans(), integers(), floats(), text, _bytes())
    keys = st.one_of(st.none(), st.booleans(), st.integers(), text, st.binary(max_size=8))

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=4).map(tuple),
            st.dictionaries(keys, inner, max_size=3),
        )

    return st.recursive(scalars, extend, max_leaves=max_leaves)


__all__ += ["MAX_PAUSE", "send_plans", "registration_times", "invalid_registrations", "printable_values"]
