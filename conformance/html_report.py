"""The kit's verdict as one self-contained HTML page, in the Autobahn testsuite's way.

:func:`write_html_report` takes the JSON report (schema 2, see the plugin's
``--conformance-report``) as a dict and writes one file that needs nothing
else: inline CSS, no scripts, no fonts, no images.  It shows

* a summary: target, modes, strictness, duration, exit status, whether the
  run was interrupted, and the count of each outcome;
* the clause table, coloured by outcome;
* for each failed or inconclusive clause: the clause's text from the spec
  that ships with the package, where to read it, the evidence of each test,
  and each byte transcript, frame by frame, every frame decoded beside its hex.

The bytes of a transcript and most strings of a report come from the target
under test, which may be hostile.  So everything is escaped, control and
bidirectional-formatting characters are shown as escapes, and what is shown
is bounded: a long frame by its head and its length (the rest, up to a
bound, behind ``<details>``), a long transcript by its first entries.
Frames are decoded with :func:`skyllh_cluster.codec.loads`, which never
imports, calls or executes anything a payload names; when it refuses a
payload the page shows the ``ProtocolError``'s clause, offset and reason.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from skyllh_cluster.codec import loads
from skyllh_cluster.errors import ProtocolError
from skyllh_cluster.msg_output import LINE_LIMIT

from .explain import UnknownClauseError, clause_section, github_anchor, spec_path

__all__ = ["write_html_report", "render_html_report", "frames_of", "Frame", "main"]

SCHEMA = 2
OUTCOMES = ("passed", "failed", "inconclusive", "skipped")
#: Clauses whose tests, evidence and transcripts the page shows in full.
EXPLAINED = ("failed", "inconclusive")

# Bounds on what one page shows; a hostile target decides how much it sends.
HEX_HEAD = 48  # bytes of a frame shown at once
HEX_MORE = 2048  # bytes of a frame behind <details>
HEX_TAIL = 64  # bytes of a frame's end behind <details>, when it is longer still
REPR_HEAD = 240  # characters of a decoded value shown at once
REPR_MORE = 8000  # characters behind <details>
TEXT_LIMIT = 2000  # characters of any one string of the report
ENTRY_LIMIT = 400  # transcript entries shown per transcript
FRAME_LIMIT = 300  # frames shown per transcript (a 64 KB chunk can hold 32768 empty frames)
TRANSCRIPT_LIMIT = 20  # transcripts shown per test
HEX_LINE = 16  # bytes per line of hex

#: The kit's documented exit statuses, shortly.
EXIT_MEANINGS = {
    0: "the target conforms",
    1: "a clause failed",
    2: "the run was interrupted",
    3: "the kit itself failed",
    4: "usage or configuration error",
    5: "inconclusive",
}

DIRECTIONS = {"sent": ("kit → target", "sent"), "received": ("target → kit", "received")}


# --- text -------------------------------------------------------------------


def _visible(text: str) -> str:
    """``text`` with control and formatting characters made visible as escapes.

    A bidi override (U+202E) or a NUL in a target's string must not reorder or
    hide what the page shows; newlines and tabs stay.
    """
    out = []
    for ch in text:
        if ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters in all)"


def esc(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Any value as safe HTML text: made visible, bounded, escaped."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return html.escape(_visible(_cut(text, limit)), quote=True)


def _anchor_id(clause_id: Any) -> str:
    return "clause-" + "".join(ch for ch in str(clause_id)[:40] if ch.isascii() and (ch.isalnum() or ch == "-"))


def _list(mapping: Dict[str, Any], key: str) -> List[Any]:
    """``mapping[key]`` when it is a list, else an empty one: a report is data, not trusted code."""
    value = mapping.get(key)
    return value if isinstance(value, list) else []


def _outcome(value: Any) -> str:
    """An outcome as a CSS class: one of the known words, or ``other``."""
    return value if value in OUTCOMES or value in ("blocked", "error") else "other"


# --- frames -----------------------------------------------------------------


@dataclass
class Frame:
    """One frame cut from a direction's stream, decoded."""

    offset: int  # stream offset of the frame's first byte (its length prefix)
    data: bytes  # the whole frame, prefix included; or the bytes of a cut-short frame
    complete: bool = True
    decoded: str = ""  # repr of the command, when it decoded
    error: Optional[ProtocolError] = None

    @property
    def announced(self) -> Optional[int]:
        return int.from_bytes(self.data[:2], "little") if len(self.data) >= 2 else None


