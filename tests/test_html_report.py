"""The HTML report: one self-contained page, every byte escaped and bounded, checked in headless Chromium.

The reports rendered here carry real frames: the ones the codec writes, the
canary pickle an attacker sends, an empty frame, a 60 KB scenario frame, and
strings a hostile target chooses (markup, bidi overrides, NULs).
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyllh_cluster.codec import dumps
from skyllh_cluster.commands import ACK, MSG, RegisterCN, ShutdownCN
from skyllh_cluster.conformance.explain import clause_section, github_anchor
from skyllh_cluster.conformance.html_report import (
    ENTRY_LIMIT,
    FRAME_LIMIT,
    HEX_HEAD,
    HEX_MORE,
    frames_of,
    main,
    render_html_report,
    write_html_report,
)
from skyllh_cluster.wire.framing import encode_frame
from skyllh_cluster.msg_output import LINE_LIMIT

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"

# The protocol 0 pickle of SEC-1: `pickle.loads` on it runs `true`.
CANARY = bytes.fromhex("636f730a73797374656d0a28532774727565270a74522e")
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>\u202egnp.exe\x00'


def frame(command: Any) -> bytes:
    return encode_frame(dumps(command))


def entry(direction: str, at: float, offset: int, data: bytes) -> Dict[str, Any]:
    return {"direction": direction, "at": at, "offset": offset, "hex": data.hex()}


def chunks(direction: str, data: bytes, sizes: List[int], at: float = 0.0) -> List[Dict[str, Any]]:
    """``data`` as entries of the given sizes (the last takes the rest)."""
    out, pos = [], 0
    for i, size in enumerate(sizes + [len(data)]):
        piece = data[pos : pos + size] if i < len(sizes) else data[pos:]
        if piece:
            out.append(entry(direction, at + i * 0.001, pos, piece))
        pos += len(piece)
    return out


def clause_row(cid: str, outcome: str, detail: str, tests: List[Dict[str, Any]]) -> Dict[str, Any]:
    section = clause_section(cid)
    return {"id": cid, "level": section.level, "title": section.title, "outcome": outcome, "detail": detail, "tests": tests}


def sample_report(**overrides: Any) -> Dict[str, Any]:
    """A schema-2 report of a master that ACKs a canary pickle and answers garbage."""
    register = frame(RegisterCN(1732560000, 7200))
    ack = frame(ACK())
    canary_frame = len(CANARY).to_bytes(2, "little") + CANARY
    big = frame(MSG("x" * 60000))
    received = ack + frame(MSG({"trial": 3, "seed": None})) + frame(MSG(HOSTILE)) + big + frame(ShutdownCN()) + b"\x00\x00" + b"\x10\x00abc"
    failed_test = {
        "nodeid": "conformance/test_master_registration.py::test_invalid_first_frame_gets_no_ack",
        "outcome": "failed",
        "detail": "the master sent ACK after a first frame that is not RegisterCN: " + HOSTILE,
        "transcripts": [
            {
                "label": "node 1 " + HOSTILE,
                "entries": [entry("sent", 0.0, 0, canary_frame)]
                + chunks("received", received, [1, 1, 60, 700, 40000], at=0.004)
                + [{"direction": "note", "at": 2.006, "text": "no reply within 2 s " + HOSTILE}],
            },
            {"label": "node 2", "entries": chunks("sent", register, [1, 3, 50]) + [entry("received", 0.01, 0, ack)]},
        ],
    }
    inconclusive_test = {
        "nodeid": "conformance/test_master_robustness.py::test_registration_is_bounded_in_time",
        "outcome": "inconclusive",
        "detail": "the master neither closed nor answered within the kit's 10 s bound",
        "transcripts": [{"label": "staller", "entries": [entry("sent", 0.0, 0, register[:5])]}],
    }
    clauses = [
        clause_row("FRM-1", "passed", "every frame the master sent was well framed", []),
        clause_row("MST-3", "failed", "ACK sent after an invalid first frame " + HOSTILE, [failed_test]),
        clause_row("MST-7", "inconclusive", "neither closed nor answered within 10 s", [inconclusive_test]),
        clause_row("CN-1", "skipped", "not tested: needs --cn-command CMD", []),
    ]
    report = {
        "schema": 2,
        "kit": "skyllh-cluster 0.1.0",
        "target": "127.0.0.1:9999 " + HOSTILE,
        "modes": ["master"],
        "strict": False,
        "started": "2026-12-02T12:00:00Z",
        "duration_s": 7.93,
        "interrupted": False,
        "exit_status": 1,
        "summary": {"passed": 1, "failed": 1, "inconclusive": 1, "skipped": 1},
        "clauses": clauses,
    }
    report.update(overrides)
    return report


class _Tags(html.parser.HTMLParser):
    """Every start tag and attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: List[Tuple[str, List[Tuple[str, Any]]]] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Any]]) -> None:
        self.tags.append((tag, attrs))


