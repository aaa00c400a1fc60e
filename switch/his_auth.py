"""The HIS API's authentication: HTTP Basic (user = institution id, password = its HIS token),
checked behind the failed-login throttle (`switch.his_throttle`), then the institution's request
rate (`switch.his_rate`). Both refuse with 429 and Retry-After."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from switch.his_parse import ApiError
from switch.his_rate import RateLimiter
from switch.his_throttle import LoginThrottle
from switch.metrics import Metrics

REALM = 'Basic realm="medswitch-his", charset="UTF-8"'
INSTITUTION = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


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


def credentials(request: web.Request) -> tuple[str, str]:
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


class ThrottledError(ApiError):
    """429 with Retry-After (whole seconds, at least 1)."""

    def __init__(self, code: str, message: str, wait_s: float) -> None:
        super().__init__(429, code, message)
        self.retry_after_s = max(1, math.ceil(wait_s))


async def authenticate(
    request: web.Request,
    check: CredentialCheck,
    throttle: LoginThrottle,
    rate: RateLimiter,
    metrics: Metrics,
) -> None:
    """The request's credentials, checked unless its id or address is locked (429
    ``too_many_attempts``); then the institution's request rate (429 ``rate_limited``)."""
    institution, token = credentials(request)
    address = request.remote or ""
    wait_s = throttle.retry_after_s(institution, address)
    if wait_s > 0:
        metrics.his_logins_throttled.inc()
        message = "too many failed logins: retry later"
        raise ThrottledError("too_many_attempts", message, wait_s)
    with throttle.checking(institution, address):
        if not await asyncio.to_thread(check.check_credential, institution, token):
            throttle.failed(institution, address)
            metrics.his_login_failures.inc()
            raise ApiError(401, "unauthorised", "wrong institution id or token")
        throttle.succeeded(institution, address)
    wait_s = rate.wait_s(institution)
    if wait_s > 0:
        message = f"over {rate.settings.per_s:g} requests a second: retry later"
        raise ThrottledError("rate_limited", message, wait_s)