def _decode(frame: Frame) -> Frame:
    try:
        command = loads(frame.data[2:])
        # The whole value (up to a frame's worth of text and more): a frame may carry
        # an int of 157,000 digits, which the kit sends to compute nodes.
        frame.decoded = command.describe(LINE_LIMIT)
    except ProtocolError as exc:
        frame.error = exc
    return frame


def frames_of(stream: bytes, base: int = 0) -> Tuple[List[Frame], bytes]:
    """Cut a direction's bytes into frames at their u16le length prefixes.

    Returns the complete frames, each decoded, and the bytes of a frame that
    has not (yet) arrived in full.  ``base`` is the stream offset of
    ``stream[0]``.
    """
    frames = []
    pos = 0
    while len(stream) - pos >= 2:
        end = pos + 2 + int.from_bytes(stream[pos : pos + 2], "little")
        if end > len(stream):
            break
        frames.append(_decode(Frame(base + pos, stream[pos:end])))
        pos = end
    return frames, stream[pos:]


class _Direction:
    """Reassembles one direction of a transcript, chunk by chunk."""

    def __init__(self) -> None:
        self.pending = b""
        self.pending_offset = 0
        self.expected = 0  # the stream offset the next chunk should start at
        self.in_sync = True

    def feed(self, offset: Any, data: bytes) -> Tuple[List[Frame], Optional[str]]:
        """The frames this chunk completes, and a note when bytes are missing before it."""
        note = None
        if offset is None:  # no offset recorded: take the chunk as the next bytes
            offset = self.expected
        if not isinstance(offset, int) or offset != self.expected:
            if self.in_sync or isinstance(offset, int):
                note = (
                    f"bytes {self.expected}..{offset} of this direction are not in the transcript; "
                    "its frames are shown undecoded from here on"
                )
            self.in_sync = False
        self.expected = (offset if isinstance(offset, int) else self.expected) + len(data)
        if not self.in_sync:
            return [], note
        frames, self.pending = frames_of(self.pending + data, self.pending_offset)
        if frames:
            last = frames[-1]
            self.pending_offset = last.offset + len(last.data)
        return frames, note


# --- HTML pieces -------------------------------------------------------------


def _hex_lines(data: bytes, start: int, prefix_bytes: int) -> str:
    """Hex of ``data`` in lines of HEX_LINE bytes, each after its stream offset; the first ``prefix_bytes`` marked."""
    lines = []
    for line_start in range(0, len(data), HEX_LINE):
        chunk = data[line_start : line_start + HEX_LINE]
        cells = []
        for i, byte in enumerate(chunk):
            cell = f"{byte:02x}"
            cells.append(f'<span class="len">{cell}</span>' if line_start + i < prefix_bytes else cell)
        # Decimal, like the stream offsets of the headings and of ProtocolError.
        lines.append(f'<span class="off">{start + line_start:>6}</span> ' + " ".join(cells))
    return "\n".join(lines)


def _hex_block(data: bytes, start: int, prefix_bytes: int = 2) -> str:
    """Hex of bytes from stream offset ``start``: the head at once, more (bounded) behind <details>."""
    head = data[:HEX_HEAD]
    out = [f'<pre class="hex">{_hex_lines(head, start, prefix_bytes)}</pre>']
    if len(data) > HEX_HEAD:
        more = data[HEX_HEAD:HEX_MORE]
        body = _hex_lines(more, start + HEX_HEAD, 0)
        if len(data) > HEX_MORE:
            tail_start = max(HEX_MORE, len(data) - HEX_TAIL)
            left_out = tail_start - HEX_MORE
            if left_out:
                body += f'\n<span class="gap">… {left_out} bytes not shown …</span>'
            body += "\n" + _hex_lines(data[tail_start:], start + tail_start, 0)
        out.append(
            f"<details><summary>{len(data) - HEX_HEAD} more bytes</summary>"
            f'<pre class="hex">{body}</pre></details>'
        )
    return "".join(out)


def _value_block(text: str) -> str:
    if len(text) <= REPR_HEAD:
        return f'<code class="value">{esc(text)}</code>'
    return (
        f'<code class="value">{esc(text[:REPR_HEAD], REPR_HEAD)}…</code>'
        f"<details><summary>the whole value ({len(text)} characters)</summary>"
        f'<pre class="value">{esc(text, REPR_MORE)}</pre></details>'
    )


