"""The skyllh-cluster command: in-process through main(), and as a subprocess."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
from master_peers import (
    GOLDEN_ACK,
    GOLDEN_SHUTDOWN,
    WAIT,
    Background,
    RawNode,
    expected_node_output,
    finish,
    msg_frame,
    start_compute_node,
    start_master_cli,
    subprocess_env,
    wait_exit,
    wait_for,
)

from skyllh_cluster import cli
from skyllh_cluster.commands import MSG
from skyllh_cluster.master.server import MasterServer
from skyllh_cluster.scenario import SCENARIO_PAYLOADS

SCENARIO_BYTES = GOLDEN_ACK + b"".join(msg_frame(p) for p in SCENARIO_PAYLOADS) + GOLDEN_SHUTDOWN


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def connect_when_listening(port: int) -> RawNode:
    def attempt():
        try:
            return RawNode(("127.0.0.1", port))
        except ConnectionRefusedError:
            return None

    return wait_for(attempt, "the master to listen")


def run_master(monkeypatch, argv, stdin_text, node_actions):
    """main(["master", ...]) in this thread; node_actions run on threads against its port."""
    port = free_port()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin_text))
    calls = [Background(lambda action=action: action(connect_when_listening(port))) for action in node_actions]
    status = cli.main(["master", "--host", "127.0.0.1", "--port", str(port), *argv])
    return status, [call.result() for call in calls]


# --- help ----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["master", "--help"], ["compute-node", "--help"]])
def test_help_reads_well_and_exits_0(argv):
    done = subprocess.run(
        [sys.executable, "-m", "skyllh_cluster", *argv],
        capture_output=True,
        encoding="utf-8",
        env=subprocess_env(),
        timeout=60,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("usage: skyllh-cluster")
    if argv[0] == "compute-node":
        assert "MASTER_ADDR" in done.stdout and "--live-time" in done.stdout
    else:
        assert "examples:" in done.stdout and "exit status of master" in done.stdout


def test_a_bad_command_line_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["master", "--port", "1"])
    assert info.value.code == 2
    assert cli.main(["master", "--host", "127.0.0.1", "--port", "0", "--n-cn", "-1"]) == cli.EXIT_USAGE


# --- master: stdin broadcast ------------------------------------------------------------------


def registered_reader(node: RawNode) -> bytes:
    node.register()
    return node.read_to_eof()


def test_master_broadcasts_each_stdin_line_then_shuts_down(monkeypatch, capsys):
    status, received = run_master(
        monkeypatch, ["--n-cn", "2"], "line one\nünïcødé\n\nlast without newline", [registered_reader] * 2
    )
    assert status == cli.EXIT_OK
    expected = GOLDEN_ACK + b"".join(msg_frame(m) for m in ["line one", "ünïcødé", "", "last without newline"])
    assert received == [expected + GOLDEN_SHUTDOWN] * 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("listening on 127.0.0.1:")
    assert err[1].startswith("registered 1/2 (127.0.0.1:") and err[2].startswith("registered 2/2 (")
    assert err[3:] == ["all 2 compute nodes registered", "sent ShutdownCN to 2 of 2 compute nodes"]


class GatedLines(io.StringIO):
    """Standard input whose lines come only once ``gate`` is set (bounded wait)."""

    def __init__(self, text: str, gate: threading.Event) -> None:
        super().__init__(text)
        self.gate = gate

    def __iter__(self):
        assert self.gate.wait(WAIT)
        return super().__iter__()


def test_master_reports_a_lost_node_and_exits_1(monkeypatch, capsys):
    other_registered, left = threading.Event(), threading.Event()

    def leaves(node: RawNode) -> bytes:
        node.register()
        ack = node.read_exact(len(GOLDEN_ACK))
        assert other_registered.wait(WAIT)
        node.close()
        left.set()
        return ack

    def stays(node: RawNode) -> bytes:
        node.register()
        ack = node.read_exact(len(GOLDEN_ACK))
        other_registered.set()
        return ack + node.read_to_eof()

    port = free_port()
    monkeypatch.setattr(sys, "stdin", GatedLines("hello\n", left))
    calls = [Background(lambda a=action: a(connect_when_listening(port))) for action in (leaves, stays)]
    status = cli.main(["master", "--host", "127.0.0.1", "--port", str(port), "--n-cn", "2"])
    received = [call.result() for call in calls]
    assert status == cli.EXIT_NODES_FAILED
    assert received == [GOLDEN_ACK, GOLDEN_ACK + msg_frame("hello") + GOLDEN_SHUTDOWN]
    err = capsys.readouterr().err
    assert "MSG: compute node 127.0.0.1:" in err and "failed:" in err
    assert "sent ShutdownCN to 1 of 2 compute nodes" in err


def test_a_line_too_long_for_a_frame_is_not_sent(monkeypatch, capsys):
    status, received = run_master(monkeypatch, ["--n-cn", "1"], "x" * 70000 + "\nok\n", [registered_reader])
    assert status == cli.EXIT_NODES_FAILED
    assert received == [GOLDEN_ACK + msg_frame("ok") + GOLDEN_SHUTDOWN]
    assert "line not sent: [FRM-2]" in capsys.readouterr().err


def test_registration_timeout_exits_3_and_shuts_down_who_came(monkeypatch, capsys):
    status, received = run_master(monkeypatch, ["--n-cn", "2", "--timeout", "0.5"], "", [registered_reader])
    assert status == cli.EXIT_REGISTRATION_TIMEOUT
    assert received == [GOLDEN_ACK + GOLDEN_SHUTDOWN]
    assert "only 1 of 2 compute nodes registered within 0.5 s" in capsys.readouterr().err


def test_expired_nodes_are_reported(monkeypatch, capsys):
    def expired(node: RawNode) -> bytes:
        node.register(start=1, live=1)
        return node.read_to_eof()

    status, received = run_master(monkeypatch, ["--n-cn", "1"], "x\n", [expired])
    assert status == cli.EXIT_OK
    assert received == [GOLDEN_ACK]
    assert "dropped, its live time has passed" in capsys.readouterr().err


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(MasterServer, "register", interrupted)
    status = cli.main(["master", "--host", "127.0.0.1", "--port", "0", "--n-cn", "1", "--log-level", "error"])
    assert status == cli.EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_one_updating_line():
    stream = _Terminal()
    progress = cli._Progress(2, stream)
    progress(None, 1)  # type: ignore[arg-type]
    progress(None, 2)  # type: ignore[arg-type]
    assert stream.getvalue() == "\rregistered 1/2\rregistered 2/2\n"


def test_progress_reports_about_every_percent():
    stream = io.StringIO()
    progress = cli._Progress(1000, stream)

    class Node:
        key = "k"

    for count in range(1, 1001):
        progress(Node(), count)  # type: ignore[arg-type]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 100 and lines[-1] == "registered 1000/1000 (k)"


# --- master: the conformance scenario -----------------------------------------------------------


def test_scenario_mode_in_process_until_sigterm(capsys):
    port = free_port()
    readers = [Background(lambda: registered_reader(connect_when_listening(port))) for _ in range(2)]

    def stop_when_served():
        for reader in readers:
            reader.result()
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the CLI: the scenario stops

    stopper = Background(stop_when_served)
    status = cli.main(["master", "--scenario", "conformance", "--host", "127.0.0.1", "--port", str(port)])
    stopper.result()
    assert status == cli.EXIT_OK
    assert [reader.result() for reader in readers] == [SCENARIO_BYTES] * 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    assert capsys.readouterr().err.splitlines()[-1] == "stopped after serving 2 compute node(s)"


def test_scenario_mode_subprocess_port_0_two_concurrent_nodes_then_sigterm():
    master, stderr = start_master_cli("--scenario", "conformance", "--host", "127.0.0.1", "--port", "0")
    try:
        port = int(stderr.wait_for(r"^listening on 127\.0\.0\.1:(\d+)$").group(1))
        assert port != 0
        nodes = [start_compute_node(kind, "127.0.0.1", port) for kind in ("original", "cli")]
        outcomes = [finish(node) for node in nodes]
        master.send_signal(signal.SIGTERM)
        returncode = wait_exit(master)
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
    assert returncode == 0
    assert stderr.rest()[-1] == "stopped after serving 2 compute node(s)"
    for kind, (node_returncode, out, err) in zip(("original", "cli"), outcomes):
        assert node_returncode == 0, err
        assert out.splitlines() == expected_node_output("127.0.0.1", port, 60, SCENARIO_PAYLOADS, kind)


# --- compute-node ----------------------------------------------------------------------------------


def test_compute_node_subcommand_exits_0_on_shutdown(capsys):
    with MasterServer(registration_timeout=WAIT) as server:
        host, port = server.listen("127.0.0.1", 0)
        serving = Background(lambda: server.serve_script([]))
        status = cli.main(["compute-node", host, str(port), "--live-time", "30"])
        server.stop()
        serving.result()
    assert status == 0
    assert capsys.readouterr().out.splitlines() == expected_node_output(host, port, 30, [], "cli")


def test_compute_node_subcommand_exits_1_without_a_master(capsys):
    assert cli.main(["compute-node", "127.0.0.1", str(free_port()), "--live-time", "5"]) == 1
    assert "compute node:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, complaint",
    [
        (["127.0.0.1", "70000"], "argument MASTER_PORT: '70000' is not a TCP port number (1 to 65535)"),
        (["127.0.0.1", "9999", "--live-time", "-1"], "argument --live-time: the live time must not be negative"),
    ],
)
def test_compute_node_subcommand_usage_errors_exit_2(capsys, argv, complaint):
    with pytest.raises(SystemExit) as info:
        cli.main(["compute-node", *argv])
    assert info.value.code == cli.EXIT_USAGE
    assert capsys.readouterr().err.splitlines()[-1] == f"skyllh-cluster compute-node: error: {complaint}"


def test_compute_node_subcommand_with_live_time_0_exits_1_without_connecting(capsys):
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        assert cli.main(["compute-node", "127.0.0.1", str(port), "--live-time", "0"]) == 1
        listening.setblocking(False)
        with pytest.raises(BlockingIOError):
            listening.accept()
    assert capsys.readouterr().err == (
        f"compute node: the live time of 0 seconds is over at the start; not connecting to 127.0.0.1:{port}\n"
    )


def test_compute_node_subcommand_legacy_output(capsys):
    with MasterServer(registration_timeout=WAIT) as server:
        host, port = server.listen("127.0.0.1", 0)
        serving = Background(lambda: server.serve_script([MSG(p) for p in SCENARIO_PAYLOADS]))
        status = cli.main(["compute-node", host, str(port), "--live-time", "30", "--output", "legacy"])
        server.stop()
        serving.result()
    assert status == 0
    assert capsys.readouterr().out.splitlines() == expected_node_output(host, port, 30, SCENARIO_PAYLOADS, "original")


def test_console_script_module_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "skyllh_cluster", "--version"],
        capture_output=True,
        encoding="utf-8",
        env=subprocess_env(),
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip().startswith("skyllh-cluster ")



def test_the_default_host_is_what_the_original_binds(monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(socket, "getfqdn", lambda name="": asked.append(name) or "127.0.0.1")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert cli.main(["master", "--port", "0", "--n-cn", "0"]) == cli.EXIT_OK
    assert asked == [socket.gethostname()]
    assert capsys.readouterr().err.startswith("listening on 127.0.0.1:")


def test_a_node_lost_before_the_shutdown_exits_1(monkeypatch, capsys):
    left = threading.Event()

    def leaves(node: RawNode) -> bytes:
        node.register()
        ack = node.read_exact(len(GOLDEN_ACK))
        node.close()
        left.set()
        return ack

    port = free_port()
    monkeypatch.setattr(sys, "stdin", GatedLines("", left))
    call = Background(lambda: leaves(connect_when_listening(port)))
    status = cli.main(["master", "--host", "127.0.0.1", "--port", str(port), "--n-cn", "1"])
    assert call.result() == GOLDEN_ACK
    assert status == cli.EXIT_NODES_FAILED
    assert "ShutdownCN: compute node 127.0.0.1:" in capsys.readouterr().err


# --- master: errors a user can cause (one line, an exit status that is no verdict) ---------------


def run_master_subprocess(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skyllh_cluster", "master", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        encoding="utf-8",
        env=subprocess_env(),
        timeout=60,
    )


@pytest.fixture
def port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def assert_one_line_error(done: subprocess.CompletedProcess, status: int, says: str) -> None:
    assert done.returncode == status, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("skyllh-cluster master: "), done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_exit_statuses_are_distinct_and_documented():
    statuses = [cli.EXIT_OK, cli.EXIT_NODES_FAILED, cli.EXIT_USAGE, cli.EXIT_REGISTRATION_TIMEOUT,
                cli.EXIT_CANNOT_LISTEN, cli.EXIT_INTERNAL_ERROR, cli.EXIT_INTERRUPTED]
    assert len(set(statuses)) == len(statuses)
    help_text = " ".join(cli.build_parser().format_help().split())
    for status in statuses:
        assert f" {status} " in help_text or f"master: {status} " in help_text


def test_a_port_in_use_is_one_line_and_exit_4(port_in_use):
    done = run_master_subprocess("--n-cn", "1", "--host", "127.0.0.1", "--port", str(port_in_use))
    assert_one_line_error(done, cli.EXIT_CANNOT_LISTEN, "Address already in use")


def test_an_unknown_host_is_one_line_and_exit_4():
    done = run_master_subprocess("--n-cn", "1", "--host", "nosuchhost.invalid", "--port", "0")
    assert_one_line_error(done, cli.EXIT_CANNOT_LISTEN, "unknown host")


def test_an_address_not_of_this_host_is_one_line_and_exit_4():
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never assigned to a host.
    done = run_master_subprocess("--n-cn", "1", "--host", "192.0.2.1", "--port", "0")
    assert_one_line_error(done, cli.EXIT_CANNOT_LISTEN, "Cannot assign requested address")


@pytest.mark.parametrize(
    "option", [["--timeout", "-1"], ["--port", "70000"], ["--registration-timeout", "0"],
               ["--send-timeout", "-1"], ["--unregistered-fraction", "1.5"], ["--n-cn", "-1"]]
)
def test_a_bad_value_is_one_line_and_exit_2(option):
    args = ["--host", "127.0.0.1", *option]
    if "--n-cn" not in option:
        args = ["--n-cn", "1", *args]
    if "--port" not in option:
        args += ["--port", "0"]
    assert_one_line_error(run_master_subprocess(*args), cli.EXIT_USAGE, option[0])


def test_debug_log_level_adds_the_traceback(port_in_use):
    done = run_master_subprocess(
        "--n-cn", "1", "--host", "127.0.0.1", "--port", str(port_in_use), "--log-level", "debug"
    )
    assert done.returncode == cli.EXIT_CANNOT_LISTEN
    assert "Traceback" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("skyllh-cluster master: cannot listen on")


def test_a_lost_node_is_one_line_on_stderr():
    master, stderr = start_master_cli("--n-cn", "2", "--host", "127.0.0.1", "--port", "0")
    try:
        port = int(stderr.wait_for(r"^listening on 127\.0\.0\.1:(\d+)$").group(1))
        leaver = RawNode(("127.0.0.1", port)).register()
        stayer = RawNode(("127.0.0.1", port)).register()
        stderr.wait_for("^all 2 compute nodes registered$")
        assert leaver.read_exact(len(GOLDEN_ACK)) == GOLDEN_ACK
        lost = leaver.key
        leaver.close()
        master.stdin.write("hello\n")
        master.stdin.close()
        assert stayer.read_to_eof() == GOLDEN_ACK + msg_frame("hello") + GOLDEN_SHUTDOWN
        assert wait_exit(master) == cli.EXIT_NODES_FAILED
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()
    lines = stderr.rest()
    after_registration = lines[lines.index("all 2 compute nodes registered") + 1 :]
    about_lost = [line for line in after_registration if lost in line]
    assert len(about_lost) == 1, about_lost
    assert "failed" in about_lost[0]
