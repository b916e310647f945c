"""The POS simulator against a tiny fake loyalty host on loopback (no box needed)."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
from decimal import Decimal

import pytest

from app.pos.framing import FramingError, crc32, make_framer
from app.pos.model import Request, Response, Reward
from app.pos.xmlcodec import read_request, write_response
from simulators import pos as sim
from tests.ports import free_port


class FakeHost:
    """A loyalty host that answers each request with a matching response.

    GetRewards gets one amountOff 1.00 on line 1 (while line 1 is sold) and LoyaltySequenceID
    "LS-1"; the rewards the POS reports as applied are removed first, as the box does. `mode`
    makes it misbehave: "wrong_seq", "wrong_name" or "silent".
    """

    def __init__(self, dialect: str = "passport") -> None:
        self.dialect = dialect
        self.mode = "ok"
        self.framers: list = []
        self.requests: list[Request] = []
        self.first_bytes: list[bytes] = []
        self.heartbeats = 0
        self.errors: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        framer = make_framer(self.dialect)
        self.framers.append(framer)
        first = True
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if first:
                    self.first_bytes.append(data)
                    first = False
                try:
                    frames = framer.feed(data)
                except FramingError as exc:
                    self.errors.append(str(exc))
                    return
                for frame in frames:
                    if frame.heartbeat:
                        self.heartbeats += 1
                        continue
                    request = read_request(frame.payload, self.dialect)
                    self.requests.append(request)
                    if self.mode == "silent":
                        continue
                    payload = write_response(self.answer(request), self.dialect)
                    conn.sendall(framer.encode(payload))

    def answer(self, request: Request) -> Response:
        header = sim.header(request.header.pos_sequence_id, request.header.loyalty_sequence_id)
        stem = request.stem
        if self.mode == "wrong_seq":
            header.pos_sequence_id = "01-9999^1^"
        if self.mode == "wrong_name":
            stem = "FinalizeRewards" if stem != "FinalizeRewards" else "GetRewards"
        response = Response(stem=stem, header=header)
        if request.stem == "GetLoyaltyOnlineStatus":
            response.prompt_for_loyalty = True
        if request.stem == "GetRewards":
            response.header.loyalty_sequence_id = "LS-1"
            txn = request.transaction
            response.remove_reward_ids = list(txn.applied_rewards()) if txn else []
            if request.loyalty_id is not None:
                response.loyalty_id_valid = True
                response.loyalty_id_text = "Welcome back"
            line_one = [ln for ln in (txn.lines if txn else []) if ln.line_number == 1]
            if line_one and line_one[0].status == "normal":
                response.add_rewards = [
                    Reward("SD-1", 1, "amountOff", Decimal("1.00"), 2, "LOYALTY", "TOBACCO DISC")
                ]
        if request.stem == "FinalizeRewards":
            response.receipt_lines = ["THANK YOU FOR BEING A MEMBER"]
        return response

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture(params=["passport", "eps"])
def fake_host(request):
    host = FakeHost(request.param)
    yield host
    host.close()


@pytest.fixture
def passport_host():
    host = FakeHost("passport")
    yield host
    host.close()


def client_for(host: FakeHost, **kwargs) -> sim.PosClient:
    return sim.PosClient("127.0.0.1", host.port, dialect=host.dialect, timeout=2.0, **kwargs)


def a_sale(seq: str = "01-77^5^") -> Request:
    txn = sim.transaction(
        "1", "77", [sim.item_line(1, "028200003843", 2, "9.49", description="MARLBORO GOLD BOX")]
    )
    return sim.get_rewards(seq, txn, "2142840123")


# ---- framing ------------------------------------------------------------------------------


@pytest.mark.parametrize("complemented", [False, True])
def test_passport_framing_and_crc_form(passport_host, complemented):
    with client_for(passport_host, complement_crc=complemented) as client:
        response = client.send(a_sale())
        assert response.stem == "GetRewards"
        assert client.last_rtt_s is not None and client.last_rtt_s >= 0
        assert client.framer.complemented_crc is complemented  # the host answered in our form
    head = passport_host.first_bytes[0][:28]
    signature, action, length, payload_crc, header_crc = struct.unpack("<12sIIII", head)
    assert signature == b"POSLOYALTY\x00\x00" and action == 1
    flip = 0xFFFFFFFF if complemented else 0
    assert header_crc == crc32(head[:24]) ^ flip
    assert passport_host.framers[0].complemented_crc is complemented
    assert passport_host.requests[0].header.pos_sequence_id == "01-77^5^"


def test_eps_framing_is_a_big_endian_length():
    host = FakeHost("eps")
    try:
        with client_for(host) as client:
            response = client.send(a_sale())
        data = host.first_bytes[0]
        (length,) = struct.unpack(">I", data[:4])
        assert data[4:].startswith(b"<?xml") and b"pcats.org" in data[4:]
        assert length == len(data) - 4
        assert response.add_rewards[0].reward_id == "SD-1"
        assert response.header.loyalty_sequence_id == "LS-1"
    finally:
        host.close()


def test_heartbeat_gets_no_reply_and_the_connection_goes_on(passport_host):
    with client_for(passport_host) as client:
        client.heartbeat()
        assert client.send(sim.online_status("00-0^1^")).prompt_for_loyalty is True
    assert passport_host.heartbeats == 1


def test_send_raw_returns_the_answer_payload(fake_host):
    with client_for(fake_host) as client:
        payload = client.send_raw(b"<GetLoyaltyOnlineStatusRequest/>")
    assert b"GetLoyaltyOnlineStatusResponse" in payload


def test_hostile_bytes_make_the_host_drop_the_connection(passport_host):
    with client_for(passport_host) as client:
        client.send_bytes(b"GARBAGE" * 10)
        assert client.wait_closed(2.0)
    assert "signature" in passport_host.errors[0]


# ---- checking answers ---------------------------------------------------------------------


def test_wrong_pos_sequence_id_is_rejected(fake_host):
    fake_host.mode = "wrong_seq"
    with client_for(fake_host) as client, pytest.raises(sim.PosClientError, match="POSSequence"):
        client.send(a_sale())


def test_wrong_response_name_is_rejected(fake_host):
    fake_host.mode = "wrong_name"
    with client_for(fake_host) as client, pytest.raises(sim.PosClientError, match="named"):
        client.send(a_sale())


def test_no_answer_times_out(passport_host):
    passport_host.mode = "silent"
    client = sim.PosClient("127.0.0.1", passport_host.port, timeout=0.3)
    with client, pytest.raises(sim.PosClientError, match="no answer"):
        client.send(a_sale())
    assert not client.connected  # a late answer must not be read as the next one


def test_unknown_message_gets_its_own_response_name(fake_host):
    with client_for(fake_host) as client:
        assert client.send(sim.message("FooBar", "01-0^3^")).stem == "FooBar"


# ---- builders and the POS's arithmetic ----------------------------------------------------


def test_sequence_ids_look_like_passport():
    counter = sim.SequenceCounter(start=201409, first_transaction=3585)
    txn = counter.new_transaction()
    assert counter.next("1", txn) == "01-3585^201409^"
    assert re.fullmatch(r"00-0\^201410\^", counter.next("00"))


def test_builders_fill_the_model():
    line = sim.item_line(1, "028200003843", 2, "9.49")
    assert line.amount == Decimal("18.98") and line.department == "TOBACCO"
    fuel = sim.fuel_line(2, "001", "3", "10.000", "3.199", prepay=True)
    assert fuel.amount == Decimal("31.99") and fuel.prepay is True
    request = sim.finalize(sim.header("01-1^2^", "LS-1"), sim.transaction("1", "1", [line]), None)
    assert request.stem == "FinalizeRewards" and request.header.loyalty_sequence_id == "LS-1"
    assert sim.begin_customer("01-0^1^").register_id == "1"


@pytest.mark.parametrize(
    ("method", "value", "limit", "expected"),
    [
        ("amountOff", "1.00", None, "1.00"),
        ("amountOff", "50.00", None, "18.98"),  # never below zero
        ("percentOff", "10", None, "1.90"),
        ("newPrice", "8.99", 1, "0.50"),
        ("newPrice", "8.99", None, "1.00"),
    ],
)
def test_applied_rewards_like_a_pos(method, value, limit, expected):
    lines = [sim.item_line(1, "028200003843", 2, "9.49")]
    applied = sim.AppliedRewards()
    response = Response("GetRewards", sim.header("x"))
    response.add_rewards = [Reward("R", 1, method, Decimal(value), limit)]
    applied.update(response)
    assert applied.total(lines) == Decimal(expected)


def test_ticket_reward_and_removal():
    lines = [sim.item_line(1, "028200003843", 1, "9.49"), sim.item_line(2, "1", 1, "2.00")]
    applied = sim.AppliedRewards()
    add = Response("GetRewards", sim.header("x"))
    add.add_rewards = [Reward("T", 0, "amountOff", Decimal("1.50"))]
    applied.update(add)
    reported = applied.report(lines, ticket_tender_line=3)
    assert reported[-1].kind == "tender" and reported[-1].applied_rewards == {"T": Decimal("1.50")}
    remove = Response("GetRewards", sim.header("x"), remove_reward_ids=["T"])
    changes = applied.update(remove)
    assert [r.reward_id for r in changes.removed] == ["T"] and applied.total(lines) == 0


# ---- scripted sales -----------------------------------------------------------------------


def test_tobacco_sale_prints_the_discount_and_total(fake_host):
    lines: list[str] = []
    with client_for(fake_host) as client:
        result = sim.tobacco_phone_sale(client, lines.append)
    assert "Discount on line 1: -$1.00 (TOBACCO DISC)" in lines
    assert "POS screen: Welcome back" in lines
    assert "Total due: $17.98" in lines
    assert "Receipt: You saved $1.00 today" in lines
    assert result.discount == Decimal("1.00") and result.total_due == Decimal("17.98")
    stems = [r.stem for r in fake_host.requests]
    assert stems == [
        "BeginCustomer",
        "GetLoyaltyOnlineStatus",
        "GetRewards",
        "FinalizeRewards",
        "EndCustomer",
    ]
    final = fake_host.requests[3]
    assert final.header.loyalty_sequence_id == "LS-1"
    assert final.transaction.applied_rewards() == {"SD-1": Decimal("1.00")}
    tender = final.transaction.lines[-1]
    assert tender.kind == "tender" and tender.tender_amount == Decimal("17.98")
    assert final.loyalty_id.value == "2142840123"


def test_changed_basket_removes_the_reward(fake_host):
    lines: list[str] = []
    with client_for(fake_host) as client:
        result = sim.changed_basket(client, lines.append)
    assert "Rewards removed: SD-1 (TOBACCO DISC)" in lines
    assert "Rewards added: none" in lines
    second = fake_host.requests[1]
    assert second.header.loyalty_sequence_id == "LS-1"
    assert second.transaction.lines[0].status == "void"
    assert result.discount == 0 and result.total_due == Decimal("1.99")


def test_finalize_resend_sends_the_same_request(fake_host):
    lines: list[str] = []
    with client_for(fake_host) as client:
        result = sim.finalize_resend(client, lines.append)
    assert result.resend_identical is True and "Answers identical: yes" in lines
    finals = [r for r in fake_host.requests if r.stem == "FinalizeRewards"]
    assert len(finals) == 2 and finals[0] == finals[1]


def test_cancelled_sale_echoes_the_loyalty_sequence_id(fake_host):
    with client_for(fake_host) as client:
        result = sim.cancelled_sale(client, lambda _: None)
    assert fake_host.requests[-1].stem == "CancelTransaction"
    assert fake_host.requests[-1].header.loyalty_sequence_id == "LS-1"
    assert result.total_due == 0


# ---- command line -------------------------------------------------------------------------


def test_list(capsys):
    assert sim.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in sim.SCRIPTS)


def test_main_plays_every_script(fake_host, capsys):
    argv = ["--connect", f"127.0.0.1:{fake_host.port}", "--dialect", fake_host.dialect]
    assert sim.main(argv) == 0
    out = capsys.readouterr().out
    assert all(f"=== {name} ===" in out for name in sim.SCRIPTS)
    assert len(fake_host.framers) == 1  # one persistent connection, like a POS


def test_main_one_script_with_complemented_crc(passport_host, capsys):
    argv = ["--connect", f"127.0.0.1:{passport_host.port}", "--complement-crc"]
    assert sim.main([*argv, "--script", "sale_without_loyalty"]) == 0
    # The fake host grants SD-1 on line 1 whatever the basket: 6.77 - 1.00.
    assert "Total due: $5.77" in capsys.readouterr().out
    assert passport_host.framers[0].complemented_crc is True


def test_main_fails_clearly_when_nothing_listens(capsys):
    port = free_port()
    assert sim.main(["--connect", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pos-sim: cannot connect to the box at 127.0.0.1:{port}")
    assert "\n" not in err


def test_main_fails_clearly_on_a_wrong_answer(passport_host, capsys):
    passport_host.mode = "wrong_seq"
    assert sim.main(["--connect", f"127.0.0.1:{passport_host.port}"]) == 1
    assert "POSSequenceID" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9100", ("127.0.0.1", 9100)), ("box", ("box", 9000)), ("[::1]:9", ("::1", 9))],
)
def test_parse_address(text, expected):
    assert sim.parse_address(text) == expected


def test_parse_address_rejects_a_bad_port(capsys):
    assert sim.main(["--connect", "127.0.0.1:99999"]) == 2
    assert "bad port" in capsys.readouterr().err