def _error_block(exc: ProtocolError, frame_offset: int) -> str:
    where = ""
    if exc.offset is not None:
        where = f" at payload offset {exc.offset} (stream offset {frame_offset + 2 + exc.offset})"
    return (
        f'<div class="refused"><b>refused:</b> <span class="clause-ref">{esc(exc.clause, 20)}</span>'
        f"{esc(where)}: {esc(exc.reason, 400)}</div>"
    )


def _frame_row(frame: Frame, direction: str) -> str:
    arrow = DIRECTIONS.get(direction, (direction, "other"))[1]
    size = len(frame.data) - 2
    if frame.complete:
        what = f"frame of {_bytes(size)} of payload at stream offset {frame.offset}"
        decoded = _value_block(frame.decoded) if frame.error is None else _error_block(frame.error, frame.offset)
    else:
        announced = frame.announced
        what = f"incomplete frame at stream offset {frame.offset}: " + (
            f"its prefix announces {announced} payload bytes, {max(size, 0)} arrived"
            if announced is not None
            else f"{len(frame.data)} byte of a length prefix"
        )
        decoded = '<div class="refused">not complete in this transcript, so not decoded</div>'
    return (
        f'<div class="frame {arrow}"><div class="frame-head">{esc(what)}</div>'
        f'<div class="frame-body"><div class="frame-hex">{_hex_block(frame.data, frame.offset)}</div>'
        f'<div class="frame-decoded">{decoded}</div></div></div>'
    )


def _chunk_bytes(entry: Dict[str, Any]) -> Tuple[bytes, Optional[str]]:
    raw = entry.get("hex", "")
    if not isinstance(raw, str):
        return b"", "this entry's bytes are not a hex string"
    try:
        return bytes.fromhex(raw), None
    except ValueError:
        return b"", f"this entry's bytes are not valid hex: {raw[:64]!r}"


def _bytes(count: int) -> str:
    return "1 byte" if count == 1 else f"{count} bytes"


def _seconds(value: Any) -> str:
    return f"+{value:.3f} s" if isinstance(value, (int, float)) and not isinstance(value, bool) else "+? s"


def _transcript(transcript: Dict[str, Any]) -> str:
    entries = _list(transcript, "entries")
    streams = {"sent": _Direction(), "received": _Direction()}
    rows = []
    frames_shown = 0
    for entry in entries[:ENTRY_LIMIT]:
        if not isinstance(entry, dict):
            continue
        direction = entry.get("direction")
        at = _seconds(entry.get("at"))
        if direction not in streams:
            rows.append(
                f'<tr class="note"><td class="at">{at}</td><td class="dir">note</td>'
                f'<td>{esc(entry.get("text", ""), 600)}</td></tr>'
            )
            continue
        data, problem = _chunk_bytes(entry)
        frames, gap = streams[direction].feed(entry.get("offset"), data)
        label, css = DIRECTIONS[direction]
        parts = [f'<div class="chunk">{_bytes(len(data))} at stream offset {esc(entry.get("offset"), 20)}</div>']
        if problem:
            parts.append(f'<div class="refused">{esc(problem)}</div>')
        if gap:
            parts.append(f'<div class="refused">{esc(gap)}</div>')
        if not streams[direction].in_sync and data:
            start = entry.get("offset") if isinstance(entry.get("offset"), int) else 0
            parts.append(_hex_block(data, start, prefix_bytes=0))
        room = max(FRAME_LIMIT - frames_shown, 0)
        parts.extend(_frame_row(frame, direction) for frame in frames[:room])
        if len(frames) > room:
            parts.append(f'<div class="refused">{len(frames) - room} more frames are not shown</div>')
        frames_shown += min(len(frames), room)
        rows.append(
            f'<tr class="{css}"><td class="at">{at}</td><td class="dir">{label}</td><td>{"".join(parts)}</td></tr>'
        )
    if len(entries) > ENTRY_LIMIT:
        rows.append(
            f'<tr class="note"><td></td><td class="dir">note</td>'
            f"<td>{len(entries) - ENTRY_LIMIT} later entries are not shown</td></tr>"
        )
    for direction, stream in streams.items():
        if stream.in_sync and stream.pending:
            frame = Frame(stream.pending_offset, stream.pending, complete=False)
            rows.append(
                f'<tr class="{DIRECTIONS[direction][1]}"><td class="at">end</td>'
                f'<td class="dir">{DIRECTIONS[direction][0]}</td><td>{_frame_row(frame, direction)}</td></tr>'
            )
    label = transcript.get("label") or "connection"
    body = "".join(rows) or '<tr class="note"><td></td><td></td><td>no bytes were exchanged</td></tr>'
    return (
        f'<div class="transcript"><h5>transcript: {esc(label, 200)}</h5>'
        f'<table class="entries"><thead><tr><th>time</th><th>direction</th><th>bytes, cut into frames, decoded</th>'
        f"</tr></thead><tbody>{body}</tbody></table></div>"
    )


