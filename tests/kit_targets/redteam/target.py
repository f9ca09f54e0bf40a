"""One red-team variant of the independent implementation, chosen by ``--variant``.

    python target.py --variant NAME [the master's or the compute node's own arguments]

A master variant prints ``listening HOST:PORT`` and serves like
``independent/master.py``; a compute-node variant takes ``HOST PORT
--live-time S`` like ``independent/compute_node.py``.  Each variant patches
that implementation in one place (see :data:`VARIANTS`): a faulty variant
breaks the clauses listed and nothing else; a correct variant (``ok-*``)
behaves unusually but within the spec, and the kit must pass it.

The faults are the kind an implementer writes by accident, chosen to differ
from those of ``faulty_master.py``, ``faulty_cn.py`` and the independent
programs' ``--fault``: a wrong prefix only for long frames, a check that
looks at the wrong moment, a rendering that loses what the spec keeps.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kit_targets.independent import compute_node as icn  # noqa: E402
from kit_targets.independent import decoder as idec  # noqa: E402
from kit_targets.independent import master as imaster  # noqa: E402
from kit_targets.independent.framing import frame as good_frame  # noqa: E402
from kit_targets.independent.notation import msg_line  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """One row of the table: its role, what it does, and the kit's expected verdict."""

    role: str  #: "master" or "cn"
    how: str
    breaks: FrozenSet[str]  #: clauses a correct kit fails; empty for a correct variant
    apply: Callable[[], None]
    strict: bool = True  #: run the kit with --strict-conformance
    narrow: bool = True  #: run only the checks of ``breaks`` (a fault other checks trip over needs the full run)


# -- master faults -----------------------------------------------------------------------


def _frame_big_endian_when_long(payload: bytes) -> bytes:
    """FRM-1 only past 255 bytes: a prefix written high byte first, as `>H` slipped in for long frames."""
    if len(payload) > 255:
        return struct.pack(">H", len(payload)) + payload
    return good_frame(payload)


def m_frm1_long_be() -> None:
    imaster.frame = _frame_big_endian_when_long


def m_expired_served_when_several() -> None:
    """MST-9: the expiry check is skipped when more than one connection is open (a bug in a shared path)."""
    register, on_live_time = imaster.Connection.register, imaster.Connection.on_live_time
    on_all_sent = imaster.Connection.on_all_sent

    def several(conn: imaster.Connection) -> bool:
        return len(conn.server.connections) > 1

    def patched_register(self: imaster.Connection, command: idec.Command) -> None:
        register(self, command)
        self.served_expired = several(self) and len(self.outgoing) < len(self.server.stream)  # type: ignore[attr-defined]
        if self.served_expired:  # type: ignore[attr-defined]
            self.outgoing = bytearray(self.server.stream)

    def patched_live_time(self: imaster.Connection) -> None:
        if not several(self):
            on_live_time(self)

    def patched_all_sent(self: imaster.Connection) -> None:
        if not getattr(self, "served_expired", False):
            return on_all_sent(self)
        self.server.want_write(self, False)
        self.state = "SHUT_DOWN"
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return self.close()
        self.deadline = time.monotonic() + imaster.LINGER

    imaster.Connection.register = patched_register
    imaster.Connection.on_live_time = patched_live_time
    imaster.Connection.on_all_sent = patched_all_sent


def _scenario_with_shutdown_before(predicate: Callable[[bytes], bool]) -> Callable[[Optional[str]], bytes]:
    def stream(fault: Optional[str]) -> bytes:
        frames = [imaster.frame(imaster.encoder.ack())]
        shutdown = imaster.frame(imaster.encoder.shutdown())
        late: List[bytes] = []
        for value in imaster.SCENARIO_PAYLOADS:
            payload = imaster.encoder.msg(value)
            (late if predicate(payload) else frames).append(imaster.frame(payload))
        return b"".join(frames + ([shutdown] + late if late else [shutdown]))

    return stream


