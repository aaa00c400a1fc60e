"""The HIS API's requests read into the bill service's types: a bill's JSON body, and the query
of the bill listing. Every problem is an `ApiError` — 400 ``invalid_request`` naming the field
with a JSON pointer (``/lines/2/quantity``; ``""`` for the body itself, ``?limit`` style for a
query parameter) — so that a hospital's developer sees where, not only what."""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from ledger.medical.bills import Submission
from ledger.medical.split import LINES_MAX, QUANTITY_MAX, UNIT_PRICE_MAX_FEN, Bill, BillLine

BILL_ID = re.compile(r"^[0-9A-F]{16}$")
CARD_NO = re.compile(r"^[0-9]{12,19}$")
TEXT_ID = re.compile(r"^[\x21-\x7e]{1,40}$")  # printable ASCII, no space
CODE = re.compile(r"^[\x21-\x7e]{1,20}$")
CATEGORY = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")  # ASCII digits only (not \d)
# RFC 3339 date-time (section 5.6): Python's fromisoformat also takes forms it does not
DATE_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
LIST_LIMIT_MAX = 100
LIST_LIMIT_DEFAULT = 50


class ApiError(Exception):
    """A 4xx answer: `code` (an open set: clients must accept codes they do not know), a
    message, and for a request that is wrong in one place, `field` — where (a JSON pointer)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra: dict[str, str] = {}


def _require(condition: bool, message: str, field: str) -> None:
    if not condition:
        raise ApiError(400, "invalid_request", message, field=field)


def _int(value: Any, name: str, field: str, low: int, high: int) -> int:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
        f"{name} must be an integer from {low} to {high}",
        field,
    )
    return int(value)


def _text(value: Any, name: str, field: str, pattern: re.Pattern[str]) -> str:
    ok = isinstance(value, str) and pattern.match(value) is not None
    _require(ok, f"{name} is malformed", field)
    return str(value)


def _object(
    value: Any, name: str, field: str, required: set[str], optional: set[str]
) -> dict[str, Any]:
    _require(isinstance(value, dict), f"{name} must be a JSON object", field)
    keys = set(value)
    missing = sorted(required - keys)
    _require(not missing, f"{name} needs {missing}", _first(f"{field}/", missing))
    unknown = sorted(keys - required - optional)
    _require(not unknown, f"{name} has unknown fields {unknown}", _first(f"{field}/", unknown))
    return dict(value)


def _first(prefix: str, names: list[str]) -> str:
    """The pointer to the first of `names` (JSON pointer escaping: ~ and /)."""
    name = names[0] if names else ""
    return prefix + name.replace("~", "~0").replace("/", "~1")


def _line(line: Any, number: int) -> BillLine:
    at = f"/lines/{number - 1}"
    item = _object(line, f"line {number}", at, {"code", "quantity", "unit_price_fen"}, set())
    return BillLine(
        _text(item["code"], f"line {number} code", f"{at}/code", CODE),
        _int(item["quantity"], f"line {number} quantity", f"{at}/quantity", 1, QUANTITY_MAX),
        _int(
            item["unit_price_fen"],
            f"line {number} unit_price_fen",
            f"{at}/unit_price_fen",
            0,
            UNIT_PRICE_MAX_FEN,
        ),
    )


def parse_submission(body: Any, *, numbered: bool = True) -> Submission:
    """A bill; a price check's (`numbered` False) may leave out his_bill_no (it is unused)."""
    required = {"card_no", "service_date", "lines"}
    numbering = {"his_bill_no"}
    data = _object(
        body,
        "the bill",
        "",
        required | (numbering if numbered else set()),
        {"special_category"} | (set() if numbered else numbering),
    )
    try:
        day = dt.date.fromisoformat(
            _text(data["service_date"], "service_date", "/service_date", DATE)
        )
    except ValueError:
        raise ApiError(
            400, "invalid_request", "service_date is not a date", field="/service_date"
        ) from None
    lines = data["lines"]
    _require(
        isinstance(lines, list) and 1 <= len(lines) <= LINES_MAX,
        f"lines is a list of 1 to {LINES_MAX} items",
        "/lines",
    )
    parsed = tuple(_line(line, number) for number, line in enumerate(lines, start=1))
    special = data.get("special_category")
    if special is not None:
        special = _text(special, "special_category", "/special_category", CATEGORY)
    return Submission(
        his_bill_no=(
            _text(data["his_bill_no"], "his_bill_no", "/his_bill_no", TEXT_ID)
            if numbered or "his_bill_no" in data
            else ""
        ),
        card_no=_text(data["card_no"], "card_no", "/card_no", CARD_NO),
        service_date=day,
        bill=Bill(parsed, special),
    )


# -- the listing's query ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ListQuery:
    since: dt.datetime
    after_no: str  # "" from the first bill
    limit: int


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def encode_cursor(his_bill_no: str) -> str:
    return base64.urlsafe_b64encode(his_bill_no.encode()).decode().rstrip("=")


def parse_cursor(text: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    _require(TEXT_ID.match(raw) is not None, "cursor is not one this API gave", "?cursor")
    return raw


def _since(text: str) -> dt.datetime:
    when = None
    if DATE_TIME.match(text):
        with contextlib.suppress(ValueError):  # a day or an hour out of range, a leap second
            when = dt.datetime.fromisoformat(text.upper())
    _require(when is not None, "since is a date-time with its offset (RFC 3339)", "?since")
    assert when is not None
    return when


def parse_limit(query: dict[str, str], default: int, maximum: int) -> int:
    """`limit`: a decimal integer from 1 to `maximum` (ASCII digits: `²` or `٣` is no
    number here, though str.isdigit says so), `default` when absent."""
    text = query.get("limit", str(default))
    limit = int(text) if text.isascii() and text.isdigit() and len(text) <= 4 else 0
    _require(1 <= limit <= maximum, f"limit is from 1 to {maximum}", "?limit")
    return limit


def parse_list_query(query: dict[str, str]) -> ListQuery:
    """`since` (RFC 3339, with an offset), `limit` (1 to 100, default 50), `cursor` (the
    `next_cursor` of the page before); another parameter is refused."""
    unknown = sorted(set(query) - {"since", "limit", "cursor"})
    _require(not unknown, f"unknown query parameters {unknown}", _first("?", unknown))
    limit = parse_limit(query, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)
    since = _since(query["since"]) if "since" in query else EPOCH
    after = parse_cursor(query["cursor"]) if "cursor" in query else ""
    return ListQuery(since, after, limit)