_LINE_START = re.compile(r"\n(?=\s*(?:[-*] |\d+\. |\|))")


def _prose(text: str) -> str:
    """A clause body: paragraphs with `code`, fenced blocks as <pre>."""
    out = []
    in_fence = False
    block: List[str] = []

    def flush() -> None:
        if not block:
            return
        joined = "\n".join(block)
        if in_fence:
            out.append(f'<pre class="spec-code">{esc(joined, 20000)}</pre>')
        else:
            pieces = esc(joined, 20000).split("`")
            marked = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
            # A paragraph's lines run together; a list item or table row keeps its line.
            marked = _LINE_START.sub("<br>", marked).replace("\n", " ")
            out.append(f'<p class="spec">{marked}</p>')
        block.clear()

    for line in text.splitlines():
        if line.startswith(("```", "~~~")):
            flush()
            in_fence = not in_fence
        elif not in_fence and not line.strip():
            flush()
        else:
            block.append(line)
    flush()
    return "".join(out)


def _clause_spec(clause_id: str) -> str:
    try:
        section = clause_section(clause_id)
        path = spec_path(section.document)
    except (UnknownClauseError, FileNotFoundError) as exc:
        return f'<div class="refused">the clause text is not available: {esc(exc)}</div>'
    anchor = f"spec/{section.document}#{github_anchor(section.heading)}"
    return (
        f'<blockquote class="clause-text"><div class="clause-heading">{esc(section.heading)}</div>'
        f"{_prose(section.body)}</blockquote>"
        f'<div class="where">Read it in <code>{esc(anchor)}</code> — installed as '
        f'<a href="{esc(path.resolve().as_uri())}">{esc(path)}</a>, line {section.line}</div>'
    )


def _test(test: Dict[str, Any]) -> str:
    outcome = _outcome(test.get("outcome"))
    transcripts = _list(test, "transcripts")
    shown = "".join(_transcript(t) for t in transcripts[:TRANSCRIPT_LIMIT] if isinstance(t, dict))
    if len(transcripts) > TRANSCRIPT_LIMIT:
        shown += f'<p class="note">{len(transcripts) - TRANSCRIPT_LIMIT} more transcripts are not shown.</p>'
    return (
        f'<div class="test"><h4><span class="badge {outcome}">{esc(test.get("outcome"), 20)}</span> '
        f'<code>{esc(test.get("nodeid"), 300)}</code></h4>'
        f'<pre class="evidence">{esc(test.get("detail"), 4000)}</pre>{shown}</div>'
    )


def _clause_details(clause: Dict[str, Any]) -> str:
    outcome = _outcome(clause.get("outcome"))
    cid = str(clause.get("id", ""))
    tests = _list(clause, "tests")
    return (
        f'<section class="clause {outcome}" id="{_anchor_id(cid)}">'
        f'<h3><span class="badge {outcome}">{esc(clause.get("outcome"), 20)}</span> '
        f'{esc(cid, 40)} · {esc(clause.get("level"), 20)} · {esc(clause.get("title"), 300)}</h3>'
        f'<div class="evidence-line"><b>Evidence:</b> {esc(clause.get("detail"), 4000)}</div>'
        f"{_clause_spec(cid)}"
        + "".join(_test(t) for t in tests if isinstance(t, dict))
        + ("" if tests else '<p class="note">No test of this clause recorded evidence.</p>')
        + '<p class="top"><a href="#clauses">back to the table</a></p></section>'
    )


