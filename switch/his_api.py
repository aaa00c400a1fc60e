"""The HIS interface (DESIGN §3.3): an aiohttp application for hospitals' charging systems,
documented by specs/his-api.yaml. The daemon mounts it (`mount_his_app(parent, deps)`); until then
`medswitch his serve` (or `python -m switch.his_api`) runs it on its own.

Each institution authenticates with HTTP Basic: user = its institution id, password = its HIS
token (stored salted and hashed, `ReferenceData.issue_credential`). An institution sees and
touches only its own bills: another's bill answers exactly like a missing one (404).

Every refusal is a JSON body ``{"error": {"code": ..., "message": ..., "request_id": ...}}``
(with ``field``, a JSON pointer, when one field is at fault; `switch.his_parse`) with a 4xx
status, and stores nothing; every answer carries X-Request-Id. A retry of a stored bill gets it
back whatever happened since; ``GET /his/v1/bills`` finds a bill by the hospital's own number or
lists its bills page by page. The bill service is synchronous (SQLite through SQLAlchemy
Core); handlers run it in a worker thread so the event loop never waits on the database.

Abuse: failed logins are throttled per institution id and per client address
(`switch.his_throttle`: 429 ``too_many_attempts`` with Retry-After, counted in /metrics); a bill
over the plausibility limits of `ledger.medical.limits` is refused 422 ``bill_over_limit``; the
application sweeps expired bills every `expiry_sweep_s` (`switch.his_sweep`). A body nested
too deep for the JSON parser is 400 ``malformed_json``; a client that disconnects mid-body is
logged in one line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiohttp import web

from ledger.medical.bills import BillRecord, BillStateError, DuplicateBillError, bill_id_for
from ledger.medical.codec import bill_to_dict, split_to_dict
from ledger.medical.service import MedicalError, MedicalService
from ledger.medical.split import BillError, Split, explain
from switch.his_parse import (
    BILL_ID,
    TEXT_ID,
    ApiError,
    encode_cursor,
    parse_list_query,
    parse_submission,
)
from switch.his_sweep import sweep_expired_bills
from switch.his_throttle import LoginThrottle
from switch.metrics import Metrics

PREFIX = "/his/v1"
BODY_BYTES_MAX = 256 * 1024  # the HIS limit, whatever the application it is mounted in allows
BODY_LIMIT_TEXT = f"the body is limited to 256 KiB ({BODY_BYTES_MAX} bytes)"
REQUEST_ID_HEADER = "X-Request-Id"
REALM = 'Basic realm="medswitch-his", charset="UTF-8"'
INSTITUTION = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

T = TypeVar("T")
log = logging.getLogger("medswitch.his")


class CredentialCheck(Protocol):
    def check_credential(self, institution_id: str, token: str) -> bool: ...


@dataclass
class MemoryCredentials:
    """Salted SHA-256 hashes of tokens in memory (tests, the simulator's own server)."""

    hashes: dict[str, tuple[str, str]] = field(default_factory=dict)  # id → (salt, hash)

    def issue(self, institution_id: str, token: str | None = None) -> str:
        token = token or secrets.token_urlsafe(24)
        salt = secrets.token_hex(16)
        self.hashes[institution_id] = (salt, _hash(salt, token))
        return token

    def check_credential(self, institution_id: str, token: str) -> bool:
        salt, expected = self.hashes.get(institution_id, ("00" * 16, ""))
        return hmac.compare_digest(expected, _hash(salt, token)) and bool(expected)


def _hash(salt: str, token: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + token.encode()).hexdigest()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class HisDeps:
    service: MedicalService
    credentials: CredentialCheck
    clock: Callable[[], dt.datetime] = _utc_now
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    metrics: Metrics = field(default_factory=Metrics)
    expiry_sweep_s: float = 60.0  # expired bills are released this often; 0: no sweep


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    request_id: str | None = None,
    field: str | None = None,
    extra: dict[str, str] | None = None,
) -> web.Response:
    """The error object: `code` (an open set), `message`, `request_id` (also the
    X-Request-Id header), `field` (a JSON pointer) when one field is at fault, and for some
    codes more (`bill_id` of a duplicate_bill_no)."""
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = REALM
    request_id = request_id or new_request_id()
    headers[REQUEST_ID_HEADER] = request_id
    error: dict[str, str] = {"code": code, "message": message, "request_id": request_id}
    if field is not None:
        error["field"] = field
    error.update(extra or {})
    return web.json_response({"error": error}, status=status, headers=headers)


def new_request_id() -> str:
    return secrets.token_hex(8)


