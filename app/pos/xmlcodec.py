"""Reading POS XML tolerantly and writing each dialect exactly.

Reading: defusedxml (no DTDs, no entities, no network), a size limit, namespaces stripped, names
matched case-insensitively, values taken from text or from an attribute. Writing: bare elements
for Passport, the namespaced form for Verifone EPS. Names come from `wire.py`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from app.money import BadNumber, fmt_decimal, fmt_money, parse_decimal, read_decimal
from app.pos import wire
from app.pos.model import (
    MESSAGE_STEMS,
    Line,
    LoyaltyIdEntry,
    Period,
    Request,
    RequestHeader,
    Response,
    Reward,
    TransactionData,
)

MAX_XML_BYTES = 1024 * 1024
MAX_TEXT_CHARS = 1024  # any one value the box reads (names, codes, descriptions)
MAX_LOYALTY_ID_CHARS = 4096  # a scanned driver's licence (PDF417) is several hundred
MAX_LINES = 500  # transaction lines in one request
MAX_EXTRA_ELEMENTS = 64  # unknown top-level elements kept as text
_LINE_NUMBER = re.compile(r"[0-9]{1,6}")
_CANONICAL_STEMS = {stem.lower(): stem for stem in MESSAGE_STEMS}


class XmlError(Exception):
    """The payload is not a message we can read (malformed, hostile, too large)."""


class Refused(ValueError):
    """A well-formed request with a value out of bounds: answered without acting on it."""


# ---- reading -------------------------------------------------------------------------------


def _local(tag: object) -> str:
    name = tag if isinstance(tag, str) else ""
    # Reading one request looks up a few hundred names, nearly all the same few dozen: the
    # cache takes a third off read_request. Long (hostile) names are not cached: it stays small.
    return _local_cached(name) if len(name) <= _CACHED_NAME_CHARS else _local_name(name)


def _local_name(name: str) -> str:
    return name.rsplit("}", 1)[-1].rsplit(":", 1)[-1].lower()


_CACHED_NAME_CHARS = 128
_local_cached = lru_cache(maxsize=512)(_local_name)


def _children(el: ET.Element | None, name: str) -> Iterator[ET.Element]:
    if el is None:
        return
    want = name.lower()
    for child in el:
        if _local(child.tag) == want:
            yield child


def _child(el: ET.Element | None, name: str) -> ET.Element | None:
    return next(_children(el, name), None)


def _attr(el: ET.Element | None, *names: str) -> str | None:
    if el is None:
        return None
    wanted = {n.lower() for n in names}
    for key, value in el.attrib.items():
        if _local(key) in wanted:
            return value.strip()
    return None


def _value(el: ET.Element | None, attrs: tuple[str, ...] = ()) -> str | None:
    """An element's value in text or attribute form: <X>v</X>, <X value="v"/>, <X format="v"/>."""
    if el is None:
        return None
    text = _bounded(el, (el.text or "").strip())
    if text:
        return text
    found = _attr(el, *attrs, "value") if attrs else _attr(el, "value")
    if found is None and el.attrib:
        found = next(iter(el.attrib.values())).strip()
    return _bounded(el, found) if found is not None else ""