def _clause_row(clause: Dict[str, Any]) -> str:
    outcome = _outcome(clause.get("outcome"))
    cid = str(clause.get("id", ""))
    name = esc(cid, 40)
    if clause.get("outcome") in EXPLAINED:
        name = f'<a href="#{_anchor_id(cid)}">{name}</a>'
    return (
        f'<tr class="{outcome}"><td class="id">{name}</td><td>{esc(clause.get("level"), 20)}</td>'
        f'<td class="outcome">{esc(clause.get("outcome"), 20)}</td><td>{esc(clause.get("title"), 300)}</td>'
        f'<td class="detail">{esc(clause.get("detail"), 400)}</td></tr>'
    )


def _jump_links(explained: List[Dict[str, Any]]) -> str:
    """Links from the verdict to each failed and inconclusive clause."""
    links = []
    for outcome in EXPLAINED:
        ids = [str(c.get("id", "")) for c in explained if c.get("outcome") == outcome]
        if ids:
            shown = ", ".join(f'<a href="#{_anchor_id(cid)}">{esc(cid, 40)}</a>' for cid in ids)
            links.append(f"{outcome}: {shown}")
    return f'<div class="jump">{" · ".join(links)}</div>' if links else ""


def _counts(report: Dict[str, Any], clauses: List[Dict[str, Any]]) -> Dict[str, int]:
    summary = report.get("summary")
    if isinstance(summary, dict) and all(isinstance(summary.get(o), int) for o in OUTCOMES):
        return {o: summary[o] for o in OUTCOMES}
    return {o: sum(1 for c in clauses if c.get("outcome") == o) for o in OUTCOMES}


def _verdict(report: Dict[str, Any], counts: Dict[str, int]) -> Tuple[str, str]:
    status = report.get("exit_status")
    if report.get("interrupted"):
        return "interrupted", "Interrupted: the run was cut short; the table below is partial"
    if status == 0:
        return "passed", "The target conforms" + (
            f" ({counts['inconclusive']} clauses inconclusive)" if counts["inconclusive"] else ""
        )
    if status == 1:
        return "failed", "The target does not conform"
    if status == 2:
        return "interrupted", "Interrupted: the run was cut short; the table below is partial"
    if status == 3:
        return "error", "The kit itself failed: this is no verdict on the target"
    if status == 5:
        return "interrupted", "Inconclusive: nothing failed, but a clause that counts could not be decided"
    return "other", f"Exit status {esc(status, 20)}"


def _summary(report: Dict[str, Any], counts: Dict[str, int]) -> str:
    status = report.get("exit_status")
    meaning = EXIT_MEANINGS.get(status, "") if isinstance(status, int) and not isinstance(status, bool) else ""
    modes = report.get("modes")
    modes_text = ", ".join(str(m) for m in modes) if isinstance(modes, list) else modes
    duration = report.get("duration_s")
    rows = [
        ("target", esc(report.get("target"), 600)),
        ("modes", esc(modes_text, 100)),
        (
            "strict",
            "yes: SHOULD failures fail the run" if report.get("strict") else "no: only MUST failures fail the run",
        ),
        ("started", esc(report.get("started"), 60)),
        ("duration", f"{duration:.2f} s" if isinstance(duration, (int, float)) else esc(duration, 40)),
        ("exit status", f"{esc(status, 20)}" + (f" ({meaning})" if meaning else "")),
        ("interrupted", "<b>yes</b>: the run was cut short" if report.get("interrupted") else "no"),
        ("kit", esc(report.get("kit"), 100)),
    ]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    badges = "".join(
        f'<div class="count {o}"><div class="n">{counts[o]}</div><div>{o}</div></div>' for o in OUTCOMES
    )
    return f'<table class="summary">{table}</table><div class="counts">{badges}</div>'