def m_shutdown_before_65535() -> None:
    """SCN-1/MST-5, only for a MSG of exactly 65535 bytes (an off-by-one in a 'fits the frame' check)."""
    imaster.scenario_stream = _scenario_with_shutdown_before(lambda p: len(p) == 65535)


def m_shutdown_before_large() -> None:
    """SCN-1/MST-5: a MSG over 60000 bytes goes out after the ShutdownCN (queued on a slower path)."""
    imaster.scenario_stream = _scenario_with_shutdown_before(lambda p: len(p) > 60000)


def _positional_register_state(state: Dict[Any, Any]) -> str:
    if len(state) != 2 or any(type(v) is not int for v in state.values()):
        return "RegisterCN state must hold two ints"
    return ""


def m_regcn_key_names_ignored() -> None:
    """CMD-3: the RegisterCN parser takes the two ints in order and never looks at the key names."""
    idec._check_register_state = _positional_register_state

    def register(self: imaster.Connection, command: idec.Command) -> None:
        assert command.state is not None
        start, live = list(command.state.values())
        self.expires_at = start + live
        self.deadline = None
        self.outgoing += self.server.stream if time.time() < self.expires_at else imaster.frame(imaster.encoder.ack())
        self.ack_unsent = len(imaster.frame(imaster.encoder.ack()))
        self.state = "SERVING"
        self.server.want_write(self, True)

    imaster.Connection.register = register


def _ordered_register_state(state: Dict[Any, Any]) -> str:
    return idec.__dict__["_original_check_register_state"](state) or (
        "" if list(state) == list(idec.REGISTER_KEYS) else "RegisterCN keys out of order"
    )


def m_regcn_key_order_required() -> None:
    """ENC-8/MST-1: a RegisterCN with _cn_live_time first is refused (the parser expects the canonical order)."""
    idec.__dict__["_original_check_register_state"] = idec._check_register_state
    idec._check_register_state = _ordered_register_state


def m_times_int32_only() -> None:
    """ENC-8/MST-1: times written as LONG1 or LONG4 are refused (the parser knows what CPython writes today, BININT)."""

    def refuse(_: bytes) -> int:
        raise idec.Refusal("ENC-2", 0, "LONG1/LONG4 times are not supported")

    idec.SCALARS["LONG1"] = idec.SCALARS["LONG4"] = refuse


def m_setitem_refused() -> None:
    """ENC-8/MST-1: a state written with SETITEM instead of MARK ... SETITEMS is refused."""

    def op(self: Any, _: None) -> None:
        raise idec.Refusal("ENC-2", self.at, "SETITEM is not supported")

    idec._Decoder._op_SETITEM = op


def m_bytes_after_ack_ignored() -> None:
    """MST-11: bytes that arrive after the ACK are read and dropped; only bytes before the ACK are checked."""

    def on_unexpected_bytes(self: imaster.Connection, data: bytes) -> None:
        imaster.log(f"{self.peer}: ignored {len(data)} bytes after the ACK")

    imaster.Connection.on_unexpected_bytes = on_unexpected_bytes


def m_registration_deadline_per_read() -> None:
    """MST-7: the registration deadline is restarted by every read, so a trickle of bytes is never closed."""
    on_registration_bytes = imaster.Connection.on_registration_bytes

    def patched(self: imaster.Connection, data: bytes) -> None:
        self.deadline = time.monotonic() + self.server.registration_timeout
        on_registration_bytes(self, data)

    imaster.Connection.on_registration_bytes = patched


def _on_refusal(action: Callable[[idec.Refusal], None]) -> None:
    decode_first = imaster.Connection.decode_first

    def patched(self: imaster.Connection, payload: bytes) -> idec.Command:
        try:
            return decode_first(self, payload)
        except idec.Refusal as refusal:
            action(refusal)
            raise

    imaster.Connection.decode_first = patched


def m_stall_on_enc6() -> None:
    """MST-4: refusing an ENC-6 payload takes 6 s in the event loop (issue 10 F2: formatting a huge reason)."""
    _on_refusal(lambda r: time.sleep(6) if r.clause == "ENC-6" else None)