def _bounded(el: ET.Element, text: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(text) > limit:
        raise Refused(f"{_local(el.tag)} of {len(text)} characters (at most {limit})")
    return text


def _number(el: ET.Element | None, name: str) -> Decimal | None:
    try:
        return read_decimal(_text(el, name))
    except BadNumber as exc:
        raise Refused(f"{name}: {exc}") from None


def _text(el: ET.Element | None, name: str, attrs: tuple[str, ...] = ()) -> str | None:
    value = _value(_child(el, name), attrs)
    return value or None


def _flag(el: ET.Element | None) -> bool | None:
    """Yes/no flags come as value="yes", text "yes", "true" or "1"."""
    if el is None:
        return None
    # The value attribute decides; the text may be display text (<X value="yes">WELCOME</X>).
    value = (_attr(el, "value") or _value(el) or "").lower()
    if value in ("yes", "y", "true", "1"):
        return True
    if value in ("no", "n", "false", "0"):
        return False
    return None


def parse_xml(payload: bytes) -> ET.Element:
    if len(payload) > MAX_XML_BYTES:
        raise XmlError(f"payload of {len(payload)} bytes over the {MAX_XML_BYTES}-byte limit")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XmlError(f"payload is not UTF-8 (byte {exc.start})") from None
    try:
        return SafeET.fromstring(
            payload, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise XmlError(f"forbidden XML construct: {type(exc).__name__}") from None
    except ET.ParseError as exc:
        raise XmlError(f"malformed XML: {exc}") from None
    except (LookupError, ValueError) as exc:  # e.g. encoding="x-unknown" in the declaration
        raise XmlError(f"unreadable XML declaration: {exc}") from None


def read_request(payload: bytes, dialect: str = "passport") -> Request:
    """The request in `payload`. XmlError when it is not readable XML with a readable header;
    a body with a value out of bounds gives a request with `refused` set and no body."""
    root = parse_xml(payload)
    head = _child(root, wire.HEADER)
    try:
        header = RequestHeader(
            **{key: _text(head, name) or "" for key, name in wire.HEADER_FIELDS.items()},
            offline=bool(_flag(_child(head, wire.OFFLINE_FLAG))),
        )
    except Refused as exc:
        raise XmlError(f"header: {exc}") from None
    request = Request(stem=_stem(root), header=header, dialect=dialect)
    try:
        _read_body(root, request)
    except Refused as exc:
        body_less = Request(stem=request.stem, header=header, dialect=dialect)
        body_less.refused = str(exc)
        return body_less
    return request


def _read_body(root: ET.Element, request: Request) -> None:
    known = {wire.HEADER.lower(), wire.LOYALTY_ID.lower(), wire.TRANSACTION_DATA.lower()}
    periods = {
        name.lower(): key for name, key in zip(wire.END_PERIODS, ("from", "to"), strict=True)
    }
    for child in root:
        name = _local(child.tag)
        if name in periods:  # EndPeriod: the period it closes and the one it opens
            request.periods[periods[name]] = _read_period(_child(child, wire.BUSINESS_PERIOD))
        elif name not in known:
            request.extra[name] = _bounded(child, (child.text or "").strip())
        if len(request.extra) > MAX_EXTRA_ELEMENTS:
            raise Refused(f"more than {MAX_EXTRA_ELEMENTS} unknown elements")

    loyalty = _child(root, wire.LOYALTY_ID)
    if loyalty is not None:
        value = _bounded(loyalty, (loyalty.text or "").strip(), MAX_LOYALTY_ID_CHARS)
        method = _attr(loyalty, *wire.ENTRY_METHOD_ATTRS) or _text(loyalty, wire.ENTRY_METHOD) or ""
        if value:
            request.loyalty_id = LoyaltyIdEntry(value=value, entry_method=_bounded(loyalty, method))

    data = _child(root, wire.TRANSACTION_DATA)
    if data is not None:
        request.transaction = _read_transaction(data)
    request.register_id = _text(root, wire.REGISTER_ID)
    request.outside_sale = _flag(_child(root, wire.OUTSIDE_SALES_FLAG))
    for holder in (root, data):
        request.points_redeemed = request.points_redeemed or _number(holder, wire.POINTS_REDEEMED)
        request.final_total = request.final_total or _number(holder, wire.FINAL_TOTAL)
    if request.stem == "CancelRedemption":  # the rewards it cancels, wherever the POS puts them
        for el in root.iter():
            if _local(el.tag) == wire.REWARD_ID.lower() and (el.text or "").strip():
                if len(request.reward_ids) >= MAX_LINES:
                    raise Refused(f"more than {MAX_LINES} reward ids")
                request.reward_ids.append(_bounded(el, el.text.strip()))


def _read_period(el: ET.Element | None) -> Period:
    """A BusinessPeriod; dates and times that do not read as such are left out."""
    primary = _child(el, wire.PRIMARY_REPORT_PERIOD)
    interval = _attr(primary, wire.PERIOD_INTERVAL_ATTR)
    return Period(
        business_date=_date(_text(el, wire.BUSINESS_DATE)),
        type=interval.lower() if interval else None,
        begin=_moment(el, wire.PERIOD_BEGIN),
        end=_moment(el, wire.PERIOD_END),
    )


def _date(text: str | None) -> str | None:
    try:
        return date.fromisoformat(text).isoformat() if text else None
    except ValueError:
        return None


def _moment(el: ET.Element | None, names: tuple[str, str]) -> str | None:
    """A POS date and time ("2025-09-17", "13:44:17-04:00") as RFC 3339, the POS's offset
    kept; without an offset the box's own (the POS is on the same site). None when either
    is missing or unreadable."""
    day, clock = _date(_text(el, names[0])), _text(el, names[1])
    if not day or not clock:
        return None
    try:
        moment = datetime.combine(date.fromisoformat(day), time.fromisoformat(clock))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.isoformat(timespec="seconds")


def _stem(root: ET.Element) -> str:
    return stem_of(root.tag if isinstance(root.tag, str) else "Unknown")


def stem_of(name: str) -> str:
    """The message stem of a root element name: "ns:FinalizeRewardsRequest" -> "FinalizeRewards"."""
    name = name.rsplit("}", 1)[-1].rsplit(":", 1)[-1]
    if name.lower().endswith(wire.REQUEST_SUFFIX.lower()):
        name = name[: -len(wire.REQUEST_SUFFIX)]
    return _CANONICAL_STEMS.get(name.lower(), name or "Unknown")


_NAME = re.compile(rb"[A-Za-z_][\w.:-]{0,127}")
SNIFF_BYTES = 4096


def sniff_stem(payload: bytes) -> str | None:
    """The message stem from the raw bytes, before any parsing: the name of the first element
    after the declaration, comments and a DOCTYPE. None when there is none in the first
    SNIFF_BYTES. Only a name: it decides whether the bytes are journaled before parsing."""
    head = payload[:SNIFF_BYTES]
    pos = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    while True:
        start = head.find(b"<", pos)
        if start < 0:
            return None
        if head.startswith(b"<?", start):
            end, skip = head.find(b"?>", start), 2
        elif head.startswith(b"<!--", start):
            end, skip = head.find(b"-->", start), 3
        elif head.startswith(b"<!", start):
            # A DOCTYPE, maybe with an internal subset "[...]": it ends at the ">" after that.
            bracket, close = head.find(b"[", start), head.find(b">", start)
            if 0 <= bracket < close:
                subset_end = head.find(b"]", bracket)
                close = head.find(b">", subset_end) if subset_end >= 0 else -1
            end, skip = close, 1
        else:
            name = _NAME.match(head, start + 1)
            return stem_of(name.group().decode("ascii", "replace")) if name else None
        if end < 0:
            return None
        pos = end + skip


def _read_transaction(data: ET.Element) -> TransactionData:
    head = _child(data, wire.TRANSACTION_HEADER)
    period_el = _child(head, wire.BUSINESS_PERIOD)
    period = _read_period(period_el) if period_el is not None else None
    txn = TransactionData(
        **{key: _text(head, name) for key, name in wire.TRANSACTION_HEADER_FIELDS.items()},
        # The business date as sent: it keys the event id of a transaction (unchanged).
        business_date=_text(period_el, wire.BUSINESS_DATE),
        outside_sale=bool(_flag(_child(head, wire.OUTSIDE_SALES_FLAG))),
        training=bool(_flag(_child(head, wire.TRAINING_FLAG))),
        period=period,
        event_started_at=_moment(head, wire.EVENT_START),
        event_ended_at=_moment(head, wire.EVENT_END),
    )
    for line_el in _children(_child(data, wire.DETAIL_GROUP), wire.LINE):
        if len(txn.lines) >= MAX_LINES:
            raise Refused(f"more than {MAX_LINES} transaction lines")
        line = _read_line(line_el)
        if line is not None:
            txn.lines.append(line)
    return txn


def _read_line(line_el: ET.Element) -> Line | None:
    number_text = _text(line_el, wire.LINE_NUMBER) or ""
    if _LINE_NUMBER.fullmatch(number_text):
        number = int(number_text)
    elif number_text.lstrip("-").isdigit():
        raise Refused(f"line number {number_text[:24]!r} out of range")
    else:
        number = 0  # tolerated as before: a line without a usable number
    status = (_attr(line_el, wire.LINE_STATUS_ATTR) or "normal").lower()
    body, kind = None, "other"
    for child in line_el:
        for name, line_kind in wire.LINE_KINDS.items():
            if _local(child.tag) == name.lower():
                body, kind = child, line_kind
                break
        if body is not None:
            break
    line = Line(line_number=number, kind=kind, status=status)
    if body is None:
        return line
    fields = {key: _text(body, name) for key, name in wire.LINE_FIELDS.items()}
    line.department = fields["department"]
    line.description = fields["description"]
    line.grade = fields["grade"]
    line.fuel_position = fields["fuel_position"]
    line.tender_code = fields["tender_code"]
    for key in ("quantity", "unit_price", "regular_price", "amount", "tender_amount"):
        setattr(line, key, _number(body, wire.LINE_FIELDS[key]))
    item_code = _child(body, wire.ITEM_CODE)
    line.code_format = _text(item_code, wire.CODE_FORMAT, wire.CODE_FORMAT_ATTRS)
    line.code = _text(item_code, wire.CODE)
    line.discountable = _flag_attr(body, wire.DISCOUNTABLE_ATTR)
    if kind == "fuel":
        line.prepay = _flag_attr(body, *wire.FUEL_PREPAY_ATTRS)
        if line.prepay is None:
            line.prepay = next(
                (_flag(el) for n in wire.FUEL_PREPAY_ATTRS for el in _children(body, n)), None
            )
    # Rewards the POS says it applied: on Promotion elements, or on a TenderInfo line itself.
    holders = [*_children(body, wire.PROMOTION), body]
    for holder in holders:
        reward_id = _text(holder, wire.REWARD_ID)
        if reward_id:
            line.applied_rewards[reward_id] = _number(holder, wire.PROMOTION_AMOUNT)
    return line


def _flag_attr(el: ET.Element, *names: str) -> bool | None:
    value = _attr(el, *names)
    if value is None:
        return None
    return value.lower() in ("yes", "y", "true", "1")


# ---- writing -------------------------------------------------------------------------------


def _root(name: str, eps: bool) -> ET.Element:
    root = ET.Element(name)
    if eps:
        root.set("xmlns", wire.EPS_LOYALTY_NS)
        root.set("xmlns:pcats", wire.EPS_CORE_NS)
        root.set("xmlns:naxml", wire.EPS_NAXML_NS)
    return root


def _header(parent: ET.Element, element: str, header: RequestHeader, eps: bool, keys) -> ET.Element:
    head = ET.SubElement(parent, element)
    for key in keys:
        name = wire.HEADER_FIELDS[key]
        if eps and name in wire.EPS_NAXML_ELEMENTS:
            name = f"naxml:{name}"
        ET.SubElement(head, name).text = getattr(header, key)
    return head


def _serialize(root: ET.Element, eps: bool) -> bytes:
    body = ET.tostring(root, encoding="unicode", short_empty_elements=False)
    prolog = '<?xml version="1.0" encoding="UTF-8"?>' if eps else ""
    return (prolog + body).encode("utf-8")


_RESPONSE_HEADER_KEYS = [k for k in wire.HEADER_FIELDS if k != "store_location_id"]


def write_response(response: Response, dialect: str) -> bytes:
    """The exact XML of a response in one dialect ('passport' or 'eps')."""
    eps = dialect == "eps"
    root = _root(response.stem + wire.RESPONSE_SUFFIX, eps)
    head = _header(root, wire.RESPONSE_HEADER, response.header, eps, _RESPONSE_HEADER_KEYS)
    if eps:
        head.set(wire.EPS_OVERALL_RESULT_ATTR, "success")
    if eps:
        result = ET.SubElement(head, f"pcats:{wire.EPS_RESULT}")
        ET.SubElement(result, f"pcats:{wire.EPS_SUCCESS}")

    if response.prompt_for_loyalty is not None:
        _yes_no(root, wire.PROMPT_FOR_LOYALTY, response.prompt_for_loyalty)
    if response.loyalty_id_valid is not None:
        _yes_no(root, wire.LOYALTY_ID_VALID, response.loyalty_id_valid).text = (
            response.loyalty_id_text or None
        )
    if response.stem == "GetRewards" or response.add_rewards or response.remove_reward_ids:
        actions = ET.SubElement(root, wire.REWARD_ACTIONS)
        for reward_id in response.remove_reward_ids:
            remove = ET.SubElement(actions, wire.REMOVE_REWARD)
            ET.SubElement(remove, wire.REWARD_ID).text = reward_id
        for reward in response.add_rewards:
            add = ET.SubElement(actions, wire.ADD_REWARD)
            fields = wire.REWARD_FIELDS
            ET.SubElement(add, wire.REWARD_ID).text = reward.reward_id
            _yes_no(add, fields["instant"], True)
            ET.SubElement(add, fields["target_line"]).text = str(reward.target_line)
            ET.SubElement(add, fields["method"]).text = reward.method
            ET.SubElement(add, fields["value"]).text = _reward_value(reward.method, reward.value)
            if reward.limit_quantity is not None:
                limit = ET.SubElement(add, fields["limit"], {"type": wire.REWARD_LIMIT_TYPE})
                limit.text = str(reward.limit_quantity)
            ET.SubElement(add, fields["receipt_short"]).text = reward.receipt_short
            ET.SubElement(add, fields["receipt_long"]).text = reward.receipt_long
    if response.receipt_lines:
        message = ET.SubElement(root, wire.CUSTOMER_MESSAGE)
        receipt = ET.SubElement(message, wire.RECEIPT_DATA)
        for text in response.receipt_lines:
            ET.SubElement(receipt, wire.RECEIPT_LINE).text = text
    return _serialize(root, eps)


def _yes_no(parent: ET.Element, element: str, value: bool) -> ET.Element:
    return ET.SubElement(parent, element, {"value": "yes" if value else "no"})


def _reward_value(method: str, value: Decimal) -> str:
    # Currency to the cent; percentages keep what the host said; a new price keeps the tenths
    # of a cent fuel is priced in (3.359), to 4 decimals.
    if method == wire.POS_METHODS["percent_off"]:
        return fmt_decimal(value) or "0"
    if method == wire.POS_METHODS["new_price"] and value != value.quantize(CENT):
        return str(value.quantize(FUEL_PRICE_STEP))
    return fmt_money(value)


CENT = Decimal("0.01")
FUEL_PRICE_STEP = Decimal("0.0001")


# ---- the POS's side: writing requests, reading responses (simulator and tests) -------------


def write_request(request: Request, dialect: str) -> bytes:
    """A request as a POS would send it; used by the POS simulator and the tests."""
    eps = dialect == "eps"
    root = _root(request.stem + wire.REQUEST_SUFFIX, eps)
    head = _header(root, wire.HEADER, request.header, eps, list(wire.HEADER_FIELDS))
    _yes_no(head, wire.OFFLINE_FLAG, request.header.offline)
    if request.stem == "BeginCustomer":
        _yes_no(root, wire.OUTSIDE_SALES_FLAG, bool(request.outside_sale))
        ET.SubElement(root, wire.REGISTER_ID).text = request.register_id or ""
    if request.loyalty_id is not None:
        entry = ET.SubElement(
            root, wire.LOYALTY_ID, {"entryMethod": request.loyalty_id.entry_method}
        )
        entry.text = request.loyalty_id.value
    if request.transaction is not None:
        _write_transaction(root, request.transaction)
    for name, key in zip(wire.END_PERIODS, ("from", "to"), strict=True):
        if key in request.periods:
            _write_period(ET.SubElement(root, name), request.periods[key])
    for reward_id in request.reward_ids:
        ET.SubElement(root, wire.REWARD_ID).text = reward_id
    if request.points_redeemed is not None:
        ET.SubElement(root, wire.POINTS_REDEEMED).text = fmt_decimal(request.points_redeemed)
    if request.final_total is not None:
        ET.SubElement(root, wire.FINAL_TOTAL).text = fmt_money(request.final_total)
    return _serialize(root, eps)


def _write_period(parent: ET.Element, period: Period) -> None:
    """A BusinessPeriod as Passport writes it (field capture): date, report period, bounds."""
    el = ET.SubElement(parent, wire.BUSINESS_PERIOD)
    if period.business_date:
        ET.SubElement(el, wire.BUSINESS_DATE).text = period.business_date
    if period.type:
        ET.SubElement(el, wire.PRIMARY_REPORT_PERIOD, {wire.PERIOD_INTERVAL_ATTR: period.type})
    for names, moment in ((wire.PERIOD_BEGIN, period.begin), (wire.PERIOD_END, period.end)):
        if moment:
            ET.SubElement(el, names[0]).text = moment[:10]
            ET.SubElement(el, names[1]).text = moment[11:]


def _write_transaction(parent: ET.Element, txn: TransactionData) -> None:
    data = ET.SubElement(parent, wire.TRANSACTION_DATA)
    head = ET.SubElement(data, wire.TRANSACTION_HEADER)
    _yes_no(head, wire.TRAINING_FLAG, txn.training)
    _yes_no(head, wire.OUTSIDE_SALES_FLAG, txn.outside_sale)
    for key, element in wire.TRANSACTION_HEADER_FIELDS.items():
        if getattr(txn, key) is not None:
            ET.SubElement(head, element).text = getattr(txn, key)
    if txn.business_date or txn.period:
        period = txn.period or Period()
        _write_period(head, Period(txn.business_date, period.type, period.begin, period.end))
    for names, moment in (
        (wire.EVENT_START, txn.event_started_at),
        (wire.EVENT_END, txn.event_ended_at),
    ):
        if moment:
            ET.SubElement(head, names[0]).text = moment[:10]
            ET.SubElement(head, names[1]).text = moment[11:]
    group = ET.SubElement(data, wire.DETAIL_GROUP)
    kind_names = {kind: name for name, kind in wire.LINE_KINDS.items()}
    for line in txn.lines:
        line_el = ET.SubElement(group, wire.LINE, {wire.LINE_STATUS_ATTR: line.status})
        ET.SubElement(line_el, wire.LINE_NUMBER).text = str(line.line_number)
        if line.kind not in kind_names:
            continue
        body = ET.SubElement(line_el, kind_names[line.kind])
        if line.discountable is not None:
            body.set(wire.DISCOUNTABLE_ATTR, "yes" if line.discountable else "no")
        if line.prepay is not None:
            body.set(wire.FUEL_PREPAY_ATTRS[0], "yes" if line.prepay else "no")
        if line.code is not None:
            code = ET.SubElement(body, wire.ITEM_CODE)
            ET.SubElement(code, wire.CODE_FORMAT).text = line.code_format or "upcA"
            ET.SubElement(code, wire.CODE).text = line.code
        for key, element in wire.LINE_FIELDS.items():
            value = getattr(line, key)
            if isinstance(value, Decimal):
                value = fmt_decimal(value)
            if value is not None:
                ET.SubElement(body, element).text = value
        for reward_id, amount in line.applied_rewards.items():
            promo = ET.SubElement(body, wire.PROMOTION)
            ET.SubElement(promo, wire.REWARD_ID).text = reward_id
            if amount is not None:
                ET.SubElement(promo, wire.PROMOTION_AMOUNT).text = fmt_money(amount)


def read_response(payload: bytes) -> Response:
    """Parse a box response as the POS reads it (simulator and tests)."""
    root = parse_xml(payload)
    name = root.tag.rsplit("}", 1)[-1]
    stem = name[: -len(wire.RESPONSE_SUFFIX)] if name.endswith(wire.RESPONSE_SUFFIX) else name
    head = _child(root, wire.RESPONSE_HEADER)
    header = RequestHeader(**{key: _text(head, el) or "" for key, el in wire.HEADER_FIELDS.items()})
    response = Response(stem=stem, header=header)
    response.prompt_for_loyalty = _flag(_child(root, wire.PROMPT_FOR_LOYALTY))
    valid = _child(root, wire.LOYALTY_ID_VALID)
    response.loyalty_id_valid = _flag(valid)
    response.loyalty_id_text = (valid.text or "").strip() if valid is not None else ""
    actions = _child(root, wire.REWARD_ACTIONS)
    response.remove_reward_ids = [
        _text(el, wire.REWARD_ID) or "" for el in _children(actions, wire.REMOVE_REWARD)
    ]
    fields = wire.REWARD_FIELDS
    for add in _children(actions, wire.ADD_REWARD):
        limit = _text(add, fields["limit"])
        response.add_rewards.append(
            Reward(
                reward_id=_text(add, wire.REWARD_ID) or "",
                target_line=int(_text(add, fields["target_line"]) or 0),
                method=_text(add, fields["method"]) or "",
                value=parse_decimal(_text(add, fields["value"])) or Decimal(0),
                limit_quantity=int(limit) if limit else None,
                receipt_short=_text(add, fields["receipt_short"]) or "",
                receipt_long=_text(add, fields["receipt_long"]) or "",
            )
        )
    receipt = _child(_child(root, wire.CUSTOMER_MESSAGE), wire.RECEIPT_DATA)
    response.receipt_lines = [(el.text or "") for el in _children(receipt, wire.RECEIPT_LINE)]
    return response