_CSS = """
:root{--pass:#1a7f37;--pass-bg:#dafbe1;--fail:#cf222e;--fail-bg:#ffebe9;--inc:#9a6700;--inc-bg:#fff8c5;
--skip:#57606a;--skip-bg:#eaeef2;--err:#8250df;--err-bg:#fbefff;--line:#d0d7de;--mono:ui-monospace,SFMono-Regular,
Menlo,Consolas,"DejaVu Sans Mono",monospace}
*{box-sizing:border-box}
body{font:15px/1.45 -apple-system,"Segoe UI",Helvetica,Arial,"DejaVu Sans",sans-serif;color:#1f2328;margin:0;
background:#f6f8fa}
main{max-width:1240px;margin:0 auto;padding:24px 28px 60px;background:#fff;min-height:100vh}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px;border-bottom:1px solid var(--line);
padding-bottom:4px}h3{font-size:17px;margin:0 0 8px}h4{font-size:14px;margin:16px 0 6px}h5{font-size:13px;
margin:12px 0 4px;color:#57606a}
code,pre{font-family:var(--mono);font-size:12.5px}pre{margin:0;white-space:pre-wrap;word-break:break-all}
.subtitle{color:#57606a;margin:0 0 16px;word-break:break-all}
.verdict{padding:12px 16px;border-radius:6px;font-weight:600;font-size:17px;margin:12px 0 16px;border-left:6px solid}
.verdict .jump{font-size:14px;font-weight:500;margin-top:4px;color:#1f2328}
.verdict.passed{background:var(--pass-bg);border-color:var(--pass);color:var(--pass)}
.verdict.failed{background:var(--fail-bg);border-color:var(--fail);color:var(--fail)}
.verdict.interrupted,.verdict.other{background:var(--inc-bg);border-color:var(--inc);color:var(--inc)}
.verdict.error{background:var(--err-bg);border-color:var(--err);color:var(--err)}
.top-row{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}
table{border-collapse:collapse}
table.summary th{text-align:left;padding:3px 14px 3px 0;color:#57606a;font-weight:500;vertical-align:top}
table.summary td{padding:3px 0;word-break:break-all}
.counts{display:flex;gap:10px}
.count{min-width:92px;padding:8px 12px;border-radius:6px;text-align:center;font-size:13px;border:1px solid}
.count .n{font-size:26px;font-weight:700;line-height:1.1}
.passed.count{background:var(--pass-bg);color:var(--pass)}.failed.count{background:var(--fail-bg);color:var(--fail)}
.inconclusive.count{background:var(--inc-bg);color:var(--inc)}.skipped.count{background:var(--skip-bg);color:var(--skip)}
table.clauses{width:100%;font-size:13.5px}
table.clauses th{text-align:left;background:#f6f8fa;border-bottom:2px solid var(--line);padding:6px 8px}
table.clauses td{padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
table.clauses td.id{font-family:var(--mono);white-space:nowrap;font-weight:600}
table.clauses td.outcome{font-weight:600;white-space:nowrap}
table.clauses td.detail{color:#57606a;font-size:12.5px;word-break:break-word}
tr.passed td.outcome{color:var(--pass)}tr.passed td:first-child{border-left:5px solid var(--pass)}
tr.failed{background:var(--fail-bg)}tr.failed td.outcome{color:var(--fail)}
tr.failed td:first-child{border-left:5px solid var(--fail)}
tr.inconclusive{background:var(--inc-bg)}tr.inconclusive td.outcome{color:var(--inc)}
tr.inconclusive td:first-child{border-left:5px solid var(--inc)}
tr.skipped td{color:#6e7781}tr.skipped td:first-child{border-left:5px solid #afb8c1}
tr.other td:first-child,tr.error td:first-child,tr.blocked td:first-child{border-left:5px solid var(--err)}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;
background:var(--err);vertical-align:1px}
.badge.passed{background:var(--pass)}.badge.failed{background:var(--fail)}.badge.inconclusive{background:var(--inc)}
.badge.skipped{background:var(--skip)}
section.clause{border:1px solid var(--line);border-radius:8px;padding:14px 16px;margin:18px 0}
section.clause.failed{border-top:5px solid var(--fail)}section.clause.inconclusive{border-top:5px solid var(--inc)}
.evidence-line{margin:4px 0 10px;word-break:break-word}
blockquote.clause-text{margin:8px 0;padding:8px 14px;background:#f6f8fa;border-left:4px solid #8c959f;
border-radius:0 6px 6px 0}
.clause-heading{font-weight:600;margin-bottom:4px}p.spec{margin:6px 0}
pre.spec-code{background:#eaeef2;padding:6px 8px;border-radius:4px;margin:6px 0}
.where{font-size:13px;color:#57606a;margin-bottom:8px;word-break:break-all}
.test{border-top:1px dashed var(--line);margin-top:12px}
pre.evidence{background:#fff8f8;border:1px solid #ffcecb;padding:8px 10px;border-radius:6px;max-height:24em;
overflow:auto}
.transcript{margin:10px 0}
table.entries{width:100%;font-size:12.5px;border:1px solid var(--line)}
table.entries th{background:#f6f8fa;text-align:left;padding:4px 8px;border-bottom:1px solid var(--line)}
table.entries td{padding:5px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
td.at{font-family:var(--mono);white-space:nowrap;color:#57606a;width:80px}
td.dir{white-space:nowrap;font-weight:600;width:110px}
tr.sent td.dir{color:#0969da}tr.received td.dir{color:#8250df}tr.note td{color:#57606a;font-style:italic}
.chunk{color:#57606a;font-size:12px;margin-bottom:4px}
.frame{border:1px solid var(--line);border-radius:6px;margin:4px 0;overflow:hidden}
.frame.sent{border-left:4px solid #0969da}.frame.received{border-left:4px solid #8250df}
.frame-head{background:#f6f8fa;padding:2px 8px;font-size:12px;color:#57606a}
.frame-body{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:16px;padding:6px 8px}
pre.hex{color:#24292f;white-space:pre;word-break:normal}.hex .off{color:#8c959f}.hex .len{color:#cf222e;font-weight:700}.hex .gap{color:#8c959f}
code.value,pre.value{word-break:break-all;white-space:pre-wrap}
.refused{color:var(--fail);font-size:12.5px}.clause-ref{font-family:var(--mono);font-weight:700}
details summary{cursor:pointer;color:#0969da;font-size:12px}
p.top{font-size:12px;margin:10px 0 0}p.note{color:#57606a;font-style:italic}
a{color:#0969da}
footer{color:#8c959f;font-size:12px;margin-top:36px}
"""


