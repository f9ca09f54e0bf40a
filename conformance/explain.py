"""Clause lookup: the normative text of a clause, from the spec that ships with the package.

A kit verdict names clauses (``MST-7``); a user who installed the wheel has no
clone to open.  So the package carries ``spec/`` (``skyllh_cluster/spec/`` in
an installed package; the repository's ``spec/`` in an editable install or a
checkout), and this module reads a clause out of ``spec/protocol.md`` (or, for
the TLS profile's ``TLS-n``, ``spec/tls-profile.md``) by its heading,
``### <ID> · <LEVEL> · <title>``::

    >>> print(clause_text("FRM-3").splitlines()[0])
    FRM-3 · MUST · A sender never sends an empty frame
    >>> clause_location("FRM-3").split()[0]
    'spec/protocol.md#frm-3--must--a-sender-never-sends-an-empty-frame'

The text is the spec's, verbatim: this module parses headings, never rewrites
the body.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import skyllh_cluster

__all__ = [
    "SPEC_FILES",
    "UnknownClauseError",
    "SpecSection",
    "spec_dir",
    "spec_path",
    "github_anchor",
    "clause_section",
    "clause_text",
    "clause_location",
]

#: The documents of ``spec/`` that every installation carries.
SPEC_FILES = ("README.md", "protocol.md", "encoding-profile.md", "state-machines.md", "deviations.md", "tls-profile.md")

#: The documents that define clauses, and the ID prefixes each defines (any other: protocol.md).
CLAUSE_DOCUMENTS = {"tls-profile.md": ("TLS",)}

_CLAUSE_HEADING = re.compile(r"^### (?P<id>[A-Z]+-\d+) · (?P<level>[A-Z]+) · (?P<title>.+?)\s*$")
_ANY_HEADING = re.compile(r"^#{1,6} ")
_FENCE = re.compile(r"^(```|~~~)")


class UnknownClauseError(LookupError):
    """No clause of the spec (protocol.md, tls-profile.md) has the ID asked for."""

    def __init__(self, clause_id: str, near: List[str]) -> None:
        self.clause_id = clause_id
        self.near = near
        shown = clause_id if len(clause_id) <= 40 else clause_id[:40] + "..."
        hint = f"; did you mean {', '.join(near)}?" if near else f"; the clauses are {_id_ranges()}"
        super().__init__(f"no clause {shown!r} in spec/{_document_of(clause_id)}{hint}")

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return str(self.args[0])


def _id_ranges() -> str:
    """``FRM-1..6, ENC-1..8, ...``: every clause ID of the package, compactly."""
    from .report import CLAUSE_TABLE

    numbers: Dict[str, List[int]] = {}
    for cid in CLAUSE_TABLE:
        prefix, number = cid.rsplit("-", 1)
        numbers.setdefault(prefix, []).append(int(number))
    return ", ".join(f"{p}-{min(n)}..{max(n)}" if len(n) > 1 else f"{p}-{n[0]}" for p, n in numbers.items())


@dataclass(frozen=True)
class SpecSection:
    """One clause as the spec states it."""

    id: str
    level: str
    title: str
    body: str  # the normative text under the heading, up to the next heading
    line: int  # 1-based line of the heading in its document
    document: str = "protocol.md"  # the spec document that defines it

    @property
    def heading(self) -> str:
        return f"{self.id} · {self.level} · {self.title}"


def spec_dir() -> Path:
    """The directory of the spec documents this installation carries.

    An installed wheel has them in ``skyllh_cluster/spec/``; an editable
    install or a checkout reads the repository's ``spec/`` (the package's
    source root is ``reference/skyllh_cluster``).
    """
    package = Path(skyllh_cluster.__file__).resolve().parent
    candidates = (package / "spec", package.parent.parent / "spec")
    for candidate in candidates:
        if (candidate / "protocol.md").is_file():
            return candidate
    raise FileNotFoundError(
        "this installation of skyllh-cluster carries no spec/protocol.md (looked in "
        + " and ".join(str(c) for c in candidates)
        + "); reinstall it from a wheel built with the spec"
    )


def spec_path(name: str = "protocol.md") -> Path:
    """The installed path of one spec document, e.g. ``spec_path("deviations.md")``."""
    if name not in SPEC_FILES:
        raise ValueError(f"{name!r} is not a spec document; the spec is {', '.join(SPEC_FILES)}")
    return spec_dir() / name


def github_anchor(heading: str) -> str:
    """The anchor GitHub renders for a Markdown heading.

    Lower case; everything but letters, digits, ``_``, ``-`` and spaces
    dropped (so ``·`` goes and leaves its spaces); spaces become ``-``.
    """
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


@functools.lru_cache(maxsize=None)
def _sections(path: Path) -> Dict[str, SpecSection]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: Dict[str, SpecSection] = {}
    current = None  # (match, line number, body lines)
    in_fence = False

    def close() -> None:
        if current is not None:
            match, number, body = current
            found[match["id"]] = SpecSection(
                match["id"], match["level"], match["title"], "\n".join(body).strip("\n"), number, path.name
            )

    for number, line in enumerate(lines, start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and _ANY_HEADING.match(line):
            close()
            match = _CLAUSE_HEADING.match(line)
            current = (match, number, []) if match else None
            continue
        if current is not None:
            current[2].append(line)
    close()
    return found


def _normalise(clause_id: str) -> str:
    return clause_id.strip().upper()


def _document_of(clause_id: str) -> str:
    """The spec document that defines (or would define) a clause of this ID."""
    prefix = _normalise(clause_id).split("-", 1)[0]
    return next((doc for doc, prefixes in CLAUSE_DOCUMENTS.items() if prefix in prefixes), "protocol.md")


def _all_sections() -> Dict[str, SpecSection]:
    found = dict(_sections(spec_path("protocol.md")))
    for document in CLAUSE_DOCUMENTS:
        found.update(_sections(spec_path(document)))
    return found


def clause_section(clause_id: str) -> SpecSection:
    """The clause ``clause_id`` (e.g. ``"MST-7"``, any case) as the shipped spec states it.

    Raises :class:`UnknownClauseError`, naming the nearest IDs, when the spec
    has no such clause.
    """
    sections = _all_sections()
    wanted = _normalise(clause_id)
    if wanted in sections:
        return sections[wanted]
    ids = list(sections)
    near = difflib.get_close_matches(wanted, ids, n=4, cutoff=0.5)
    prefix = wanted.split("-")[0]
    if not near:
        near = [cid for cid in ids if cid.split("-")[0] == prefix][:4]
    raise UnknownClauseError(clause_id, near)


def clause_text(clause_id: str) -> str:
    """The clause's heading and normative body, verbatim from spec/protocol.md (or spec/tls-profile.md).

    The first line is ``<ID> · <LEVEL> · <title>``, then a blank line, then the
    body up to the next heading (paragraphs, lists and code blocks as written).
    """
    section = clause_section(clause_id)
    return f"{section.heading}\n\n{section.body}"


def clause_location(clause_id: str) -> str:
    """Where to read a clause: its anchor in the spec, and the installed file.

    For example ``spec/protocol.md#mst-7--should--the-master-bounds-the-time-a-
    connection-may-take-to-register (installed: /.../skyllh_cluster/spec/
    protocol.md, line 543)``.  The anchor is the one GitHub renders, so it can
    be appended to the repository's URL.
    """
    section = clause_section(clause_id)
    path = spec_path(section.document)
    return f"spec/{section.document}#{github_anchor(section.heading)} (installed: {path}, line {section.line})"
