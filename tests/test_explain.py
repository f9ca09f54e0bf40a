"""Clause lookup: every clause's text and location, from the spec the package carries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skyllh_cluster.conformance import explain
from skyllh_cluster.conformance.explain import (
    SPEC_FILES,
    UnknownClauseError,
    clause_location,
    clause_section,
    clause_text,
    github_anchor,
    spec_dir,
    spec_path,
)
from skyllh_cluster.conformance.report import CLAUSE_TABLE as CLAUSES  # the protocol's clauses and the TLS profile's

REPO = Path(__file__).resolve().parent.parent


def test_every_clause_has_its_heading_and_a_normative_body() -> None:
    for cid, clause in CLAUSES.items():
        text = clause_text(cid)
        heading, blank, first = text.split("\n")[:3]
        assert heading == f"{cid} · {clause.level.value} · {clause.title}"
        assert blank == "" and first.strip(), cid
        assert re.search(r"\b(MUST|SHOULD)\b", text.split("\n", 1)[1]), cid
        assert "\n#" not in text, f"{cid}: the text runs into the next heading"


def test_the_text_is_the_spec_verbatim() -> None:
    protocol = (REPO / "spec" / "protocol.md").read_text(encoding="utf-8")
    for cid in ("FRM-1", "MST-7", "SEC-1", "CN-11"):
        section = clause_section(cid)
        assert f"### {section.heading}\n\n{section.body}\n" in protocol, cid
    # FRM-1 holds a code block; it is kept as written, fence and all
    assert "```\n31 00 | 80 04 95" in clause_text("FRM-1")
    # the last clause of a section stops at the next section's heading
    assert "## 9" not in clause_text("ERR-2")


def test_lookup_ignores_case_and_surrounding_space() -> None:
    assert clause_text(" mst-7 ") == clause_text("MST-7")


@pytest.mark.parametrize(
    "asked, near",
    [("MST-77", "MST-7"), ("MTS-7", "MST-7"), ("CN-12", "CN-1"), ("FRM7", "FRM-")],
)
def test_an_unknown_id_names_the_nearest_clauses(asked: str, near: str) -> None:
    with pytest.raises(UnknownClauseError) as info:
        clause_text(asked)
    message = str(info.value)
    assert message.startswith(f"no clause {asked!r} in spec/protocol.md; did you mean ")
    assert near in message and info.value.near and all(n in CLAUSES for n in info.value.near)
    assert isinstance(info.value, LookupError)


def test_an_id_like_nothing_lists_every_clause_range() -> None:
    with pytest.raises(UnknownClauseError) as info:
        clause_location("hello")
    assert str(info.value) == (
        "no clause 'hello' in spec/protocol.md; the clauses are FRM-1..6, ENC-1..8, CMD-1..4, VAL-1..4, "
        "MST-1..11, CN-1..11, ERR-1..2, SCN-1..3, SEC-1, TLS-1..9"
    )


def test_an_unknown_id_is_not_echoed_unbounded() -> None:
    with pytest.raises(UnknownClauseError) as info:
        clause_text("A" * 100_000)
    assert len(str(info.value)) < 400


def test_the_location_is_the_anchor_github_renders_and_the_installed_line() -> None:
    location = clause_location("MST-7")
    anchor = "spec/protocol.md#mst-7--should--the-master-bounds-the-time-a-connection-may-take-to-register"
    installed = spec_path("protocol.md")
    assert location == f"{anchor} (installed: {installed}, line {clause_section('MST-7').line})"
    for cid in CLAUSES:
        section = clause_section(cid)
        lines = spec_path(section.document).read_text(encoding="utf-8").splitlines()
        assert lines[section.line - 1] == f"### {section.heading}", cid


def test_tls_clauses_are_read_from_the_tls_profile() -> None:
    text = clause_text("tls-4")
    assert text.startswith("TLS-4 · MUST · In mutual TLS the master admits only a client certificate")
    assert "decodes nothing from it" in text and "\n#" not in text
    section = clause_section("TLS-4")
    assert section.document == "tls-profile.md"
    assert clause_location("TLS-4") == (
        "spec/tls-profile.md#tls-4--must--in-mutual-tls-the-master-admits-only-a-client-certificate-that-verifies-"
        f"against-its-ca (installed: {spec_path('tls-profile.md')}, line {section.line})"
    )
    with pytest.raises(UnknownClauseError, match=r"^no clause 'TLS-10' in spec/tls-profile.md; did you mean TLS-1"):
        clause_text("TLS-10")


def test_the_anchors_are_those_the_spec_links_to() -> None:
    # deviations.md links to clauses by their GitHub anchors: the same ones.
    links = set(re.findall(r"\(protocol\.md#([^)]+)\)", (REPO / "spec" / "deviations.md").read_text(encoding="utf-8")))
    clause_links = {link for link in links if re.match(r"[a-z]+-\d+--", link)}
    assert len(clause_links) >= 5
    assert clause_links <= {github_anchor(clause_section(cid).heading) for cid in CLAUSES}
    assert github_anchor("ENC-7 · SHOULD · A sender emits (pickle protocol 4 as CPython writes it)") == (
        "enc-7--should--a-sender-emits-pickle-protocol-4-as-cpython-writes-it"
    )


def test_the_checkout_reads_the_repository_spec() -> None:
    # This test suite runs against the editable install of this checkout.
    assert spec_dir() == REPO / "spec"
    for name in SPEC_FILES:
        assert spec_path(name).is_file()
    with pytest.raises(ValueError, match="not a spec document"):
        spec_path("../../etc/passwd")


def test_headings_inside_code_blocks_are_not_clauses(tmp_path: Path) -> None:
    doc = tmp_path / "protocol.md"
    doc.write_text(
        "## 2 Framing\n\n### FRM-1 · MUST · Title\n\nBody MUST.\n\n```\n### FRM-2 · MUST · fake\n```\n\nMore.\n"
        "### FRM-3 · SHOULD · Next\n\nIt SHOULD.\n## 3 Next\n\ntext\n",
        encoding="utf-8",
    )
    sections = explain._sections(doc)
    assert list(sections) == ["FRM-1", "FRM-3"]
    assert sections["FRM-1"].body == "Body MUST.\n\n```\n### FRM-2 · MUST · fake\n```\n\nMore."
    assert sections["FRM-3"].body == "It SHOULD." and sections["FRM-3"].line == 12
