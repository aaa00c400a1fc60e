"""Every HIS API request measured and logged: an aiohttp middleware of the daemon's HTTP
application (outermost, so a request the body limit refuses is seen too) that, for each request
under ``/his``, counts ``medswitch_his_requests_total{route,status,institution}``, observes
``medswitch_his_request_seconds{route}`` and writes one JSON log line (logger
``medswitch.his``: INFO, WARNING for a refused login or a 5xx).

Labels stay bounded: ``route`` is the method and route template (``POST /his/v1/bills``,
``GET /his/v1/bills/{bill_id}``) or ``other``; ``institution`` is the institution only when the
HIS application authenticated the request (a route of its own answered, and not 401, 413 or
429), else ``-``. The log line names the path with any card-number-like digits masked, the
status, the claimed institution id (a failed login's too, when it is a well-formed id), the
client's address, the request id the API answered with and the time taken; never the body,
the query or the token.

>>> mask_digits("/his/v1/bills/6212340000000016")
'/his/v1/bills/621234******0016'
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from messages.pretty import mask_pan
from switch.metrics import Metrics

log = logging.getLogger("medswitch.his")

PREFIX = "/his"
ROUTES = "/his/v1/"  # the HIS application's routes (switch.his_api.PREFIX)
UNAUTHENTICATED = frozenset({401, 413, 429})
_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_CARD_LIKE = re.compile(r"\d{11,19}")
_PATH_CHARS_MAX = 200

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def mask_digits(text: str) -> str:
    """``text`` with every run of 11 to 19 digits masked as a PAN is (first 6, last 4)."""
    return _CARD_LIKE.sub(lambda found: mask_pan(found.group()), text)


def his_observer(metrics: Metrics) -> Middleware:
    """The middleware, counting into ``metrics``."""

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PREFIX):
            return await handler(request)
        started = time.perf_counter()
        status, request_id = 500, ""
        try:
            response = await handler(request)
            status, request_id = response.status, response.headers.get("X-Request-Id", "")
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            _record(metrics, request, status, request_id, time.perf_counter() - started)

    return observe


def _record(
    metrics: Metrics, request: web.Request, status: int, request_id: str, seconds: float
) -> None:
    route = _route(request)
    claimed = _claimed_institution(request)
    authenticated = route != "other" and status not in UNAUTHENTICATED
    institution = claimed if authenticated and claimed else "-"
    metrics.his_requests.labels(route, str(status), institution).inc()
    metrics.his_request_seconds.labels(route).observe(seconds)
    level = logging.WARNING if status in (401, 429) or status >= 500 else logging.INFO
    if not log.isEnabledFor(level):
        return
    fields = {
        "method": request.method,
        "route": route,
        "path": mask_digits(request.path[:_PATH_CHARS_MAX]),
        "status": status,
        "institution": claimed or "-",
        "authenticated": authenticated,
        "remote": request.remote or "",
        "request_id": request_id,
        "ms": round(seconds * 1000, 3),
    }
    log.log(level, "HIS request", extra={"fields": fields})


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    canonical = "" if resource is None else resource.canonical
    if not canonical.startswith(ROUTES):
        return "other"
    return f"{request.method} {canonical}"


def _claimed_institution(request: web.Request) -> str:
    """The user of the request's HTTP Basic credentials when it is a well-formed institution
    id; "" otherwise (no credentials, malformed, or not an id: never logged)."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        user = base64.b64decode(encoded, validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return user if _ID.fullmatch(user) else ""
