"""The XML reader against hostile and sloppy input, and the writers' exact output."""

import json
from decimal import Decimal

import pytest

from app.pos.model import Request, RequestHeader, Response, Reward
from app.pos.xmlcodec import XmlError, read_request, read_response, write_request, write_response
from tests.conftest import SHARED

CAPTURE = SHARED / "field-captures/passport-12.23.jsonl"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<GetRewardsRequest><LoyaltyID>&lol3;</LoyaltyID></GetRewardsRequest>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<GetRewardsRequest><LoyaltyID>&xxe;</LoyaltyID></GetRewardsRequest>"""


@pytest.mark.parametrize(
    "payload, reason",
    [
        (BILLION_LAUGHS, "forbidden"),
        (EXTERNAL_ENTITY, "forbidden"),
        (b"<GetRewardsRequest><LoyaltyID>\xff\xfe</LoyaltyID></GetRewardsRequest>", "UTF-8"),
        (b"<GetRewardsRequest><RequestHeader>", "malformed"),
        (b"<a>" + b"x" * (1024 * 1024 + 1) + b"</a>", "limit"),
    ],
)
def test_hostile_payloads_are_refused_with_a_reason(payload, reason):
    with pytest.raises(XmlError, match=reason):
        read_request(payload)


def test_tolerant_reading_namespaces_case_and_attribute_forms():
    xml = b"""<ns:getrewardsrequest xmlns:ns="urn:x"><ns:RequestHeader>
      <PosLoyaltyInterfaceVersion>1.0</PosLoyaltyInterfaceVersion>
      <POSSEQUENCEID>7</POSSEQUENCEID><LoyaltyOfflineFlag>yes</LoyaltyOfflineFlag></ns:RequestHeader>
      <LoyaltyID method="swipe">123456</LoyaltyID>
      <TransactionData><TransactionDetailGroup><TransactionLine status="NORMAL">
        <LineNumber>1</LineNumber><ItemLine><ItemCode><POSCodeFormat format="ean13"/>
        <POSCode>0012345678905</POSCode></ItemCode><SalesAmount>.18</SalesAmount>
        <Mystery>kept elsewhere</Mystery></ItemLine></TransactionLine>
        <TransactionLine><LineNumber>2</LineNumber><FuelLine fuelPrepay="yes">
        <FuelGradeID>001</FuelGradeID>
        <SalesQuantity>10.000</SalesQuantity></FuelLine></TransactionLine>
      </TransactionDetailGroup></TransactionData><Surprise>x</Surprise></ns:getrewardsrequest>"""
    request = read_request(xml)
    assert request.stem == "GetRewards"
    assert request.header.interface_version == "1.0"
    assert request.header.pos_sequence_id == "7"
    assert request.header.offline is True
    assert request.loyalty_id.value == "123456" and request.loyalty_id.entry_method == "swipe"
    item, fuel = request.transaction.lines
    assert (item.code_format, item.code, item.amount) == ("ean13", "0012345678905", Decimal(".18"))
    assert item.status == "normal"
    assert (fuel.kind, fuel.prepay, fuel.quantity) == ("fuel", True, Decimal("10.000"))
    assert request.extra["surprise"] == "x"


def test_unknown_root_keeps_its_stem():
    request = read_request(b"<FrobnicateRequest><RequestHeader/></FrobnicateRequest>")
    assert request.stem == "Frobnicate" and not request.known


def test_every_captured_request_parses():
    requests = [
        read_request(json.loads(line)["xml"].encode())
        for line in CAPTURE.read_text().splitlines()
        if json.loads(line)["direction"] == "pos->host"
    ]
    assert len(requests) > 40 and all(r.known for r in requests)
    assert {r.stem for r in requests} >= {"GetRewards", "FinalizeRewards", "EndPeriod"}


def _response() -> Response:
    header = RequestHeader("1.2", "Gilbarco", "12.23", "01-1^2^", "CB1", "S-1")
    return Response(
        stem="GetRewards",
        header=header,
        loyalty_id_valid=True,
        loyalty_id_text="Welcome <back>",
        add_rewards=[Reward("SD-1", 1, "amountOff", Decimal("1"), 2, "LOYALTY", "TOBACCO DISC")],
        remove_reward_ids=["OLD-1"],
        receipt_lines=["You saved $1.00"],
    )


def test_passport_writer_exact_bytes():
    assert write_response(_response(), "passport").decode() == (
        "<GetRewardsResponse><ResponseHeader>"
        "<POSLoyaltyInterfaceVersion>1.2</POSLoyaltyInterfaceVersion>"
        "<VendorName>Gilbarco</VendorName><VendorModelVersion>12.23</VendorModelVersion>"
        "<POSSequenceID>01-1^2^</POSSequenceID><LoyaltySequenceID>CB1</LoyaltySequenceID>"
        "</ResponseHeader>"
        '<LoyaltyIDValidFlag value="yes">Welcome &lt;back&gt;</LoyaltyIDValidFlag>'
        "<RewardActions><RemoveReward><LoyaltyRewardID>OLD-1</LoyaltyRewardID></RemoveReward>"
        "<AddReward><LoyaltyRewardID>SD-1</LoyaltyRewardID>"
        '<InstantRewardFlag value="yes"></InstantRewardFlag>'
        "<RewardTargetLineNumber>1</RewardTargetLineNumber>"
        "<RewardDiscountMethod>amountOff</RewardDiscountMethod><RewardValue>1.00</RewardValue>"
        '<RewardLimit type="quantity">2</RewardLimit>'
        "<RewardReceiptDescShort>LOYALTY</RewardReceiptDescShort>"
        "<RewardReceiptDescLong>TOBACCO DISC</RewardReceiptDescLong></AddReward></RewardActions>"
        "<CustomerMessageData><ReceiptData><ReceiptLine>You saved $1.00</ReceiptLine>"
        "</ReceiptData></CustomerMessageData></GetRewardsResponse>"
    )


def test_eps_writer_namespaces_and_result():
    xml = write_response(_response(), "eps").decode()
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?><GetRewardsResponse ')
    assert 'xmlns="http://www.pcats.org/schema/naxml/loyalty/v01"' in xml
    assert 'xmlns:pcats="http://www.pcats.org/schema/core/v01"' in xml
    assert 'xmlns:naxml="http://www.naxml.org/POSBO/Vocabulary/2003-10-16"' in xml
    assert '<ResponseHeader overallResult="success">' in xml
    assert "<naxml:VendorName>Gilbarco</naxml:VendorName>" in xml
    assert "<pcats:Result><pcats:Success></pcats:Success></pcats:Result>" in xml
    parsed = read_response(xml.encode())  # and it is well-formed, namespaced XML
    assert parsed.header.pos_sequence_id == "01-1^2^"
    assert parsed.add_rewards[0].value == Decimal("1.00")


@pytest.mark.parametrize("dialect", ["passport", "eps"])
def test_request_writer_round_trips(dialect):
    header = RequestHeader("1.2", "V", "M", "9", "", "S")
    request = Request("BeginCustomer", header, register_id="3", outside_sale=False)
    again = read_request(write_request(request, dialect), dialect)
    assert again.header == header and again.register_id == "3"


def test_the_pos_facts_of_a_sale_are_read_with_their_offsets():
    finalize = next(
        json.loads(line)["xml"]
        for line in CAPTURE.read_text().splitlines()
        if "<FinalizeRewardsRequest>" in line
    )
    txn = read_request(finalize.encode()).transaction
    assert txn.business_date == "2025-09-16" and txn.cashier_id == "91"
    assert txn.event_started_at == "2025-09-17T13:44:17-04:00"
    assert txn.period.type == "day" and txn.period.begin == "2025-09-16T21:32:17-04:00"


def test_end_period_reads_both_periods_and_a_bad_time_is_left_out():
    payload = (
        b"<EndPeriodRequest><RequestHeader><POSSequenceID>9</POSSequenceID></RequestHeader>"
        b"<FromPeriod><BusinessPeriod><BusinessDate>2025-12-29</BusinessDate>"
        b'<PrimaryReportPeriod interval="day">210</PrimaryReportPeriod>'
        b"<BeginDate>2025-12-29</BeginDate><BeginTime>21:13:39-05:00</BeginTime>"
        b"<EndDate>2025-12-30</EndDate><EndTime>25:99</EndTime></BusinessPeriod></FromPeriod>"
        b"<ToPeriod><BusinessPeriod><BusinessDate>2025-13-40</BusinessDate></BusinessPeriod>"
        b"</ToPeriod></EndPeriodRequest>"
    )
    request = read_request(payload)
    closed, opened = request.periods["from"], request.periods["to"]
    assert (closed.business_date, closed.type, closed.begin, closed.end) == (
        "2025-12-29",
        "day",
        "2025-12-29T21:13:39-05:00",
        None,
    )
    assert opened.business_date is None


def test_cancel_redemption_names_its_rewards_wherever_the_pos_puts_them():
    payload = (
        b"<CancelRedemptionRequest><RequestHeader><POSSequenceID>9</POSSequenceID>"
        b"</RequestHeader><LoyaltyID>2142840123</LoyaltyID><LoyaltyRewardID>R1</LoyaltyRewardID>"
        b"<Redemption><LoyaltyRewardID>R2</LoyaltyRewardID><LoyaltyRewardID> </LoyaltyRewardID>"
        b"</Redemption><PointsRedeemed>150</PointsRedeemed></CancelRedemptionRequest>"
    )
    request = read_request(payload)
    assert request.reward_ids == ["R1", "R2"]
    assert request.points_redeemed == Decimal("150")
    back = read_request(write_request(request, "eps"), "eps")
    assert back.reward_ids == ["R1", "R2"]
