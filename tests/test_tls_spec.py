"""spec/tls-profile.md and ``skyllh_cluster.tls.TLS_CLAUSES`` are the same table.

Like ``tests/test_spec.py`` does for protocol.md and ``CLAUSES``: every
``### TLS-n · LEVEL · title`` heading has an entry with the same level and
title, in the same order, and the other way round; the IDs are numbered
without gaps, and every TLS clause the spec mentions exists.
"""

from __future__ import annotations

import re
from pathlib import Path

from skyllh_cluster.clauses import CLAUSES
from skyllh_cluster.tls import TLS_CLAUSES

SPEC = Path(__file__).resolve().parent.parent / "spec"
PROFILE = SPEC / "tls-profile.md"
HEADING = re.compile(r"^### (?P<id>TLS-\d+) · (?P<level>[A-Z]+) · (?P<title>.+)$")
HEADING_LIKE = re.compile(r"^#+\s*TLS-\d+\b")
MENTION = re.compile(r"\b[A-Z]+-\d+\b")


def headings():
    found = []
    for line in PROFILE.read_text(encoding="utf-8").splitlines():
        if HEADING_LIKE.match(line):
            match = HEADING.match(line)
            assert match, f"malformed clause heading: {line!r}"
            found.append((match["id"], match["level"], match["title"]))
    return found


def test_the_profile_and_the_table_hold_the_same_clauses_in_the_same_order():
    assert headings() == [(c.id, c.level.value, c.title) for c in TLS_CLAUSES.values()]


def test_tls_clauses_are_numbered_from_one_without_gaps_and_apart_from_the_core():
    assert list(TLS_CLAUSES) == [f"TLS-{n}" for n in range(1, len(TLS_CLAUSES) + 1)]
    assert not set(TLS_CLAUSES) & set(CLAUSES)


def test_every_clause_the_profile_mentions_exists():
    text = PROFILE.read_text(encoding="utf-8")
    unknown = {cid for cid in MENTION.findall(text) if cid not in TLS_CLAUSES and cid not in CLAUSES}
    unknown -= {"UTF-8", "RFC-2119"}
    assert not unknown, unknown


def test_the_spec_index_and_protocol_md_point_to_the_profile():
    assert "(tls-profile.md)" in (SPEC / "README.md").read_text(encoding="utf-8")
    assert "tls-profile.md" in (SPEC / "protocol.md").read_text(encoding="utf-8")