def m_exit_on_bad_utf8() -> None:
    """MST-4/ERR-1: invalid UTF-8 in a first frame escapes as an uncaught error and ends the process."""

    def action(refusal: idec.Refusal) -> None:
        if "UTF-8" in refusal.reason:
            imaster.log("UnicodeDecodeError: exiting")
            os._exit(70)

    _on_refusal(action)


# -- correct master oddities --------------------------------------------------------------


def ok_m_small_writes() -> None:
    """Writes at most 997 bytes per wake-up, so the frames of several connections interleave in time."""
    imaster.Connection.write_chunk = 997


def ok_m_ack_late() -> None:
    """Sends the ACK 0.3 to 0.8 s after the RegisterCN (a master that registers the node somewhere slow first)."""
    register, run_timers = imaster.Connection.register, imaster.Master.run_timers

    def patched_register(self: imaster.Connection, command: idec.Command) -> None:
        register(self, command)
        self.server.want_write(self, False)
        self.write_at = time.monotonic() + 0.3  # type: ignore[attr-defined]

    def patched_timers(self: imaster.Master) -> None:
        run_timers(self)
        for conn in list(self.connections):
            when = getattr(conn, "write_at", None)
            if when is not None and time.monotonic() >= when:
                conn.write_at = None  # type: ignore[attr-defined]
                if conn.state == "SERVING":
                    self.want_write(conn, True)

    imaster.Connection.register = patched_register
    imaster.Master.run_timers = patched_timers


def ok_m_close_at_once() -> None:
    """Closes the connection as soon as the ShutdownCN is written, without a half-close or a linger."""

    def on_all_sent(self: imaster.Connection) -> None:
        self.server.want_write(self, False)
        self.close()

    imaster.Connection.on_all_sent = on_all_sent


# -- compute-node faults ------------------------------------------------------------------


def _print_transformed(transform: Callable[[Any], Any]) -> None:
    def print_msg(self: icn.ComputeNode, value: Any) -> None:
        sys.stdout.write(msg_line(transform(value)) + "\n")
        sys.stdout.flush()

    icn.ComputeNode.print_msg = print_msg


def _walk(value: Any, leaf: Callable[[Any], Any], seq: Callable[[type, List[Any]], Any] = lambda t, items: t(items),
          dct: Callable[[List[Any]], Any] = dict) -> Any:
    if type(value) in (list, tuple):
        return seq(type(value), [_walk(v, leaf, seq, dct) for v in value])
    if type(value) is dict:
        return dct([(_walk(k, leaf, seq, dct), _walk(v, leaf, seq, dct)) for k, v in value.items()])
    return leaf(value)


def c_float_15_digits() -> None:
    """CN-11/VAL-4: floats go through a 15-significant-digit text form, so 0.1 + 0.2 prints as 0.3."""
    _print_transformed(lambda v: _walk(v, lambda x: float(f"{x:.15g}") if type(x) is float else x))


def c_tuple_as_list() -> None:
    """CN-11/VAL-4: tuples are printed as lists (a JSON-minded node has no tuple)."""
    _print_transformed(lambda v: _walk(v, lambda x: x, seq=lambda t, items: list(items) if t is tuple else t(items)))


def c_dict_sorted() -> None:
    """CN-11/VAL-4: dict entries printed sorted by key (json.dumps(sort_keys=True) thinking)."""
    _print_transformed(lambda v: _walk(v, lambda x: x, dct=lambda items: dict(sorted(items, key=lambda kv: repr(kv[0])))))


def c_legacy_line_for_scalars() -> None:
    """SCN-3: scalars are printed as the original's `Received general message: ...`, containers as MSG lines."""

    def print_msg(self: icn.ComputeNode, value: Any) -> None:
        if type(value) in (list, tuple, dict):
            line = msg_line(value)
        else:
            line = f"Received general message: {value}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    icn.ComputeNode.print_msg = print_msg


