"""The package as pip builds and installs it: the spec inside, clean metadata, no warnings.

A user who installed the wheel has no clone: the clause text of a verdict must
come from the wheel itself.  These tests build the wheel as ``pip`` does (an
isolated build with the setuptools that pyproject.toml asks for), read its
file list and metadata, install it into a fresh virtualenv and look a clause
up there, away from the checkout.
"""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from wheel_builds import one_build_at_a_time

REPO = Path(__file__).resolve().parent.parent
SPEC_DOCS = ("README.md", "protocol.md", "encoding-profile.md", "state-machines.md", "deviations.md", "tls-profile.md")
SUPPORTED_PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")


def _run(*command: str, cwd: Path) -> "subprocess.CompletedProcess[str]":
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_QUIET")}
    return subprocess.run(command, cwd=str(cwd), capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Path, str]]:
    """The wheel ``pip wheel --no-deps .`` builds, and everything pip printed while building it."""
    out = tmp_path_factory.mktemp("wheel")
    with one_build_at_a_time():
        result = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(REPO), cwd=out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = out.glob("skyllh_cluster-*.whl")
    yield wheel, result.stdout + result.stderr


def test_the_wheel_carries_the_spec(built: Tuple[Path, str]) -> None:
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    for doc in SPEC_DOCS:
        packed = zipfile.ZipFile(wheel).read(f"skyllh_cluster/spec/{doc}")
        assert packed == (REPO / "spec" / doc).read_bytes(), doc
    vectors = {p.name for p in (REPO / "spec" / "vectors").iterdir() if p.suffix in (".json", ".md")}
    assert vectors and {f"skyllh_cluster/spec/vectors/{v}" for v in vectors} <= names
    assert {"skyllh_cluster/py.typed", "skyllh_cluster/conformance/explain.py",
            "skyllh_cluster/conformance/html_report.py"} <= names


def test_the_metadata_has_an_spdx_license_urls_and_the_pythons(built: Tuple[Path, str]) -> None:
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    assert metadata["License-Expression"] == "GPL-3.0-or-later"
    assert metadata["License"] is None  # the free-text field the TOML table wrote
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert urls and all(u.startswith("https://") for u in urls.values())
    assert metadata["Requires-Python"] == ">=3.9"
    classifiers = metadata.get_all("Classifier")
    for version in SUPPORTED_PYTHONS:
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression, not both


def test_building_prints_no_warning_box(built: Tuple[Path, str]) -> None:
    _, output = built
    assert "!!" not in output, output[-3000:]
    assert "deprecat" not in output.lower(), output[-3000:]
    assert "BuildBackendWarning" not in output and "SetuptoolsDeprecationWarning" not in output


def test_the_installed_wheel_explains_a_clause_from_its_own_spec(built: Tuple[Path, str], tmp_path: Path) -> None:
    wheel, _ = built
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # --no-deps: the lookup and the HTML page need nothing but the package itself.
    installed = _run(str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel), cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    script = (
        "from skyllh_cluster.conformance.explain import clause_location, clause_text, spec_dir\n"
        "from skyllh_cluster.conformance.html_report import render_html_report\n"
        "print(spec_dir())\n"
        "print(clause_location('CN-7'))\n"
        "print(clause_text('CN-7'))\n"
        "report = {'schema': 2, 'exit_status': 1, 'clauses': [{'id': 'CN-7', 'outcome': 'failed', 'tests': []}]}\n"
        "print('page shows the clause:', 'within 2 seconds' in render_html_report(report))\n"
        "print(clause_location('TLS-4'))\n"
    )
    # Run away from the checkout, so that nothing of it can be imported.
    result = _run(str(python), "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    site_spec = result.stdout.splitlines()[0]
    assert site_spec.endswith(os.path.join("site-packages", "skyllh_cluster", "spec")), site_spec
    assert site_spec.startswith(str(env_dir))
    assert f"(installed: {site_spec}{os.sep}protocol.md, line " in result.stdout
    assert "CN-7 · SHOULD · The compute node closes promptly after ShutdownCN, within 2 seconds" in result.stdout
    assert "page shows the clause: True" in result.stdout
    assert f"(installed: {site_spec}{os.sep}tls-profile.md, line " in result.stdout


def _make_dry_run(*args: str) -> "subprocess.CompletedProcess[str]":
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "MAKEFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "-n", *args], cwd=str(REPO), capture_output=True, text=True, timeout=60, env=env)


def test_each_interpreter_gets_its_own_virtualenv() -> None:
    version = "%d.%d" % sys.version_info[:2]
    default = _make_dry_run("test")
    assert default.returncode == 0, default.stderr
    pytest_line = r"^{}/bin/python -m pytest( -\S+( \w+)?)* tests$"  # with pytest-xdist's options, if any
    assert re.search(pytest_line.format(r"\.venv"), default.stdout, re.M), default.stdout
    chosen = _make_dry_run("test", f"PYTHON={sys.executable}")
    assert chosen.returncode == 0, chosen.stderr
    assert re.search(pytest_line.format(re.escape(f".venv-{version}")), chosen.stdout, re.M), chosen.stdout
    assert not re.search(r"(^|\s)\.venv/", chosen.stdout), chosen.stdout  # nothing of the default one
    missing = _make_dry_run("test", "PYTHON=python3.0-not-installed")
    assert missing.returncode != 0
    assert "PYTHON=python3.0-not-installed does not run here" in missing.stderr
