"""The kit against an implementation of both roles written from spec/ alone (issue 9 §6).

tests/kit_targets/independent/ shares no code with the reference: its
decoder, encoder and both programs were written from the spec text, the
vectors and the SCN-3 output line.  So a blind spot common to the kit and the
reference shows up here as a disagreement.

* Its decoder and encoder agree with every vector and the spec's golden frames.
* It imports nothing of the reference, of skyllh or of pickle, and runs
  without site-packages (``python -I -S``).
* The kit passes it, strict, in both roles: every MUST clause the kit can
  observe is passed.
* The kit fails each of its deliberate faults (``--fault``), and only on the
  clauses the fault breaks.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from skyllh_cluster.conformance.drivers.process import MasterProcess, address_pattern

from kit_runs import KitRun, run_kit
from kit_targets.independent import decoder, encoder, framing, notation

pytestmark = pytest.mark.timeout(900)

HERE = Path(__file__).resolve().parent
IMPLEMENTATION = HERE / "kit_targets" / "independent"
SPEC = HERE.parent / "spec"
#: The programs run without site-packages: the reference is not even importable.
PYTHON = [sys.executable, "-I", "-S"]

FORBIDDEN_IMPORTS = {"pickle", "_pickle", "pickletools", "skyllh", "skyllh_cluster"}


# -- the implementation is independent -----------------------------------------------


def _imported_modules(path: Path) -> Set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(IMPLEMENTATION.glob("*.py")), ids=lambda p: p.name)
def test_imports_only_the_standard_library_and_itself(path: Path) -> None:
    for name in _imported_modules(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN_IMPORTS, f"{path.name} imports {name}"
        allowed = top in ("kit_targets", "__future__") or top in sys.stdlib_module_names
        assert allowed, f"{path.name} imports {name}"


def test_programs_load_no_pickle_module_and_no_reference() -> None:
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import kit_targets.independent.master, kit_targets.independent.compute_node;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN_IMPORTS)!r}))"
    )
    done = subprocess.run([*PYTHON, "-c", probe, str(HERE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- the codec agrees with the spec ---------------------------------------------------------


def _vectors() -> Iterator[Tuple[str, Dict[str, Any]]]:
    for name in ("commands", "original_protocols", "values", "invalid"):
        document = json.loads((SPEC / "vectors" / f"{name}.json").read_text())
        for group in document["testGroups"]:
            for test in group["tests"]:
                yield f"{name}#{test['tcId']}", test


VECTORS = list(_vectors())


def _exactly_equal(a: Any, b: Any) -> bool:
    """VAL-4's exact equality: types at every position, float bits, dict order."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack(">d", a) == struct.pack(">d", b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(map(_exactly_equal, a, b))
    if type(a) is dict:
        pairs = zip(a.items(), b.items())
        return len(a) == len(b) and all(_exactly_equal(k, l) and _exactly_equal(v, w) for (k, v), (l, w) in pairs)
    return a == b