def render_html_report(report: Dict[str, Any]) -> str:
    """The whole page for one report (schema 2), as a string."""
    if not isinstance(report, dict):
        raise TypeError(f"a report is a dict, not {type(report).__name__}")
    clauses = [c for c in _list(report, "clauses") if isinstance(c, dict)]
    counts = _counts(report, clauses)
    verdict_class, verdict_text = _verdict(report, counts)
    explained = [c for c in clauses if c.get("outcome") in EXPLAINED]
    schema_note = ""
    if report.get("schema") != SCHEMA:
        schema_note = (
            f'<p class="refused">This report says schema {esc(report.get("schema"), 20)}; this page '
            f"renders schema {SCHEMA} and may leave parts out.</p>"
        )
    details = "".join(_clause_details(c) for c in explained) or (
        '<p class="note">No clause failed and none was inconclusive.</p>'
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Conformance of {esc(report.get("target"), 120)}: SkyLLH cluster protocol</title>
<style>{_CSS}</style></head>
<body><main>
<h1>SkyLLH cluster protocol conformance</h1>
<p class="subtitle">{esc(report.get("target"), 600)}</p>
{schema_note}
<div class="verdict {verdict_class}">{verdict_text}{_jump_links(explained)}</div>
<div class="top-row">{_summary(report, counts)}</div>
<h2 id="clauses">Clauses</h2>
<table class="clauses"><thead><tr><th>clause</th><th>level</th><th>outcome</th><th>requirement</th>
<th>evidence</th></tr></thead><tbody>
{"".join(_clause_row(c) for c in clauses)}
</tbody></table>
<h2 id="failures">Failures and inconclusive clauses</h2>
{details}
<footer>Written by {esc(report.get("kit") or "the skyllh-cluster conformance kit", 100)}.
Frames are decoded with skyllh_cluster.codec.loads, which never executes anything a payload names.
The length prefix of each frame is in <span style="color:#cf222e;font-weight:700">red</span>.</footer>
</main></body></html>
"""


def write_html_report(path: Union[str, Path], report: Dict[str, Any]) -> None:
    """Write ``report`` (the kit's JSON report, schema 2, as a dict) as one self-contained HTML file."""
    Path(path).write_text(render_html_report(report), encoding="utf-8")


def main(argv: Optional[Iterable[str]] = None) -> int:
    """``python -m skyllh_cluster.conformance.html_report REPORT.json OUT.html``."""
    parser = argparse.ArgumentParser(
        prog="python -m skyllh_cluster.conformance.html_report",
        description="Render a conformance report (--conformance-report JSON) as one HTML page.",
    )
    parser.add_argument("report", help="the JSON report the kit wrote")
    parser.add_argument("html", help="where to write the HTML page")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        report = json.loads(Path(args.report).read_text(encoding="utf-8"))
        write_html_report(args.html, report)
    except (OSError, ValueError, TypeError) as exc:
        print(f"html_report: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
