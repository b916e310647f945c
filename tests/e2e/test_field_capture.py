"""Replay the real Passport conversation (shared/field-captures) through the box over TCP."""

from __future__ import annotations

import json
import time

from app.pos.xmlcodec import read_request, read_response
from simulators import pos as sim

QR_FULL = "https://loyalty.example/app/?USER_Q0FGRUJBQkUxMjM0NTY3ODkwQUJDRA"


def _capture(shared_dir):
    path = shared_dir / "field-captures/passport-12.23.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_passport_capture_replays_cleanly(shared_dir, reference_host, make_box):
    box = make_box(reference_host.url, dialect="passport")
    messages = _capture(shared_dir)
    # The field host's LoyaltySequenceIDs (from its answers) -> the ones our box assigned.
    ours: dict[str, str] = {}
    answered = 0
    with sim.PosClient("127.0.0.1", box.pos_server.port, "passport") as pos:
        for index, message in enumerate(messages):
            if message["direction"] != "pos->host":
                continue
            xml = message["xml"]
            for theirs, mine in ours.items():
                xml = xml.replace(f"<LoyaltySequenceID>{theirs}<", f"<LoyaltySequenceID>{mine}<")
            request = read_request(xml.encode())
            payload = pos.send_raw(xml.encode())
            response = read_response(payload)
            answered += 1
            assert payload.startswith(f"<{request.stem}Response>".encode()), payload[:80]
            assert response.header.pos_sequence_id == request.header.pos_sequence_id
            field_answer = next(
                (m for m in messages[index + 1 : index + 2] if m["direction"] == "host->pos"), None
            )
            if field_answer and request.stem == "GetRewards":
                theirs = read_response(field_answer["xml"].encode()).header.loyalty_sequence_id
                ours.setdefault(theirs, response.header.loyalty_sequence_id)
    assert answered == sum(m["direction"] == "pos->host" for m in messages)

    bodies = reference_host.store.rewards_requests()
    qr = [b for b in bodies if b["loyalty_id"] and b["loyalty_id"]["value"].startswith("https")]
    # Two QR sales; each one's second GetRewards cut the QR to 40 characters, yet the host
    # saw the full ID every time, in one session per sale.
    assert len(qr) == 4 and {b["loyalty_id"]["value"] for b in qr} == {QR_FULL}
    assert len({b["session_id"] for b in qr}) == 2
    # Licence dates are an age check, never a loyalty ID.
    assert "01/15/1980" not in json.dumps(bodies)
    age_checked = [b for b in bodies if b["customer"]["age_verified"] is True]
    assert len(age_checked) == 2 and all(b["loyalty_id"] is None for b in age_checked)

    # The months-old offline FinalizeRewards, resent by the POS, reached the host once.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        events = reference_host.store.events()
        offline = [e for e in events if e["body"]["pos"]["offline"]]
        if offline:
            break
        time.sleep(0.05)
    assert len(offline) == 1 and offline[0]["deliveries"] == 1
    assert offline[0]["body"]["pos"]["pos_transaction_id"] == "7748"
    assert offline[0]["body"]["decision"]["rule"] == "pos_stored_offline"
    # ... as the September sale it is: the POS's business date, event time and cashier, and
    # the box's own time of journaling beside them.
    old_sale = offline[0]["body"]
    assert old_sale["pos"]["business_date"] == "2025-09-16"
    assert old_sale["occurred_at"] == "2025-09-17T13:44:17-04:00"
    assert old_sale["pos"]["cashier_id"] == "91" and old_sale["pos"]["training"] is False
    assert old_sale["pos"]["period"]["type"] == "day"
    assert old_sale["recorded_at"] > "2026"
    assert box.pos_server.closed_bad_input == 0