def _expected_state(test: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    state = test["command"]["state"]
    return {key: notation.from_json(value) for key, value in state} if state else None


@pytest.mark.parametrize("name,test", VECTORS, ids=[name for name, _ in VECTORS])
def test_codec_agrees_with_the_vector(name: str, test: Dict[str, Any]) -> None:
    if "frame" not in test:  # EncodeOnly: the encoder refuses it with the vector's clause
        with pytest.raises(encoder.EncodeRefusal) as refused:
            encoder.encode_command(test["command"]["class"], _expected_state(test))
        assert refused.value.clause == test["clause"]
        return
    raw = bytes.fromhex(test["frame"])
    payload = raw[2:]
    if test["result"] == "invalid":
        if len(raw) < 2 or raw[0] | raw[1] << 8 != len(payload):
            return  # a framing vector: a stream that ends inside it is FRM-5, tested by the kit
        with pytest.raises(decoder.Refusal) as refused:
            decoder.decode(payload)
        assert refused.value.clause == test["clause"], refused.value
        return
    command = decoder.decode(payload)
    assert command.name == test["command"]["class"]
    assert _exactly_equal(command.state, _expected_state(test))
    if command.name == "MSG":  # SCN-3 prints the vectors' notation
        assert notation.to_json(command.state["msg"]) == dict(test["command"]["state"])["msg"]
    if "canonical" in test:
        assert (encoder.encode_command(command.name, command.state) == payload) is test["canonical"]


def _golden_frames() -> Dict[str, str]:
    """The golden frames of protocol.md ENC-7, by the command as written there."""
    text = (SPEC / "protocol.md").read_text()
    return dict(re.findall(r"^\| `([A-Za-z]+\([^`]*\))` \| `([0-9a-f]+)` \|$", text, re.MULTILINE))


def test_encoder_writes_the_golden_frames_byte_for_byte() -> None:
    golden = _golden_frames()
    mine = {
        "ACK()": encoder.ack(),
        "ShutdownCN()": encoder.shutdown(),
        "RegisterCN(1732560000, 7200)": encoder.register(1732560000, 7200),
        "MSG('hello')": encoder.msg("hello"),
    }
    assert set(golden) == set(mine)
    for command, payload in mine.items():
        assert framing.frame(payload).hex() == golden[command], command


def test_scenario_msg_of_60000_chars_is_60065_bytes() -> None:
    """spec §9: the largest scenario payload."""
    assert len(encoder.msg("x" * 60000)) == 60065


@pytest.fixture
def lifted_int_digit_limit() -> Iterator[None]:
    """The node program lifts the int-to-str limit at its start; here only for one test."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    notation.lift_int_digit_limit()
    yield
    if limit:
        sys.set_int_max_str_digits(limit)


@pytest.mark.usefixtures("lifted_int_digit_limit")
def test_msg_line_is_one_ascii_line_that_reads_back_exactly() -> None:
    value = ["\ud800", 10**5000, -0.0, float("nan"), (True, 1, 1.0), {b"k": None}]
    line = notation.msg_line(value)
    assert line.isascii() and "\n" not in line and line.startswith("MSG ")
    assert _exactly_equal(notation.from_json(json.loads(line[4:])), value)


def _tree_nodes(value: Any) -> int:
    if type(value) in (list, tuple):
        return 1 + sum(map(_tree_nodes, value))
    if type(value) is dict:
        return 1 + sum(_tree_nodes(k) + _tree_nodes(v) for k, v in value.items())
    return 1


def _nodes_shown(node: Dict[str, Any]) -> int:
    """Nodes in a printed value, a cut node counting what it omits (SCN-3)."""
    if node["type"] == "cut":
        return node["omitted"]
    if node["type"] in ("list", "tuple"):
        return 1 + sum(map(_nodes_shown, node["items"]))
    if node["type"] == "dict":
        entries = node["items"]  # a cut node may stand in for the remaining entries
        return 1 + sum(_nodes_shown(e) if isinstance(e, dict) else sum(map(_nodes_shown, e)) for e in entries)
    return 1


@pytest.mark.parametrize(
    "value",
    [
        [["y" * 100] * 100] * 200,  # 2 MB of hex when printed whole
        [[["ab"] * 1000] * 1000],  # 10**6 shared references
        {i: "x" * 100 for i in range(10000)},
        [{"k": list(range(2000))}] * 100,
    ],
    ids=["list-of-lists", "million-shared", "dict", "dicts-in-list"],
)
def test_msg_line_over_one_mib_is_cut_to_one_mib_and_counts_what_it_omits(value: Any) -> None:
    line = notation.msg_line(value)
    assert len(line) + 1 <= 2**20 and line.isascii() and "\n" not in line
    shown = json.loads(line[4:])
    assert '"cut"' in line
    assert _nodes_shown(shown) == _tree_nodes(value)


_MSG_HEAD = b"\x80\x04\x8c\x17skyllh.cluster.commands\x94\x8c\x03MSG\x94\x93\x94)\x81\x94}\x94\x8c\x03msg\x94"
_NAN = b"G" + struct.pack(">d", float("nan"))


def _msg(value_opcodes: bytes) -> bytes:
    """A protocol 4 MSG payload, without FRAME, around the opcodes of its value."""
    return _MSG_HEAD + value_opcodes + b"sb."


def _nodes_payload(extra: int) -> bytes:
    """A MSG whose value is a list: 1023 references to a list of 1023 None, then ``extra`` None.
    Its tree has 1 + 1023 * 1024 + extra nodes, each costing 1."""
    inner = b"]\x94(" + b"N" * 1023 + b"e"  # memo index 6
    return _msg(b"](" + inner + b"h\x06" * 1022 + b"N" * extra + b"e")


#: Cases the vectors lack (issue 9 §5), decided from the spec text; each is (payload, value or refusal clause).
EDGE_CASES = {
    "equal keys 1, 1.0, True are one entry: first key, last value": (
        _msg(b"}(K\x01NG" + struct.pack(">d", 1.0) + b"\x8c\x01a\x88\x8c\x01bu"), {1: "b"}),
    "two NaN keys are two entries": (_msg(b"}(" + _NAN + b"K\x01" + _NAN + b"K\x02u"), "two entries"),
    "GLOBAL without its newlines": (bytes.fromhex("8002") + b"cskyllh.cluster.commands", "ENC-1"),
    "GLOBAL with non-ASCII text": (bytes.fromhex("8002") + b"c\xc3\xa9\nACK\n)\x81.", "ENC-3"),  # spec ENC-3: a non-ASCII name
    "MEMOIZE right after MARK": (_msg(b"](\x94e"), "ENC-1"),
    "LONG_BINPUT": (bytes.fromhex("8002") + b"cskyllh.cluster.commands\nACK\nr\x00\x01\x00\x00)\x81.", None),
    "BINUNICODE8": (_msg(b"\x8d" + struct.pack("<Q", 2) + b"hi"), "hi"),
    "BINBYTES8": (_msg(b"\x8e" + struct.pack("<Q", 2) + b"hi"), b"hi"),
    "builtins.bytes()": (_msg(b"cbuiltins\nbytes\n)R"), b""),
    # ENC-6 cost: the state dict costs 1, its key 'msg' 4 (a str costs 1 + its length), then the value.
    "a value costing 2**20 - 5: the state dict costs 2**20": (_nodes_payload(1018), "accepted"),
    "a value costing 2**20 - 4: the state dict would cost 2**20 + 1": (_nodes_payload(1019), "ENC-6"),
    "200 nested lists": (_msg(b"]" * 200 + b"a" * 199), "accepted"),
    "201 nested lists": (_msg(b"]" * 201 + b"a" * 200), "ENC-6"),
    "a dict whose tuple key is 200 deep is a value 201 deep": (_msg(b"}" + b")" + b"\x85" * 199 + b"Ns"), "ENC-6"),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_decoder_on_cases_the_vectors_lack(case: str) -> None:
    payload, expected = EDGE_CASES[case]
    if isinstance(expected, str) and re.fullmatch(r"[A-Z]+-\d+", expected):
        with pytest.raises(decoder.Refusal) as refused:
            decoder.decode(payload)
        assert refused.value.clause == expected
        return
    command = decoder.decode(payload)
    if expected is None:
        assert command.name == "ACK"
    elif expected == "two entries":
        assert len(command.state["msg"]) == 2
    elif expected != "accepted":
        assert _exactly_equal(command.state["msg"], expected)


_keys = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=6,
)
_values = st.recursive(
    _keys | st.integers(min_value=-(2**600), max_value=2**600),
    lambda inner: st.lists(inner, max_size=4)
    | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values)
@example(value=[float("nan"), -0.0, "\udc80", 2**64, (1, (2,)), {1: "a", 1.5: b"", (None,): []}])
@example(value={i: None for i in range(1000)})
@example(value=list(range(1001)))
def test_encoder_and_decoder_round_trip_exactly(value: Any) -> None:
    """VAL-4 between the two halves of the independent codec, and its notation."""
    command = decoder.decode(encoder.msg(value))
    assert command.name == "MSG" and _exactly_equal(command.state["msg"], value)
    assert _exactly_equal(notation.from_json(json.loads(notation.msg_line(value)[4:])), value)


_CANONICAL = [encoder.ack(), encoder.register(1732560000, 7200), encoder.msg([1, "a", {"k": (2.5, b"x")}])]


@settings(max_examples=500, deadline=None)
@given(
    payload=st.sampled_from(_CANONICAL),
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "insert", "delete", "cut"]), st.integers(0, 200), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_decoder_refuses_mutations_only_with_a_clause(payload: bytes, edits: List[Tuple[str, int, int]]) -> None:
    """Any bytes decode or are refused with a clause and an offset inside the payload; nothing else escapes."""
    data = bytearray(payload)
    for action, where, byte in edits:
        where %= len(data) + 1
        if action == "flip" and where < len(data):
            data[where] ^= byte or 1
        elif action == "insert":
            data.insert(where, byte)
        elif action == "delete" and where < len(data):
            del data[where]
        elif action == "cut":
            del data[where:]
    try:
        decoder.decode(bytes(data))
    except decoder.Refusal as refusal:
        assert re.fullmatch(r"(FRM|ENC|CMD|VAL|MST)-\d+", refusal.clause)
        assert 0 <= refusal.offset <= len(data)


# -- the kit against it ----------------------------------------------------------------------


@contextmanager
def independent_master(fault: Optional[str] = None) -> Iterator[str]:
    """Run master.py; yield its ``HOST:PORT``."""
    argv = [*PYTHON, str(IMPLEMENTATION / "master.py"), "--host", "127.0.0.1", "--port", "0"]
    if fault:
        argv += ["--fault", fault]
    with MasterProcess(argv, address_pattern("listening"), stream="stdout") as master:
        yield master.target


def independent_cn_command(fault: Optional[str] = None) -> str:
    """The ``--cn-command`` template of compute_node.py."""
    words = [*PYTHON, str(IMPLEMENTATION / "compute_node.py"), "{host}", "{port}", "--live-time", "{live_time}"]
    if fault:
        words += ["--fault", fault]
    return " ".join(w if "{" in w else shlex.quote(w) for w in words)


def _spec_scenario_payloads() -> List[Any]:
    """SCENARIO_PAYLOADS as spec §9 writes it (a Python expression of literals, ``**`` and ``float``)."""
    text = (SPEC / "protocol.md").read_text()
    literal = re.search(r"^SCENARIO_PAYLOADS = (\[.*?\])$", text, re.MULTILINE | re.DOTALL)
    assert literal, "spec §9 no longer gives SCENARIO_PAYLOADS"
    return eval(literal.group(1), {"__builtins__": {}, "float": float})  # noqa: S307 - our own spec text


def test_the_two_roles_run_the_scenario_together_and_print_every_value() -> None:
    """SCN-1 and SCN-3 end to end: the independent node prints one exact line per scenario payload."""
    expected = [notation.to_json(p) for p in _spec_scenario_payloads()]
    with independent_master() as target:
        host, port = target.rsplit(":", 1)
        command = [*PYTHON, str(IMPLEMENTATION / "compute_node.py"), host, port, "--live-time", "60"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("MSG ")]
    assert [json.loads(line[4:]) for line in lines] == expected


def _clause_roles() -> Dict[str, Tuple[str, str]]:
    """Clause ID -> (level, role), from the clause index of protocol.md (Appendix A)."""
    text = (SPEC / "protocol.md").read_text().split("## Appendix A")[1]
    rows = re.findall(r"^\| \[([A-Z]+-\d+)\]\([^)]*\) \| (MUST|SHOULD) \| ([a-z-]+) \|", text, re.MULTILINE)
    assert len(rows) >= 48, "the clause index of protocol.md no longer parses"
    return {cid: (level, role) for cid, level, role in rows}


def _unpassed_must_clauses(run: KitRun) -> List[str]:
    """MUST clauses not passed, leaving out those the kit declares it cannot observe ("no test")."""
    roles = _clause_roles()
    problems = []
    for clause in run.report["clauses"]:
        if roles.get(clause["id"], ("MUST",))[0] != "MUST" or clause["outcome"] == "passed":
            continue
        if clause["outcome"] == "skipped" and clause["detail"].startswith("no test"):
            continue
        # The TLS profile is optional and the independent implementation speaks plain TCP only:
        # its clauses are "not run" in plain mode, never passed.
        if clause["id"].startswith("TLS-") and clause["outcome"] == "skipped" and clause["detail"].startswith("not run: "):
            continue
        problems.append(f"{clause['id']} {clause['outcome']}: {clause['detail']}")
    return problems


def test_kit_passes_both_roles_strict_and_every_must_clause() -> None:
    with independent_master() as target:
        run = run_kit(["--target", target, "--cn-command", independent_cn_command(), "--strict-conformance"])
    assert run.status == 0 and not run.failed(), f"failed: {sorted(run.failed())}\n{run.output[-4000:]}"
    assert not _unpassed_must_clauses(run), "\n".join(_unpassed_must_clauses(run))
    assert set(_clause_roles()) <= set(run.outcomes()), "the report leaves out clauses of the spec"


#: Each fault, the clauses it breaks (the kit must fail at least one, and no other).
MASTER_FAULTS = {
    "ack-trailing": {"ENC-1", "MST-3"},  # a RegisterCN with bytes after STOP is ACKed
    # any first frame naming RegisterCN is ACKed: every receiver rule is broken
    "ack-unchecked": {"MST-3", "FRM-3", "ENC-1", "ENC-2", "ENC-3", "ENC-4", "ENC-6", "CMD-1", "CMD-3", "VAL-2", "VAL-3"},
    "no-close": {"MST-6"},  # SHOULD: the connection stays open after ShutdownCN
    "swap-msgs": {"SCN-1", "VAL-4"},  # two scenario payloads in the wrong order
}
#: ENC-8 may fail too where the kit judges the printed values of MSGs it sent in other encodings.
CN_FAULTS = {
    "no-msg-decode": {"CN-11", "SCN-3", "ENC-8"},  # prints nothing: it never decodes MSG
    "obey-trailing-shutdown": {"ENC-1", "CN-9"},  # a ShutdownCN with bytes after STOP shuts it down
    "bool-as-int": {"CN-11", "VAL-4", "SCN-3", "ENC-8"},  # True printed as 1
    "ignore-live-time": {"CN-10"},  # a silent master keeps it past its live time
    "mute-after-unknown": {"CN-8"},  # MSGs after an ACK or RegisterCN it ignores go unprinted
}


def _run_fault(role: str, fault: str) -> KitRun:
    strict = ["--strict-conformance"]
    if role == "master":
        with independent_master(fault) as target:
            return run_kit(["--target", target, *strict])
    return run_kit(["--cn-command", independent_cn_command(fault), *strict])


def _fault_cases() -> List[Tuple[str, str, Set[str]]]:
    return [("master", f, c) for f, c in MASTER_FAULTS.items()] + [("cn", f, c) for f, c in CN_FAULTS.items()]


@pytest.mark.parametrize("role,fault,clauses", _fault_cases(), ids=[f"{r}-{f}" for r, f, _ in _fault_cases()])
def test_kit_fails_the_fault_on_its_clauses(role: str, fault: str, clauses: Set[str]) -> None:
    run = _run_fault(role, fault)
    failed = run.failed()
    assert run.status == 1 and failed, f"the kit passed --fault {fault}:\n{run.output[-3000:]}"
    assert failed <= clauses, f"--fault {fault} failed other clauses: {sorted(failed - clauses)}\n{run.output[-3000:]}"