def _serve_batches(on_batch: Callable[[icn.ComputeNode, List[bytes]], None]) -> None:
    """Replace the serve loop so that a variant sees every frame of one read together."""

    def serve(self: icn.ComputeNode) -> None:
        while True:
            self.check_live_time()
            ready, _, _ = select.select([self.sock], [], [], max(0.0, self.remaining()))
            if not ready:
                continue
            data = self.receive()
            self.check_live_time(arrived=True)
            self.splitter.feed(data)
            on_batch(self, self.splitter.payloads())

    icn.ComputeNode.serve = serve


def c_shutdown_ignored_when_more_follows() -> None:
    """CN-6: a ShutdownCN that is not the last frame of a read is taken for a stray frame and skipped."""

    def on_batch(node: icn.ComputeNode, payloads: List[bytes]) -> None:
        for i, payload in enumerate(payloads):
            if node.state == "SERVING" and i < len(payloads) - 1:
                try:
                    if idec.decode(payload).name == "ShutdownCN":
                        icn.log("skipped a ShutdownCN followed by more frames")
                        continue
                except idec.Refusal:
                    pass
            node.on_payload(payload)

    _serve_batches(on_batch)


def c_acts_after_shutdown() -> None:
    """CN-6: on ShutdownCN it finishes the frames of the same read (printing their MSGs) before it stops."""

    def on_batch(node: icn.ComputeNode, payloads: List[bytes]) -> None:
        stop: Optional[icn.Stop] = None
        for payload in payloads:
            try:
                node.on_payload(payload)
            except icn.Stop as s:
                if s.status != 0 or node.state != "SHUT_DOWN":
                    raise
                stop = s
        if stop is not None:
            raise stop

    _serve_batches(on_batch)


def c_live_time_from_ack() -> None:
    """CN-10: the live time is counted from the ACK, not from cn_start_time."""
    on_first_reply = icn.ComputeNode.on_first_reply

    def patched(self: icn.ComputeNode, command: idec.Command) -> None:
        on_first_reply(self, command)
        self.end_time = time.time() + self.live_time

    icn.ComputeNode.on_first_reply = patched


def c_live_time_from_connect() -> None:
    """CN-10: 1 s of start-up work, then the live time is counted from the connect, not from cn_start_time."""
    connect = icn.ComputeNode.connect_and_register

    def patched(self: icn.ComputeNode) -> None:
        time.sleep(1.0)
        self.end_time = time.time() + self.live_time
        connect(self)

    icn.ComputeNode.connect_and_register = patched


def c_expired_before_ack_exits_0() -> None:
    """CN-4/CN-10: a live time that passes before the ACK ends the node with status 0, as if it had served."""

    def check_live_time(self: icn.ComputeNode, arrived: bool = False) -> None:
        if self.remaining() <= 0:
            raise icn.Stop(0, "[CN-10] the live time has passed")

    icn.ComputeNode.check_live_time = check_live_time


def c_master_close_exits_0() -> None:
    """CN-11: the master closing between frames while the node serves is taken as a normal end (status 0)."""
    on_end_of_stream = icn.ComputeNode.on_end_of_stream

    def patched(self: icn.ComputeNode) -> None:
        if self.state == "SERVING" and not self.splitter.inside_frame:
            raise icn.Stop(0, "the master closed the connection")
        on_end_of_stream(self)

    icn.ComputeNode.on_end_of_stream = patched


def c_any_protocol_number() -> None:
    """ENC-1: the PROTO number is read and ignored, so protocol 0, 1 and 6+ payloads are decoded as 4."""
    decode = icn.ComputeNode.decode

    def patched(self: icn.ComputeNode, payload: bytes) -> idec.Command:
        if len(payload) >= 2 and payload[0] == 0x80 and payload[1] not in (2, 3, 4, 5):
            payload = b"\x80\x04" + payload[2:]
        return decode(self, payload)

    icn.ComputeNode.decode = patched


def c_protocol_1_strings() -> None:
    """ENC-2: BINSTRING and SHORT_BINSTRING (protocol 0/1 strings) are decoded as latin-1 str."""
    idec.OPCODES[0x54] = idec.Opcode("BINSTRING", 2, "bytes4")
    idec.OPCODES[0x55] = idec.Opcode("SHORT_BINSTRING", 2, "bytes1")
    idec.SCALARS["BINSTRING"] = idec.SCALARS["SHORT_BINSTRING"] = lambda raw: raw.decode("latin-1")


