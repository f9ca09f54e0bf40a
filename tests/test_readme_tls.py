"""The README's TLS example, taken literally: its commands run on loopback, and the kit passes its master.

The ``sh`` blocks of README.md's section "TLS and access control" are read
as they are written: the ``openssl`` commands that make the CA and the
certificates, the master's command line, and the Slurm job script with its
``srun`` line.  They run in bash with only these substitutions, because the
example names a cluster that this machine is not:

* ``login1.example.org`` becomes ``localhost``: the master's certificate is
  made for ``localhost``, the master listens there, and the nodes (and the
  kit) connect to ``localhost``;
* the allowed network ``10.1.0.0/16`` becomes ``127.0.0.0/8``;
* port ``9999`` becomes a free port;
* ``~`` and ``$HOME`` are a temporary home directory (the example's
  ``~/skyllh-tls`` is made there);
* ``--n-cn 100`` becomes ``--n-cn 2``, the job array runs as two tasks, and
  ``messages.txt`` holds two lines;
* ``srun`` runs its arguments (no Slurm here);
* for the kit, the master serves the conformance scenario instead of
  ``--n-cn 100 --timeout 3600 ... < messages.txt`` (the kit checks a master
  that runs the scenario, spec section 9); the rest of its command line,
  TLS and ``--allow`` included, is the README's.

So a README edit that breaks the example (a wrong openssl option, a
certificate the master or the nodes refuse, an option the CLI does not take)
fails here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from skyllh_cluster.conformance.drivers.process import MasterProcess, address_pattern
from skyllh_cluster.wire.vector_json import value_from_json

from kit_runs import run_kit

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("bash") is None, reason="needs openssl and bash"),
]

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "### TLS and access control"
BIN = Path(sys.executable).parent


def tls_section() -> str:
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    rest = text.split(SECTION, 1)[1]
    return re.split(r"^#{2,3} ", rest, maxsplit=1, flags=re.M)[0]


def sh_blocks() -> Dict[str, str]:
    """The section's sh blocks by role: "pki", "master" and "job"."""
    blocks = re.findall(r"^```sh\n(.*?)^```", tls_section(), flags=re.S | re.M)
    found: Dict[str, str] = {}
    for block in blocks:
        if "openssl req -x509" in block:
            found["pki"] = block
        elif block.lstrip().startswith("skyllh-cluster master"):
            found["master"] = block
        elif re.search(r"^srun ", block, flags=re.M):
            found["job"] = block
    assert set(found) == {"pki", "master", "job"}, f"expected the PKI, master and job blocks, got {sorted(found)}"
    return found


def substitute(text: str, port: int) -> str:
    text = text.replace("login1.example.org", "localhost").replace("10.1.0.0/16", "127.0.0.0/8")
    return re.sub(r"\b9999\b", str(port), text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bash(script: str, home: Path, env: Dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=home, env=env, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def env(home: Path) -> Dict[str, str]:
    return {**os.environ, "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def pki(home: Path, env: Dict[str, str]) -> Path:
    done = bash("set -e\n" + substitute(sh_blocks()["pki"], 0), home, env, timeout=120)
    assert done.returncode == 0, f"the README's openssl commands failed:\n{done.stderr[-2000:]}"
    directory = home / "skyllh-tls"
    for name in ("ca.pem", "master.pem", "master.key", "node.pem", "node.key"):
        assert (directory / name).is_file(), name
    return directory


def master_argv(home: Path, port: int, *, scenario: bool) -> List[str]:
    """The README's master in bash, in the temporary home (``exec``: the master has the pid the driver stops)."""
    setup = f"export HOME={shlex.quote(str(home))} PATH={shlex.quote(str(BIN))}:\"$PATH\"; cd \"$HOME\"; "
    return ["bash", "-c", setup + master_command(port, scenario=scenario)]


def master_command(port: int, *, scenario: bool) -> str:
    command = substitute(sh_blocks()["master"], port).replace("\\\n", " ")
    assert "< messages.txt" in command
    if scenario:
        command = command.replace("< messages.txt", "")
        command, count = re.subn(r"--n-cn \d+ --timeout \d+", "--scenario conformance", command)
        assert count == 1, "the README's master command has no --n-cn N --timeout S to replace"
    else:
        command = re.sub(r"--n-cn \d+", "--n-cn 2", command)
    return "exec " + " ".join(command.split())


def test_the_section_holds_the_three_blocks() -> None:
    blocks = sh_blocks()
    assert "--tls-require-client-cert" in blocks["master"] and "--allow" in blocks["master"]
    assert "--tls-ca" in blocks["job"] and "--tls-cert" in blocks["job"]


def test_the_kit_passes_the_readme_master(pki: Path, home: Path, env: Dict[str, str]) -> None:
    port = free_port()
    with MasterProcess(master_argv(home, port, scenario=True), address_pattern("listening on")) as master:
        assert master.proc is not None
        target = f"localhost:{port}"
        run = run_kit(["--target", target, "--strict-conformance",
                       "--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "node.pem"), "--tls-key", str(pki / "node.key")])
    assert run.status == 0, run.output[-4000:]
    outcomes = run.outcomes()
    assert all(outcomes[c] == "passed" for c in ("TLS-2", "TLS-4", "TLS-5", "TLS-6", "MST-1", "SCN-1")), outcomes


def test_the_readme_master_serves_the_readme_job_script(pki: Path, home: Path, env: Dict[str, str]) -> None:
    port = free_port()
    (home / "messages.txt").write_text("first line\nsecond line\n")
    job = "srun() { \"$@\"; }\n" + substitute(sh_blocks()["job"], port)
    job_env = {**env, "MASTER_HOST": "localhost", "MASTER_PORT": str(port)}
    with MasterProcess(master_argv(home, port, scenario=False), address_pattern("listening on")) as master:
        assert master.proc is not None
        tasks: List[subprocess.Popen] = [
            subprocess.Popen(["bash", "-c", job], cwd=home, env=job_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = []
        for task in tasks:
            try:
                out, err = task.communicate(timeout=120)
            finally:
                if task.poll() is None:
                    task.kill()
            outputs.append((task.returncode, out, err))
        status = master.proc.wait(timeout=60)
    for code, out, err in outputs:
        assert code == 0, err[-2000:]
        values = [value_from_json(json.loads(line[4:])) for line in out.splitlines() if line.startswith("MSG ")]
        assert values == ["first line", "second line"], out
    assert status == 0
