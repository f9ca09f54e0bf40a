"""Every test vector of spec/vectors through every decoder, and the files are current."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from skyllh_cluster.codec import dumps, loads, loads_checked
from skyllh_cluster.commands import COMMAND_CLASSES, Command, RegisterCN
from skyllh_cluster.errors import LocalProtocolError, ProtocolError
from skyllh_cluster.wire.framing import FrameBuffer
from skyllh_cluster.wire.grammar import parse_frame
from skyllh_cluster.wire.values import values_equal
from skyllh_cluster.codec import command_from_json, command_to_json, make_command

ROOT = Path(__file__).resolve().parent.parent
VECTOR_DIR = ROOT / "spec" / "vectors"
FILES = ["commands.json", "values.json", "original_protocols.json", "invalid.json"]


def load_vectors() -> List[Tuple[str, Dict[str, Any]]]:
    vectors = []
    for name in FILES:
        document = json.loads((VECTOR_DIR / name).read_text(encoding="ascii"))
        for group in document["testGroups"]:
            for test in group["tests"]:
                vectors.append((f"{name}#{test['tcId']}", test))
    return vectors


VECTORS = load_vectors()
FRAMED = [(vid, test) for vid, test in VECTORS if "frame" in test]


def outcome(decode: Any, data: bytes) -> Any:
    try:
        return decode(data)
    except ProtocolError as exc:
        return exc


def stream_outcomes(chunks: List[bytes]) -> List[Any]:
    """Feed chunks then end of stream to a FrameBuffer; decode every payload with loads."""
    buffer = FrameBuffer()
    results: List[Any] = []
    for chunk in chunks + [b""]:
        buffer.feed(chunk)
        while True:
            try:
                payload = buffer.next_payload()
            except ProtocolError as exc:
                return results + [exc]
            if payload is None:
                break
            results.append(outcome(loads, payload))
    return results


def canonical_payload(command: Command) -> bytes:
    """The canonical bytes of ``command``; a RegisterCN's keys in CMD-3's canonical order."""
    if isinstance(command, RegisterCN):
        state = vars(command)
        command = RegisterCN(state["_cn_start_time"], state["_cn_live_time"])
    return dumps(command)


def value_with_cycles(node: Dict[str, Any], enclosing: Tuple[Any, ...] = ()) -> Any:
    """The value a JSON form of an EncodeOnly vector describes; ``{"type": "ref", "up": N}`` is the
    N-th enclosing container (0 the innermost), which is how the vectors write a cycle."""
    from skyllh_cluster.wire.vector_json import value_from_json

    kind = node["type"]
    if kind == "ref":
        return enclosing[-1 - node["up"]]
    if kind == "list":
        out: List[Any] = []
        out.extend(value_with_cycles(item, enclosing + (out,)) for item in node["items"])
        return out
    if kind == "dict":
        table: Dict[Any, Any] = {}
        for key, item in node["items"]:
            table[value_with_cycles(key, enclosing + (table,))] = value_with_cycles(item, enclosing + (table,))
        return table
    if kind == "tuple":
        return tuple(value_with_cycles(item, enclosing) for item in node["items"])
    return value_from_json(node)


def command_with_cycles(node: Dict[str, Any]) -> Command:
    cls = COMMAND_CLASSES[node["class"]]
    command = cls.__new__(cls)
    for key, value in node["state"]:
        setattr(command, key, value_with_cycles(value))
    return command


def same_command(a: Command, b: Command) -> bool:
    return type(a) is type(b) and list(a.__dict__) == list(b.__dict__) and all(
        values_equal(a.__dict__[k], b.__dict__[k]) for k in a.__dict__
    )


@pytest.mark.parametrize("vid, test", FRAMED, ids=[vid for vid, _ in FRAMED])
def test_vector(vid: str, test: Dict[str, Any]) -> None:
    frame = bytes.fromhex(test["frame"])
    payload = frame[2:]
    if test["result"] == "valid":
        expected = command_from_json(test["command"])
        for decoded in (loads(payload), loads_checked(payload), parse_frame(frame, make_command)):
            assert same_command(decoded, expected)
        for chunks in ([frame], [frame[i : i + 1] for i in range(len(frame))], [frame + frame[:1]]):
            results = stream_outcomes(chunks)
            assert same_command(results[0], expected)
        # The JSON form does not record sharing, so re-encode the decoded command
        # (a RegisterCN in CMD-3's canonical key order).
        assert test["canonical"] == (canonical_payload(loads(payload)) == payload)
        return
    clause = test["clause"]
    if "TruncatedFrame" in test["flags"]:
        assert outcome(parse_frame, frame).clause == "FRM-1"
        results = stream_outcomes([frame])
        assert [r.clause for r in results] == ["FRM-5"]
        return
    assert outcome(loads, payload).clause == clause
    assert outcome(loads_checked, payload).clause == clause
    assert outcome(parse_frame, frame).clause == clause
    assert outcome(parse_frame, frame).offset >= 2
    for chunks in ([frame], [frame[i : i + 1] for i in range(len(frame))]):
        results = stream_outcomes(chunks)
        assert isinstance(results[0], ProtocolError) and results[0].clause == clause


ENCODE_ONLY = [(vid, test) for vid, test in VECTORS if "frame" not in test]


@pytest.mark.parametrize("vid, test", ENCODE_ONLY, ids=[vid for vid, _ in ENCODE_ONLY])
def test_encoder_refuses(vid: str, test: Dict[str, Any]) -> None:
    try:
        command = command_with_cycles(test["command"])
    except TypeError:
        # A map whose key is a list cannot be built in Python (the key is
        # unhashable), so a Python encoder never meets one; the vector is for
        # languages where it can.  Python's own case is a frozenset key.
        assert test["clause"] == "VAL-2"
        command = command_with_cycles({"class": "MSG", "state": []})
        command.msg = {frozenset(): None}
    with pytest.raises(LocalProtocolError) as info:
        dumps(command)
    assert info.value.clause == test["clause"]


def test_files_are_well_formed() -> None:
    for name in FILES:
        document = json.loads((VECTOR_DIR / name).read_text(encoding="ascii"))
        tests = [t for g in document["testGroups"] for t in g["tests"]]
        assert document["algorithm"] == "skyllh-cluster-frame"
        assert document["numberOfTests"] == len(tests)
        assert len({t["tcId"] for t in tests}) == len(tests)
        for test in tests:
            assert set(test["flags"]) <= set(document["notes"])
            assert test["result"] in ("valid", "invalid")
            if test["result"] == "valid":
                assert command_to_json(command_from_json(test["command"])) == test["command"]
            else:
                assert test["clause"] and test["reason"]


def test_every_kind_is_covered() -> None:
    flags = {flag for _, test in VECTORS for flag in test["flags"]}
    assert {"Malicious", "ForbiddenOpcode", "ForbiddenGlobal", "Limits", "MaxSize", "Shared", "SizeClass"} <= flags
    clauses = {test["clause"] for _, test in VECTORS if test["result"] == "invalid"}
    assert {"FRM-1", "FRM-2", "ENC-1", "ENC-2", "ENC-3", "ENC-4", "ENC-6", "CMD-1", "CMD-2", "CMD-3", "CMD-4",
            "VAL-2", "VAL-3"} <= clauses
    sources = {g["source"] for name in FILES for g in json.loads((VECTOR_DIR / name).read_text())["testGroups"]}
    assert {f"original-skyllh-24.1.0 protocol {p}" for p in (2, 3, 4, 5)} <= sources


def test_vector_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("regenerate_vectors", ROOT / "scripts" / "regenerate_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0
    # And --check does notice a stale file.
    (tmp_path / "commands.json").write_text("{}", encoding="ascii")
    assert module.main(["--check", "--directory", str(tmp_path)]) == 1


def test_json_form_refuses_what_is_not_a_value() -> None:
    from skyllh_cluster.wire.vector_json import value_from_json, value_to_json

    with pytest.raises(TypeError):
        value_to_json({1, 2})
    with pytest.raises(ValueError):
        value_from_json({"type": "set"})
    assert value_from_json(value_to_json(10**5000)) == 10**5000