def c_binpersid_as_none() -> None:
    """ENC-2: BINPERSID is accepted; the persistent id is dropped and None stands for the object."""
    idec.OPCODES[0x51] = idec.Opcode("BINPERSID", 2, "none")

    def op(self: Any, _: None) -> None:
        self._pop()
        self._push(idec.Item(idec.SCALAR, None))

    idec._Decoder._op_BINPERSID = op


def c_waits_past_a_bad_first_reply() -> None:
    """CN-4: a first reply that is not an ACK is logged and skipped; the node keeps waiting for an ACK."""

    def on_first_reply(self: icn.ComputeNode, command: idec.Command) -> None:
        if command.name != "ACK":
            icn.log(f"ignored a {command.name} before the ACK")
            return
        self.state = "SERVING"

    def on_undecodable(self: icn.ComputeNode, refusal: idec.Refusal, start: int) -> None:
        icn.log(f"skipped a frame: [{refusal.clause}] {refusal.reason}")

    icn.ComputeNode.on_first_reply = on_first_reply
    icn.ComputeNode.on_undecodable = on_undecodable


# -- correct compute-node oddities ---------------------------------------------------------


def ok_c_buffered_stdout() -> None:
    """Never flushes stdout itself: the MSG lines reach the pipe in blocks, and the rest at exit."""

    def print_msg(self: icn.ComputeNode, value: Any) -> None:
        sys.stdout.write(msg_line(value) + "\n")

    icn.ComputeNode.print_msg = print_msg


def ok_c_slow_close() -> None:
    """Takes 1.2 s to close after ShutdownCN (cleaning up), inside CN-7's 2 s."""
    on_command = icn.ComputeNode.on_command

    def patched(self: icn.ComputeNode, command: idec.Command) -> None:
        if command.name == "ShutdownCN":
            time.sleep(1.2)
        on_command(self, command)

    icn.ComputeNode.on_command = patched


def ok_c_one_byte_reads() -> None:
    """Reads one byte per recv, pausing 1 ms every 4096 bytes."""
    count = [0]

    def receive(self: icn.ComputeNode) -> bytes:
        assert self.sock is not None
        try:
            data = self.sock.recv(1)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as error:
            raise icn.Stop(1, f"the connection failed: {error.__class__.__name__}") from None
        if not data:
            self.on_end_of_stream()
        count[0] += 1
        if count[0] % 4096 == 0:
            time.sleep(0.001)
        return data

    icn.ComputeNode.receive = receive


def _connect_then(write: Callable[[socket.socket, bytes], None], payload_of: Callable[[icn.ComputeNode], bytes]) -> None:
    def connect_and_register(self: icn.ComputeNode) -> None:
        if self.remaining() <= 0:
            raise icn.Stop(1, "[CN-10] the live time ended before the node connected")
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.remaining())
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            write(self.sock, good_frame(payload_of(self)))
        except OSError as error:
            raise icn.Stop(1, f"[CN-4] could not register: {error.__class__.__name__}") from None
        self.sock.setblocking(False)
        self.state = "AWAIT_ACK"

    icn.ComputeNode.connect_and_register = connect_and_register


def _two_writes(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data[:1])  # split inside the length prefix (FRM-4)
    time.sleep(1.0)
    sock.sendall(data[1:])


def ok_c_register_two_writes() -> None:
    """Writes the RegisterCN frame in two writes, the first one byte of the prefix, with a 1 s pause."""
    _connect_then(_two_writes, lambda n: icn.encoder.register(n.start_time, n.live_time))


