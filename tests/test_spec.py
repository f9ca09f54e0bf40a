"""The spec documents agree with the code: clauses, scenario, state machines, links.

spec/protocol.md is normative prose, but several of its parts have a twin in
code (the clause table, the scenario payloads, the transition table).  These
tests keep each pair identical, and check that every clause ID and every
relative link in spec/ leads somewhere.
"""

from __future__ import annotations

import ast
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest

from skyllh_cluster.clauses import CLAUSES
from skyllh_cluster.scenario import SCENARIO_PAYLOADS
from skyllh_cluster.wire.values import values_equal

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "spec"
PROTOCOL = SPEC / "protocol.md"
GENERATOR = REPO / "scripts" / "gen_state_diagrams.py"

CLAUSE_HEADING = re.compile(r"^### (?P<id>[A-Z]+-\d+) · (?P<level>[A-Z]+) · (?P<title>.+)$")
# Anything that starts like a clause heading, well-formed or not.
CLAUSE_HEADING_LIKE = re.compile(r"^#+\s*[A-Z]+-\d+\b")
PREFIXES = sorted({cid.split("-")[0] for cid in CLAUSES})
CLAUSE_MENTION = re.compile(r"\b(?:%s)-\d+\b" % "|".join(PREFIXES))
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```[^\n]*$", re.DOTALL | re.MULTILINE)

# The section of protocol.md in which each clause prefix lives.
SECTION_OF_PREFIX = {"FRM": "2", "ENC": "3", "CMD": "4", "VAL": "4", "MST": "5", "CN": "6", "ERR": "8", "SCN": "9", "SEC": "10"}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _spec_files() -> List[Path]:
    return sorted(SPEC.rglob("*.md"))


def _without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def _anchors(path: Path) -> Set[str]:
    anchors: Set[str] = set()
    for line in _without_code_blocks(_text(path)).splitlines():
        match = re.match(r"^#{1,6} (.+)$", line)
        if match:
            anchors.add(github_slug(match.group(1)))
    return anchors


def _clause_headings() -> List[Tuple[str, str, str, str]]:
    """(id, level, title, section number) for every clause heading in protocol.md."""
    found = []
    section = ""
    for line in _without_code_blocks(_text(PROTOCOL)).splitlines():
        if line.startswith("## "):
            section = line[3:].split(" ")[0]
        match = CLAUSE_HEADING.match(line)
        if match:
            found.append((match["id"], match["level"], match["title"], section))
    return found


# --- clauses ---------------------------------------------------------------


def test_every_clause_heading_is_well_formed() -> None:
    for line in _without_code_blocks(_text(PROTOCOL)).splitlines():
        if CLAUSE_HEADING_LIKE.match(line):
            assert CLAUSE_HEADING.match(line), f"malformed clause heading: {line!r}"


def test_every_clause_appears_exactly_once_with_its_level_and_title() -> None:
    headings = _clause_headings()
    ids = [cid for cid, _, _, _ in headings]
    duplicates = sorted({cid for cid in ids if ids.count(cid) > 1})
    assert not duplicates, f"clauses defined more than once: {duplicates}"
    assert set(ids) == set(CLAUSES), (
        f"missing from the spec: {sorted(set(CLAUSES) - set(ids))}; "
        f"missing from clauses.py: {sorted(set(ids) - set(CLAUSES))}"
    )
    for cid, level, title, _ in headings:
        assert (level, title) == (CLAUSES[cid].level.value, CLAUSES[cid].title), cid


def test_clauses_are_in_their_sections_and_in_table_order() -> None:
    headings = _clause_headings()
    for cid, _, _, section in headings:
        assert section == SECTION_OF_PREFIX[cid.split("-")[0]], f"{cid} is in section {section}"
    assert [cid for cid, _, _, _ in headings] == list(CLAUSES)


def test_every_clause_has_a_body() -> None:
    body: Dict[str, List[str]] = {}
    current = None
    for line in _without_code_blocks(_text(PROTOCOL)).splitlines():
        match = CLAUSE_HEADING.match(line)
        if match:
            current = match["id"]
            body[current] = []
        elif line.startswith("#"):
            current = None
        elif current is not None and line.strip():
            body[current].append(line)
    for cid, lines in body.items():
        text = " ".join(lines)
        assert re.search(r"\b(MUST|SHOULD)\b", text), f"{cid} has no normative key word in its body"


def test_appendix_lists_every_clause() -> None:
    appendix = _text(PROTOCOL).split("## Appendix A. Clause index", 1)[1]
    rows = re.findall(r"^\| \[([A-Z]+-\d+)\]\(#([^)]+)\) \| (\w+) \| ([\w-]+) \| (.+?) \| §(\d+) \|$", appendix, re.M)
    assert [row[0] for row in rows] == list(CLAUSES)
    anchors = _anchors(PROTOCOL)
    for cid, anchor, level, role, title, section in rows:
        clause = CLAUSES[cid]
        assert (level, role, title) == (clause.level.value, clause.role.value, clause.title), cid
        assert anchor == github_slug(f"{cid} · {level} · {title}") and anchor in anchors, cid
        assert section == SECTION_OF_PREFIX[cid.split("-")[0]], cid


def test_every_clause_id_mentioned_in_spec_exists() -> None:
    unknown = {}
    for path in _spec_files():
        for cid in CLAUSE_MENTION.findall(_text(path)):
            if cid not in CLAUSES:
                unknown.setdefault(path.relative_to(REPO).as_posix(), set()).add(cid)
    assert not unknown, f"unknown clause IDs: {unknown}"


def test_clause_mention_pattern_catches_unknown_ids() -> None:
    # Guards the check above: an ID that does not exist must be seen.
    assert CLAUSE_MENTION.findall("see FRM-99 and CN-12, not UTF-8") == ["FRM-99", "CN-12"]


# --- the scenario --------------------------------------------------------------


class _RestrictedEvaluator:
    """Evaluates the scenario literal: constants, containers, unary minus,
    +, -, * and ** on numbers, ``str * int`` and ``float("...")``.

    ``ast.literal_eval`` refuses ``2**31`` and ``float("-inf")``; ``eval`` would
    run anything.  This walks the tree and refuses every other node.
    """

    MAX_POWER = 256
    MAX_REPEAT = 1_000_000

    def evaluate(self, source: str) -> Any:
        return self._value(ast.parse(source, mode="eval").body)

    def _value(self, node: ast.AST) -> Any:  # noqa: C901 - one branch per node type
        if isinstance(node, ast.Constant) and type(node.value) in (str, bytes, int, float, bool, type(None)):
            return node.value
        if isinstance(node, ast.List):
            return [self._value(item) for item in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self._value(item) for item in node.elts)
        if isinstance(node, ast.Dict):
            if any(key is None for key in node.keys):
                raise ValueError("dict unpacking is not allowed")
            return {self._value(k): self._value(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self._value(node.operand)
            if type(operand) not in (int, float):
                raise ValueError("unary minus needs a number")
            return -operand if isinstance(node.op, ast.USub) else +operand
        if isinstance(node, ast.BinOp):
            left, right = self._value(node.left), self._value(node.right)
            return self._binary(node.op, left, right)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "float"
            and len(node.args) == 1
            and not node.keywords
            and isinstance(node.args[0], ast.Constant)
            and type(node.args[0].value) is str
        ):
            return float(node.args[0].value)
        raise ValueError(f"not allowed in the scenario literal: {ast.dump(node)[:80]}")

    def _binary(self, op: ast.operator, left: Any, right: Any) -> Any:
        numbers = (int, float)
        if isinstance(op, ast.Pow) and type(left) is int and type(right) is int and 0 <= right <= self.MAX_POWER:
            return left**right
        if isinstance(op, ast.Mult) and type(left) in (str, bytes) and type(right) is int:
            if not 0 <= right <= self.MAX_REPEAT:
                raise ValueError("repeat count out of range")
            return left * right
        if type(left) in numbers and type(right) in numbers:
            if isinstance(op, ast.Add):
                return left + right
            if isinstance(op, ast.Sub):
                return left - right
            if isinstance(op, ast.Mult):
                return left * right
        raise ValueError(f"operator {type(op).__name__} not allowed on {type(left).__name__}, {type(right).__name__}")


def _scenario_literal() -> str:
    match = re.search(r"^```\n(SCENARIO_PAYLOADS = .*?)\n```$", _text(PROTOCOL), re.S | re.M)
    assert match, "the SCENARIO_PAYLOADS block is missing from protocol.md"
    return match.group(1)


def test_scenario_literal_matches_the_code() -> None:
    name, _, source = _scenario_literal().partition(" = ")
    assert name == "SCENARIO_PAYLOADS"
    from_spec = _RestrictedEvaluator().evaluate(source)
    assert type(from_spec) is list and len(from_spec) == len(SCENARIO_PAYLOADS)
    for index, (spec_value, code_value) in enumerate(zip(from_spec, SCENARIO_PAYLOADS)):
        assert values_equal(spec_value, code_value), f"payload {index}: spec {spec_value!r:.60} != code {code_value!r:.60}"


def test_scenario_literal_is_exactly_as_issued() -> None:
    assert _scenario_literal() == (
        'SCENARIO_PAYLOADS = ["conformance", "ünïcødé ✓", b"\\x00\\x01\\xfe\\xff", 0, 255, 65535, -1,\n'
        '    2**31 - 1, 2**31, -(2**31) - 1, 2**64, 1.5, float("-inf"), None, True, False,\n'
        '    [1, "a", [2.5]], (1, 2), {"trial": 3, "seed": None}, "x" * 60000]'
    )


def test_scenario_steps_are_stated_exactly() -> None:
    text = " ".join(_text(PROTOCOL).split())
    assert (
        "The master serves compute nodes for as long as it runs: one after another, "
        "and several at once where it can. For each node it: "
        "1. reads a RegisterCN; 2. sends an ACK; "
        "3. sends MSG(p) for each p in SCENARIO_PAYLOADS, in order; "
        "4. sends a ShutdownCN; 5. may then close the connection."
    ) in text


@pytest.mark.parametrize(
    "source, expected",
    [
        ("2**31 - 1", 2147483647),
        ("-(2**31) - 1", -2147483649),
        ('float("-inf")', -math.inf),
        ('"ab" * 2', "abab"),
        ('{"k": (1, b"\\x00")}', {"k": (1, b"\x00")}),
    ],
)
def test_restricted_evaluator_evaluates_the_literal_forms(source: str, expected: Any) -> None:
    assert values_equal(_RestrictedEvaluator().evaluate(source), expected)


@pytest.mark.parametrize(
    "source",
    ['__import__("os")', "open('x')", "[x for x in ()]", "2**100000", '"x" * 10**9', "a.b", "{**{}}", 'float("1", 2)'],
)
def test_restricted_evaluator_refuses_everything_else(source: str) -> None:
    with pytest.raises(ValueError):
        _RestrictedEvaluator().evaluate(source)


# --- generated state machines ---------------------------------------------------


def _run_generator(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args], capture_output=True, text=True, timeout=60, cwd=REPO
    )


def test_state_machines_md_is_up_to_date() -> None:
    result = _run_generator("--check")
    assert result.returncode == 0, result.stderr


def test_generator_check_detects_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "state-machines.md"
    stale.write_text(_text(SPEC / "state-machines.md").replace("SERVING", "SERVNG", 1), encoding="utf-8")
    result = _run_generator("--check", "--output", str(stale))
    assert result.returncode == 1
    assert "out of date" in result.stderr
    fresh = tmp_path / "fresh.md"
    assert _run_generator("--output", str(fresh)).returncode == 0
    assert _text(fresh) == _text(SPEC / "state-machines.md")


def test_state_machines_md_lists_every_transition_per_role() -> None:
    from skyllh_cluster.clauses import Role
    from skyllh_cluster.protocol.states import TRANSITIONS

    text = _text(SPEC / "state-machines.md")
    master_part, _, node_part = text.partition("\n## 2 Compute node")
    assert node_part, "no compute node section"
    assert master_part.count("stateDiagram-v2") == node_part.count("stateDiagram-v2") == 1
    for role, part in ((Role.MASTER, master_part), (Role.COMPUTE_NODE, node_part)):
        rows = re.findall(r"^\| (\w+) \| `([^`]+)` \| (\w+) \| \[([A-Z]+-\d+)\]", part, re.M)
        expected = [(t.state.name, t.trigger, t.next_state.name, t.clause) for t in TRANSITIONS if t.role is role]
        assert rows == expected, role


# --- links ------------------------------------------------------------------------


def _links(path: Path) -> Iterator[str]:
    for target in LINK.findall(_without_code_blocks(_text(path))):
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # skip http:, https:, mailto:
            yield target


def test_every_relative_link_in_spec_resolves() -> None:
    broken = []
    for path in _spec_files():
        for target in _links(path):
            file_part, _, anchor = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path
            if not destination.exists():
                broken.append(f"{path.name}: {target} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
                broken.append(f"{path.name}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_github_slug_matches_githubs_rules() -> None:
    assert github_slug("FRM-1 · MUST · A frame is a u16") == "frm-1--must--a-frame-is-a-u16"
    assert github_slug("Appendix A. Clause index") == "appendix-a-clause-index"
    assert github_slug("4.2 The value subset") == "42-the-value-subset"