#: MedicalError codes → HTTP status
BUSINESS_STATUS = {"not_found": 404, "card_mismatch": 409, "expired": 409}


# -- responses ----------------------------------------------------------------------------------
def split_json(split: Split) -> dict[str, Any]:
    return {**split_to_dict(split), "explanation": list(explain(split))}


def bill_json(record: BillRecord) -> dict[str, Any]:
    return {
        "bill_id": record.bill_id,
        "his_bill_no": record.his_bill_no,
        "card_no": record.card_no,
        "service_date": record.service_date.isoformat(),
        "state": record.state.value,
        "expires_at": dt.datetime.fromtimestamp(record.expires_at_us / 1e6, dt.UTC).isoformat(),
        "bill": bill_to_dict(record.bill),
        "split": split_json(record.split),
    }


# -- the application ----------------------------------------------------------------------------
DEPS = web.AppKey("his_deps", HisDeps)


def _credentials(request: web.Request) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise ApiError(401, "unauthorised", "HTTP Basic credentials are required")
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "unauthorised", "malformed credentials") from None
    if not sep or not INSTITUTION.match(user) or not password:
        raise ApiError(401, "unauthorised", "malformed credentials")
    return user, password


def _institution(request: web.Request) -> str:
    """The institution the middleware authenticated (its credentials are in every request)."""
    return _credentials(request)[0]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _authenticate(request: web.Request) -> None:
    """The request's credentials, checked unless its id or address is locked (429)."""
    deps = request.app[DEPS]
    institution, token = _credentials(request)
    address = request.remote or ""
    wait_s = deps.throttle.retry_after_s(institution, address)
    if wait_s > 0:
        deps.metrics.his_logins_throttled.inc()
        raise ThrottledError(math.ceil(wait_s))
    with deps.throttle.checking(institution, address):
        check = deps.credentials.check_credential
        if not await asyncio.to_thread(check, institution, token):
            deps.throttle.failed(institution, address)
            deps.metrics.his_login_failures.inc()
            raise ApiError(401, "unauthorised", "wrong institution id or token")
        deps.throttle.succeeded(institution, address)


class ClientGone(Exception):
    """The client disconnected before its request was read (logged once where it is seen)."""