def _register_protocol_2(node: icn.ComputeNode) -> bytes:
    """RegisterCN as CPython writes it at protocol 2: GLOBAL, BINPUT, BINUNICODE, BININT."""
    return (
        b"\x80\x02cskyllh.cluster.commands\nRegisterCN\nq\x00)\x81q\x01}q\x02(X\x0e\x00\x00\x00_cn_start_timeq\x03J"
        + struct.pack("<i", node.start_time)
        + b"X\r\x00\x00\x00_cn_live_timeq\x04J"
        + struct.pack("<i", node.live_time)
        + b"ub."
    )


def ok_c_register_protocol_2() -> None:
    """Sends its RegisterCN at pickle protocol 2: valid (ENC-8), only ENC-7 (SHOULD) asks for protocol 4."""
    _connect_then(lambda s, d: s.sendall(d), _register_protocol_2)


def ok_c_legacy_and_msg_lines() -> None:
    """Prints the original's `Received general message: ...` line and then the MSG line for each value."""

    def print_msg(self: icn.ComputeNode, value: Any) -> None:
        legacy = f"Received general message: {value}".encode("ascii", "backslashreplace").decode()
        sys.stdout.write(legacy.replace("\n", " ") + "\n" + msg_line(value) + "\n")
        sys.stdout.flush()

    icn.ComputeNode.print_msg = print_msg


def ok_c_log_lines_on_stdout() -> None:
    """Prints status lines to stdout around each MSG line (the spec ignores lines not starting with `MSG `)."""

    def print_msg(self: icn.ComputeNode, value: Any) -> None:
        sys.stdout.write(f"status: got a {type(value).__name__}\n{msg_line(value)}\nMSGs so far: more\n")
        sys.stdout.flush()

    icn.ComputeNode.print_msg = print_msg