def _tags(page: str) -> List[Tuple[str, List[Tuple[str, Any]]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


# --- frames ------------------------------------------------------------------


def test_frames_of_cuts_at_the_length_prefixes_and_decodes_each_frame() -> None:
    stream = frame(ACK()) + frame(MSG([1, "a"])) + b"\x05\x00ab"
    frames, rest = frames_of(stream, base=100)
    assert [(f.offset, len(f.data)) for f in frames] == [(100, 51), (100 + 51, len(frame(MSG([1, "a"]))))]
    assert [f.decoded for f in frames] == ["ACK()", "MSG(msg=[1, 'a'])"]
    assert rest == b"\x05\x00ab"


def test_a_frame_with_an_int_of_more_digits_than_str_allows_is_decoded() -> None:
    # The kit sends compute nodes ints of up to 157,000 digits (CN-11); Python's default
    # int/str limit is 4300 digits, and the page must still show the frame.
    big = 10 ** 20000 + 1
    frames, _ = frames_of(frame(MSG(big)))
    assert frames[0].error is None and frames[0].decoded == "MSG(msg=1" + "0" * 19999 + "1)"
    page = render_html_report(_one_transcript([entry("sent", 0.0, 0, frame(MSG(big)))]))
    assert "MSG(msg=" in page


def test_frames_of_reports_the_clause_offset_and_reason_of_a_refused_payload() -> None:
    frames, rest = frames_of(len(CANARY).to_bytes(2, "little") + CANARY + b"\x00\x00")
    assert rest == b""
    canary, empty = frames
    assert canary.error is not None and canary.error.clause == "ENC-1" and canary.error.offset == 0
    assert empty.error is not None and empty.data == b"\x00\x00"


def test_the_page_is_the_same_however_the_stream_was_split() -> None:
    data = frame(ACK()) + frame(MSG({"k": b"\x00\xff"})) + frame(ShutdownCN())
    whole = render_html_report(_one_transcript([entry("received", 0.0, 0, data)]))
    expected = re.findall(r'<div class="frame-decoded">(.*?)</div></div></div>', whole)
    assert len(expected) == 3
    for cut in range(1, len(data)):
        split = chunks("received", data, [cut])
        page = render_html_report(_one_transcript([{**e, "at": 0.0} for e in split]))
        assert re.findall(r'<div class="frame-decoded">(.*?)</div></div></div>', page) == expected, cut


def _one_transcript(entries: List[Dict[str, Any]]) -> Dict[str, Any]:
    test = {"nodeid": "t", "outcome": "failed", "detail": "d", "transcripts": [{"label": "c", "entries": entries}]}
    return sample_report(clauses=[clause_row("MST-5", "failed", "d", [test])])


def test_a_gap_in_a_transcript_stops_the_decoding_and_says_so() -> None:
    data = frame(ACK())
    page = render_html_report(_one_transcript([entry("received", 0.0, 0, data[:10]), entry("received", 0.1, 30, data[30:])]))
    assert "bytes 10..30 of this direction are not in the transcript" in page
    assert "ACK()" not in page


# --- content -------------------------------------------------------------------


def test_the_page_shows_the_summary_the_table_and_each_failure() -> None:
    page = render_html_report(sample_report())
    for text in ("127.0.0.1:9999", "7.93 s", "1 (a clause failed)", "The target does not conform", "2026-12-02T12:00:00Z"):
        assert text in page
    assert page.count('<tr class="') >= 4
    for cid, outcome in (("FRM-1", "passed"), ("MST-3", "failed"), ("MST-7", "inconclusive"), ("CN-1", "skipped")):
        assert re.search(rf'<tr class="{outcome}"><td class="id">(<a href="#clause-{cid}">)?{cid}', page), cid
    # failures and inconclusive clauses get a section with the spec's text and where to read it
    for cid in ("MST-3", "MST-7"):
        section = clause_section(cid)
        assert f'id="clause-{cid}"' in page
        assert f"spec/protocol.md#{github_anchor(section.heading)}" in page
        assert section.body.split("\n")[0].replace("`", "") in re.sub(r"</?code>", "", page)
    assert 'id="clause-FRM-1"' not in page and 'id="clause-CN-1"' not in page
    # the transcript: frames decoded beside their hex, refusals with clause and offset
    assert "MSG(msg={&#x27;trial&#x27;: 3, &#x27;seed&#x27;: None})" in page
    assert "ShutdownCN()" in page and "ACK()" in page
    assert "refused:</b> <span class=\"clause-ref\">ENC-1</span> at payload offset 0 (stream offset 2)" in page
    assert "its prefix announces 16 payload bytes, 3 arrived" in page
    assert '<span class="len">31</span> <span class="len">00</span> 80 04 95' in page  # ACK's prefix, marked


def test_every_string_from_the_target_is_escaped_and_made_visible() -> None:
    page = render_html_report(sample_report())
    tags = _tags(page)
    assert {tag for tag, _ in tags} <= ALLOWED_TAGS
    assert not [(t, a) for t, attrs in tags for a, _ in attrs if a.startswith("on") or a == "src"]
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "\u202e" not in page and "\x00" not in page
    assert "\\u202egnp.exe\\x00" in page


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "h4", "h5", "p", "div",
                "span", "table", "thead", "tbody", "tr", "th", "td", "code", "pre", "details", "summary", "a", "b",
                "blockquote", "footer", "section", "br"}


@settings(max_examples=60, deadline=None)
@given(
    chunks_=st.lists(st.binary(max_size=300), max_size=6),
    values=st.lists(st.text(max_size=40), max_size=3),
    text=st.text(max_size=60),
)
def test_any_bytes_and_any_text_stay_text(chunks_: List[bytes], values: List[str], text: str) -> None:
    stream = b"".join(chunks_) + b"".join(frame(MSG(v)) for v in values)
    entries = chunks("received", stream, [len(c) for c in chunks_]) + [{"direction": "note", "at": 1, "text": text}]
    test = {"nodeid": text, "outcome": "failed", "detail": text, "transcripts": [{"label": text, "entries": entries}]}
    page = render_html_report(sample_report(target=text, clauses=[clause_row("MST-5", "failed", text, [test])]))
    assert {tag for tag, _ in _tags(page)} <= ALLOWED_TAGS
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", page)


def test_the_page_needs_nothing_else() -> None:
    page = render_html_report(sample_report())
    assert not re.search(r"(src|href)\s*=\s*\"(https?:|//)", page)
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page  # a browser fetches nothing for it either


def test_a_long_frame_is_shown_by_its_head_and_length() -> None:
    page = render_html_report(sample_report())
    big = len(frame(MSG("x" * 60000)))
    assert f"frame of {big - 2} bytes of payload" in page
    assert f"{big - HEX_HEAD} more bytes" in page
    assert f"{big - HEX_MORE - 64} bytes not shown" in page
    assert f"the whole value ({len(MSG('x' * 60000).describe(LINE_LIMIT))} characters)" in page
    assert len(page) < 120_000, len(page)  # the 60 KB frame, its hex and its value, all bounded


def test_a_long_transcript_is_cut() -> None:
    entries = [{"direction": "note", "at": i * 0.001, "text": f"event {i}."} for i in range(ENTRY_LIMIT + 50)]
    page = render_html_report(_one_transcript(entries))
    assert "50 later entries are not shown" in page
    assert f"event {ENTRY_LIMIT - 1}." in page and f"event {ENTRY_LIMIT}." not in page


def test_a_flood_of_frames_is_cut() -> None:
    page = render_html_report(_one_transcript([entry("received", 0.0, 0, b"\x00\x00" * 32768)]))
    assert f"{32768 - FRAME_LIMIT} more frames are not shown" in page
    assert page.count('class="frame received"') == FRAME_LIMIT
    assert len(page) < 1_000_000


def test_an_interrupted_run_says_so() -> None:
    page = render_html_report(sample_report(interrupted=True, exit_status=2))
    assert "Interrupted: the run was cut short" in page and "<b>yes</b>: the run was cut short" in page
    assert "2 (the run was interrupted)" in page


def test_an_inconclusive_run_says_so_and_links_its_clauses() -> None:
    page = render_html_report(sample_report(exit_status=5))
    assert "Inconclusive: nothing failed, but a clause that counts could not be decided" in page
    assert "5 (inconclusive)" in page
    assert 'failed: <a href="#clause-MST-3">MST-3</a> · inconclusive: <a href="#clause-MST-7">MST-7</a>' in page


def test_a_conforming_run_and_a_malformed_report_render() -> None:
    clauses = [clause_row("FRM-1", "passed", "ok", [])]
    page = render_html_report(sample_report(exit_status=0, clauses=clauses, summary={}))
    assert "The target conforms" in page and "No clause failed" in page
    odd = {"schema": 99, "clauses": [{"id": "NOPE-1", "outcome": "failed", "tests": [{"transcripts": [
        {"entries": [{"direction": "sent", "hex": "zz"}, {"direction": "received", "offset": "x", "hex": "0100"}, 7]}]}]}]}
    page = render_html_report(odd)
    assert "schema 99" in page and "the clause text is not available: no clause" in page
    assert "not valid hex" in page
    with pytest.raises(TypeError):
        render_html_report([])  # type: ignore[arg-type]


def test_main_converts_a_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    source = tmp_path / "report.json"
    source.write_text(json.dumps(sample_report()), encoding="utf-8")
    assert main([str(source), str(tmp_path / "r.html")]) == 0
    assert "The target does not conform" in (tmp_path / "r.html").read_text(encoding="utf-8")
    assert main([str(tmp_path / "missing.json"), str(tmp_path / "x.html")]) == 2
    assert "missing.json" in capsys.readouterr().err


# --- in a browser ------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "headless Chromium is needed to check the HTML report: `make test` installs Debian's `chromium` "
        "when run as root; otherwise install it (apt-get install chromium)"
    )


def _run_chromium(*args: str) -> "subprocess.CompletedProcess[str]":
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--hide-scrollbars", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=180, env={**os.environ, "HOME": profile})


def test_chromium_renders_the_summary_and_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "conformance-report-sample.html"
    write_html_report(page, sample_report())

    dom = _run_chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    text = re.sub(r"\s+", " ", text)
    for shown in ("SkyLLH cluster protocol conformance", "The target does not conform", "exit status 1 (a clause failed)",
                  "MST-3 · MUST · An invalid first frame gets no ACK", "ACK sent after an invalid first frame",
                  "refused: ENC-1 at payload offset 0", "ShutdownCN()"):
        assert shown in text, shown
    assert "<script" not in dom.stdout  # the hostile markup stayed text in the browser's DOM too

    screenshot = ARTIFACTS / "conformance-report-sample.png"
    screenshot.unlink(missing_ok=True)
    shot = _run_chromium(f"--screenshot={screenshot}", "--window-size=1280,2200", page.as_uri())
    assert shot.returncode == 0, shot.stderr[-2000:]
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 2200)
    with capsys.disabled():  # the artifact's path, even when output is captured
        print(f"\nHTML report screenshot: {screenshot}\nHTML report: {page}")