class ThrottledError(ApiError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(429, "too_many_attempts", "too many failed logins: retry later")
        self.retry_after_s = retry_after_s


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Credentials first, then the handler; every answer carries a request id (X-Request-Id),
    every refusal the error object."""
    request_id = new_request_id()
    try:
        await _authenticate(request)
        response = await handler(request)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except ThrottledError as error:
        retry = {"Retry-After": str(error.retry_after_s)}
        return error_response(
            error.status, error.code, error.message, retry, request_id=request_id
        )
    except ApiError as error:
        return error_response(
            error.status,
            error.code,
            error.message,
            request_id=request_id,
            field=error.field,
            extra=error.extra,
        )
    except ClientGone:  # an answer for the record (the access log): nobody reads it
        message = "the client disconnected mid-body"
        return error_response(400, "incomplete_body", message, request_id=request_id)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "too_large", BODY_LIMIT_TEXT, request_id=request_id)
    except web.HTTPException as error:
        if error.status >= 500 or error.status < 400:
            raise
        code = error.reason.lower().replace(" ", "_")
        kept = {name: error.headers[name] for name in ("Allow",) if name in error.headers}
        return error_response(error.status, code, error.reason, kept, request_id=request_id)


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    declared = request.content_length
    if declared is not None and declared > BODY_BYTES_MAX:
        raise ApiError(413, "too_large", BODY_LIMIT_TEXT)
    try:
        raw = await request.content.read(BODY_BYTES_MAX + 1)
        while len(raw) <= BODY_BYTES_MAX and not request.content.at_eof():
            chunk = await request.content.read(BODY_BYTES_MAX + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
    except ConnectionError as error:  # the client went away mid-body: nobody to answer
        log.info("HIS client %s disconnected mid-body: %s", request.remote, error)
        raise ClientGone from None
    if len(raw) > BODY_BYTES_MAX:  # a chunked body without a length
        raise ApiError(413, "too_large", BODY_LIMIT_TEXT)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "malformed_json", "the body is not JSON") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deep") from None


async def _call(fn: Callable[..., T], *args: Any) -> T:
    try:
        return await asyncio.to_thread(fn, *args)
    except MedicalError as error:
        raise ApiError(BUSINESS_STATUS.get(error.code, 422), error.code, str(error)) from None
    except BillError as error:
        raise ApiError(400, "invalid_request", str(error)) from None
    except DuplicateBillError as error:
        raise ApiError(409, "duplicate_bill_no", str(error)) from None
    except BillStateError as error:
        raise ApiError(409, "bad_state", str(error)) from None


def _bill_id(request: web.Request) -> str:
    bill_id = request.match_info["bill_id"]
    if not BILL_ID.match(bill_id):
        raise ApiError(404, "not_found", "no such bill")
    return bill_id


async def submit_bill(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    submission = parse_submission(await _json_body(request))
    institution = _institution(request)
    try:
        record, created = await _call(
            deps.service.submit_bill, institution, submission, deps.clock()
        )
    except ApiError as error:
        if error.code == "duplicate_bill_no":  # the stored bill's id: the HIS can look at it
            error.extra["bill_id"] = bill_id_for(institution, submission.his_bill_no)
        raise
    return web.json_response(bill_json(record), status=201 if created else 200)


async def find_bills(request: web.Request) -> web.Response:
    """A page of the institution's bills (BillPage): with ``?his_bill_no=`` the one with that
    number, or none; otherwise by bill number (`since`, `limit`, `cursor`)."""
    deps = request.app[DEPS]
    institution = _institution(request)
    query = dict(request.query)
    if "his_bill_no" in query:
        number = query.pop("his_bill_no")
        if query:
            message = "his_bill_no is the only parameter of a lookup"
            raise ApiError(400, "invalid_request", message, field="?" + sorted(query)[0])
        found = []
        if TEXT_ID.match(number):
            with contextlib.suppress(ApiError):  # not_found: an empty page
                found.append(await _call(deps.service.bill_numbered, institution, number))
        return web.json_response({"bills": [bill_json(r) for r in found], "next_cursor": None})
    wanted = parse_list_query(query)
    records = await _call(
        deps.service.bills_of, institution, wanted.after_no, wanted.since, wanted.limit
    )
    more = len(records) == wanted.limit
    page = {
        "bills": [bill_json(record) for record in records],
        "next_cursor": encode_cursor(records[-1].his_bill_no) if more else None,
    }
    return web.json_response(page)


async def price_check(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    submission = parse_submission(await _json_body(request))
    priced = await _call(deps.service.price, _institution(request), submission)
    return web.json_response({"split": split_json(priced.split)})


async def get_bill(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    record = await _call(deps.service.bill_for, _institution(request), _bill_id(request))
    return web.json_response(bill_json(record))


async def cancel_bill(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    record = await _call(
        deps.service.cancel_bill, _institution(request), _bill_id(request), deps.clock()
    )
    return web.json_response(bill_json(record))


async def _expiry_sweep(app: web.Application) -> AsyncIterator[None]:
    deps = app[DEPS]
    task = None
    if deps.expiry_sweep_s > 0:
        sweep = sweep_expired_bills(deps.service.expire_bills, deps.clock, deps.expiry_sweep_s)
        task = asyncio.create_task(sweep, name="his-bill-expiry")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_his_app(deps: HisDeps, *, prefix: str = PREFIX) -> web.Application:
    """The HIS application with its routes under `prefix`: run it alone as it is, or mount it
    in the daemon's HTTP application with `mount_his_app` (its credentials, error handling and
    body limit then apply to its routes only)."""
    app = web.Application(middlewares=[errors_and_auth], client_max_size=BODY_BYTES_MAX)
    app[DEPS] = deps
    app.cleanup_ctx.append(_expiry_sweep)
    app.router.add_post(f"{prefix}/bills", submit_bill)
    app.router.add_get(f"{prefix}/bills", find_bills)
    app.router.add_post(f"{prefix}/price-check", price_check)
    app.router.add_get(f"{prefix}/bills/{{bill_id}}", get_bill)
    app.router.add_post(f"{prefix}/bills/{{bill_id}}/cancel", cancel_bill)
    return app


def mount_his_app(parent: web.Application, deps: HisDeps) -> web.Application:
    """Mount the HIS application at /his/v1 of `parent` (e.g. beside /metrics and /healthz)."""
    app = make_his_app(deps, prefix="")
    parent.add_subapp(PREFIX, app)
    # every other path under /his/ (another version, a typo) answers the HIS error shape too
    parent.router.add_route("*", r"/his{rest:(/(?!v1(?:/|$)).*)?}", _no_such_path)
    return app


async def _no_such_path(_: web.Request) -> web.Response:
    return error_response(404, "not_found", f"no such path: this centre serves {PREFIX}")