F = frozenset
VARIANTS: Dict[str, Variant] = {
    "m-frm1-long-be": Variant("master", "length prefix big-endian only for payloads over 255 bytes", F({"FRM-1"}), m_frm1_long_be),
    "m-expired-served-when-several": Variant(
        "master", "an expired node gets the whole scenario when another connection is open", F({"MST-9"}),
        m_expired_served_when_several),
    "m-shutdown-before-65535": Variant(
        "master", "ShutdownCN goes out before a MSG of exactly 65535 bytes", F({"SCN-1", "MST-5"}), m_shutdown_before_65535),
    "m-shutdown-before-large": Variant(
        "master", "ShutdownCN goes out before a MSG over 60000 bytes", F({"SCN-1", "MST-5"}), m_shutdown_before_large),
    "m-regcn-key-names-ignored": Variant(
        "master", "RegisterCN parser ignores the key names, takes two ints", F({"CMD-3", "MST-3"}), m_regcn_key_names_ignored),
    "m-regcn-key-order-required": Variant(
        "master", "RegisterCN with _cn_live_time first is refused", F({"ENC-8", "MST-1", "CMD-3"}), m_regcn_key_order_required),
    "m-times-int32-only": Variant(
        "master", "RegisterCN times as LONG1/LONG4 refused (breaks in 2038)", F({"ENC-8", "MST-1"}), m_times_int32_only),
    "m-setitem-refused": Variant(
        "master", "RegisterCN state written with SETITEM refused", F({"ENC-8", "MST-1"}), m_setitem_refused),
    "m-bytes-after-ack-ignored": Variant(
        "master", "bytes arriving after the ACK are read and dropped", F({"MST-11"}), m_bytes_after_ack_ignored),
    "m-registration-deadline-per-read": Variant(
        "master", "registration deadline restarts on every read (a trickle is never closed)", F({"MST-7", "FRM-6"}),
        m_registration_deadline_per_read),
    "m-stall-on-enc6": Variant("master", "6 s in the event loop to refuse an ENC-6 first frame", F({"MST-4"}), m_stall_on_enc6),
    "m-exit-on-bad-utf8": Variant(
        "master", "process exits on invalid UTF-8 in a first frame", F({"MST-4", "ERR-1"}), m_exit_on_bad_utf8),
    "ok-m-small-writes": Variant("master", "at most 997 bytes per write, connections interleave", F(), ok_m_small_writes),
    "ok-m-ack-late": Variant("master", "ACK 0.3 to 0.8 s after the RegisterCN", F(), ok_m_ack_late),
    "ok-m-close-at-once": Variant("master", "plain close right after the ShutdownCN is written", F(), ok_m_close_at_once),
    "c-waits-past-a-bad-first-reply": Variant(
        "cn", "a first reply that is not an ACK is skipped; it waits for an ACK", F({"CN-4"}), c_waits_past_a_bad_first_reply),
    "c-float-15-digits": Variant("cn", "floats printed through 15 significant digits", F({"CN-11", "VAL-4"}), c_float_15_digits),
    "c-tuple-as-list": Variant("cn", "tuples printed as lists", F({"CN-11", "VAL-4"}), c_tuple_as_list),
    "c-dict-sorted": Variant("cn", "dict entries printed sorted by key", F({"CN-11", "VAL-4"}), c_dict_sorted),
    "c-legacy-line-for-scalars": Variant(
        "cn", "scalars printed only as `Received general message:`", F({"SCN-3"}), c_legacy_line_for_scalars),
    "c-shutdown-ignored-when-more-follows": Variant(
        "cn", "a ShutdownCN followed by more frames in the same read is skipped", F({"CN-6"}),
        c_shutdown_ignored_when_more_follows),
    "c-acts-after-shutdown": Variant(
        "cn", "prints MSGs that follow a ShutdownCN in the same read", F({"CN-6", "MST-5"}), c_acts_after_shutdown),
    "c-live-time-from-ack": Variant("cn", "live time counted from the ACK", F({"CN-10"}), c_live_time_from_ack),
    "c-live-time-from-connect": Variant(
        "cn", "1 s start-up, live time counted from the connect", F({"CN-10", "CN-2"}), c_live_time_from_connect),
    "c-expired-before-ack-exits-0": Variant(
        "cn", "live time passing before the ACK exits 0", F({"CN-4", "CN-10"}), c_expired_before_ack_exits_0),
    "c-master-close-exits-0": Variant(
        "cn", "master closing while serving exits 0", F({"CN-11"}), c_master_close_exits_0),
    "c-any-protocol-number": Variant("cn", "PROTO 0, 1, 6+ decoded as 4", F({"ENC-1", "CN-9"}), c_any_protocol_number),
    "c-protocol-1-strings": Variant(
        "cn", "BINSTRING/SHORT_BINSTRING decoded as str", F({"ENC-2", "CN-9"}), c_protocol_1_strings),
    "c-binpersid-as-none": Variant("cn", "BINPERSID accepted, decoded as None", F({"ENC-2", "CN-9"}), c_binpersid_as_none),
    "ok-c-one-byte-reads": Variant("cn", "one byte per recv", F(), ok_c_one_byte_reads),
    "ok-c-register-two-writes": Variant("cn", "RegisterCN in two writes, 1 s apart, split in the prefix", F(),
                                        ok_c_register_two_writes),
    "ok-c-register-protocol-2": Variant(
        "cn", "RegisterCN at protocol 2 (ENC-7 is a SHOULD: run without --strict-conformance)", F(),
        ok_c_register_protocol_2, strict=False),
    "ok-c-legacy-and-msg-lines": Variant("cn", "legacy line and MSG line for each value", F(), ok_c_legacy_and_msg_lines),
    "ok-c-buffered-stdout": Variant("cn", "stdout never flushed by the node (block buffered, flushed at exit)", F(),
                                    ok_c_buffered_stdout),
    "ok-c-slow-close": Variant("cn", "closes 1.2 s after ShutdownCN", F(), ok_c_slow_close),
    "ok-c-log-lines-on-stdout": Variant("cn", "status lines on stdout around each MSG line", F(), ok_c_log_lines_on_stdout),
}


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "--variant" or args[1] not in VARIANTS:
        print(f"usage: target.py --variant {{{','.join(VARIANTS)}}} ARGS...", file=sys.stderr)
        return 4
    variant = VARIANTS[args[1]]
    variant.apply()
    program = imaster if variant.role == "master" else icn
    return program.main(args[2:])


if __name__ == "__main__":
    sys.exit(main())
