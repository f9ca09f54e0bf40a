"""A smoke run of the codec fuzzer (``make fuzz`` runs 10^6 inputs): a few thousand, no finding."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_fuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_codec", ROOT / "scripts" / "fuzz_codec.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_few_thousand_fuzzed_payloads_find_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    fuzzer = load_fuzzer()
    assert fuzzer.main(["--count", "3000", "--jobs", "1", "--seed", "11"]) == 0
    assert "3000 inputs" in capsys.readouterr().out


def test_the_restricted_unpickler_resolves_nothing_else() -> None:
    fuzzer = load_fuzzer()
    with pytest.raises(Exception, match="not allowed"):
        fuzzer.inert_loads(b"\x80\x02cos\nsystem\n)R.")
    with pytest.raises(Exception, match="not allowed"):
        fuzzer.inert_loads(b"\x80\x02cbuiltins\neval\n)R.")


def test_the_fuzzer_reports_a_planted_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    fuzzer = load_fuzzer()

    def broken(payload: bytes) -> None:
        raise ValueError("planted")

    monkeypatch.setattr(fuzzer, "loads", broken)
    assert "ValueError escaped" in fuzzer.check(b"\x80\x04N.", 1.0)


def test_a_memo_index_beyond_pickles_array_is_no_finding() -> None:
    fuzzer = load_fuzzer()
    ack = bytes.fromhex("8c17736b796c6c682e636c75737465722e636f6d6d616e6473948c0341434b9493942981")
    assert fuzzer.check(b"\x80\x04" + ack + b"r\xff\xff\xff\x7f.", 5.0) == "valid"
