"""The HIS interface (DESIGN §3.3): an aiohttp application for hospitals' charging systems,
documented by specs/his-api.yaml. The daemon mounts it beside /metrics (`mount_his_app(parent,
deps)`), or serves it on a port of its own, over TLS when configured (`switch.his_serve`);
`medswitch his serve` runs it alone.

Each institution authenticates with HTTP Basic: user = its institution id, password = its HIS
token (stored salted and hashed, `ReferenceData.issue_credential`). An institution sees and
touches only its own bills: another's bill answers exactly like a missing one (404).

Every refusal is a JSON body ``{"error": {"code": ..., "message": ..., "request_id": ...}}``
(with ``field``, a JSON pointer, when one field is at fault; `switch.his_parse`) with a 4xx
status, and stores nothing; every answer carries X-Request-Id. A retry of a stored bill gets it
back whatever happened since; ``GET /his/v1/bills`` finds a bill by the hospital's own number or
lists its bills page by page, and ``GET /his/v1/reconciliation`` a service date's bills with
their shares and totals (`switch.his_reconcile`). The bill service is synchronous (SQLite
through SQLAlchemy Core); handlers run it in a worker thread so the event loop never waits on
the database.

Abuse: failed logins are throttled per institution id and per client address
(`switch.his_throttle`: 429 ``too_many_attempts`` with Retry-After, counted in /metrics); a bill
over the plausibility limits of `ledger.medical.limits` is refused 422 ``bill_over_limit``; the
application sweeps expired bills every `expiry_sweep_s` (`switch.his_sweep`); each institution
has a request rate (`switch.his_rate`, 429 ``rate_limited``). Bodies are UTF-8 JSON only
(`switch.his_body`); writes take an Idempotency-Key (`switch.his_idempotency`); a line the
institution may not bill is 422 with its pointer (`ledger.medical.billable`); the catalogue is
served as the centre prices with it (`switch.his_catalogue`); a service date after today in the
centre's time zone is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from aiohttp import web

from ledger.medical.bills import (
    BillRecord,
    BillStateError,
    DuplicateBillError,
    Submission,
    bill_id_for,
)
from ledger.medical.codec import bill_to_dict, split_to_dict
from ledger.medical.refusals import MedicalError
from ledger.medical.service import MedicalService
from ledger.medical.split import BillError, Split, explain
from switch.his_auth import (
    REALM,
    CredentialCheck,
    MemoryCredentials,
    ThrottledError,
    authenticate,
    credentials,
)
from switch.his_body import BODY_BYTES_MAX, BODY_LIMIT_TEXT, ClientGone, json_body
from switch.his_book import get_book
from switch.his_catalogue import catalogue_response
from switch.his_health import Reviews, put_health
from switch.his_idempotency import HEADER, REPLAYED, Answer, IdempotencyKeys, fingerprint, key_of
from switch.his_parse import (
    BILL_ID,
    TEXT_ID,
    ApiError,
    encode_cursor,
    parse_list_query,
    parse_submission,
)
from switch.his_rate import RateLimiter
from switch.his_reconcile import reconciliation_page
from switch.his_sweep import sweep_expired_bills
from switch.his_throttle import LoginThrottle
from switch.metrics import Metrics

__all__ = ["BODY_BYTES_MAX", "HisDeps", "MemoryCredentials", "make_his_app", "mount_his_app"]

PREFIX = "/his/v1"
REQUEST_ID_HEADER = "X-Request-Id"

T = TypeVar("T")
log = logging.getLogger("medswitch.his")


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
    rate: RateLimiter = field(default_factory=RateLimiter)  # requests per institution
    idempotency: IdempotencyKeys = field(default_factory=IdempotencyKeys)
    timezone: str = "Asia/Shanghai"  # the centre's: service dates and "today" are in it
    reviews: Reviews | None = None  # the ledger's add_review: refused health updates (his_health)

    def today(self) -> dt.date:
        return self.clock().astimezone(ZoneInfo(self.timezone)).date()


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


def _institution(request: web.Request) -> str:
    """The institution the middleware authenticated (its credentials are in every request)."""
    return credentials(request)[0]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Credentials first, then the handler; every answer carries a request id (X-Request-Id),
    every refusal the error object."""
    request_id = new_request_id()
    try:
        deps = request.app[DEPS]
        await authenticate(request, deps.credentials, deps.throttle, deps.rate, deps.metrics)
        response = await handler(request)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except ThrottledError as error:
        retry = {"Retry-After": str(error.retry_after_s)}
        return error_response(error.status, error.code, error.message, retry, request_id=request_id)
    except ApiError as error:
        kept = {"Retry-After": "1"} if error.code == "request_in_progress" else None
        return error_response(
            error.status,
            error.code,
            error.message,
            kept,
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


async def _call(fn: Callable[..., T], *args: Any) -> T:
    try:
        return await asyncio.to_thread(fn, *args)
    except MedicalError as error:
        at = f"/lines/{error.line - 1}/code" if error.line else None
        status = BUSINESS_STATUS.get(error.code, 422)
        raise ApiError(status, error.code, str(error), field=at) from None
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


def _dated(deps: HisDeps, submission: Submission) -> Submission:
    """A service date after today in the centre's time zone is refused."""
    today = deps.today()
    if submission.service_date > today:
        message = (
            f"service_date {submission.service_date} is after today ({today}, {deps.timezone})"
        )
        raise ApiError(422, "service_date_in_future", message, field="/service_date")
    return submission


async def _idempotent(
    request: web.Request, body: Any, answer: Callable[[], Awaitable[web.Response]]
) -> web.Response:
    """`answer()` under the request's Idempotency-Key, if it has one (`switch.his_idempotency`)."""
    key = key_of(request.headers.get(HEADER))
    if key is None:
        return await answer()
    keys = request.app[DEPS].idempotency
    institution = _institution(request)
    print_ = fingerprint(request.method, request.path, body)
    kept = keys.begin(institution, key, print_)
    if kept is not None:
        return web.Response(
            status=kept.status,
            body=kept.body,
            content_type="application/json",
            headers={REPLAYED: "true"},
        )
    try:
        response = await answer()
    except BaseException:
        keys.abandon(institution, key)
        raise
    assert isinstance(response.body, bytes)
    keys.finish(institution, key, print_, Answer(response.status, response.body))
    return response


async def submit_bill(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await json_body(request)

    async def answer() -> web.Response:
        submission = _dated(deps, parse_submission(body))
        institution = _institution(request)
        try:
            record, created = await _call(
                deps.service.submit_bill, institution, submission, deps.clock()
            )
        except ApiError as error:
            if error.code == "duplicate_bill_no":  # the stored bill's id: the HIS can look
                error.extra["bill_id"] = bill_id_for(institution, submission.his_bill_no)
            raise
        return web.json_response(bill_json(record), status=201 if created else 200)

    return await _idempotent(request, body, answer)


async def find_bills(request: web.Request) -> web.Response:
    """A page of the institution's bills (BillPage): with ``?his_bill_no=`` the one with that
    number, or none; otherwise by bill number (`since`, `limit`, `cursor`)."""
    deps = request.app[DEPS]
    institution = _institution(request)
    query = dict(request.query)
    if "his_bill_no" in query:
        number = query.pop("his_bill_no")
        parse_list_query({k: v for k, v in query.items() if k == "limit"})  # a valid limit
        if others := sorted(set(query) - {"limit"}):  # (generated clients send its default)
            message = "his_bill_no and limit are the only parameters of a lookup"
            raise ApiError(400, "invalid_request", message, field="?" + others[0])
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
    submission = _dated(deps, parse_submission(await json_body(request), numbered=False))
    priced = await _call(deps.service.price, _institution(request), submission)
    return web.json_response({"split": split_json(priced.split)})


async def get_bill(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    record = await _call(deps.service.bill_for, _institution(request), _bill_id(request))
    return web.json_response(bill_json(record))


async def cancel_bill(request: web.Request) -> web.Response:
    deps = request.app[DEPS]

    async def answer() -> web.Response:
        record = await _call(
            deps.service.cancel_bill, _institution(request), _bill_id(request), deps.clock()
        )
        return web.json_response(bill_json(record))

    return await _idempotent(request, None, answer)


async def get_reconciliation(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    store, query = deps.service.store, dict(request.query)
    page = await _call(reconciliation_page, store, _institution(request), query)
    return web.json_response(page)


async def get_catalogue(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    directory = deps.service.directory
    zone = ZoneInfo(deps.timezone)
    return await catalogue_response(request, directory, _institution(request), deps.clock, zone)


async def get_card_book(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    return await get_book(request, deps.service, deps.clock().astimezone(ZoneInfo(deps.timezone)))


async def put_card_health(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    now = deps.clock().astimezone(ZoneInfo(deps.timezone))
    return await put_health(request, deps.service, deps.reviews, now)


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
    app.router.add_get(f"{prefix}/catalogue", get_catalogue)
    app.router.add_get(f"{prefix}/reconciliation", get_reconciliation)
    app.router.add_put(f"{prefix}/cards/{{card_no}}/health", put_card_health)
    app.router.add_get(f"{prefix}/cards/{{card_no}}/book", get_card_book)
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
