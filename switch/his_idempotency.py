"""The ``Idempotency-Key`` header of the HIS API's writes (specs/his-api.yaml, "Idempotency").

A key names one request of one institution: the operation (method and path) and its body's
content (its canonical JSON: key order and whitespace do not matter). The first request's
successful answer is kept with the key; the same key with the same request gets that answer
again (``Idempotent-Replayed: true``), with another request 422 ``idempotency_key_reused`` —
nothing is done; while the first is still being answered, 409 ``request_in_progress`` with
``Retry-After``. A refusal keeps nothing (the key may be used again). Keys are kept
`retention_s` in the serving process, at most `keys_max` of them (the oldest forgotten first);
the bill number and the cancel's idempotence are what lasts beyond that.

>>> now = [0.0]
>>> keys = IdempotencyKeys(IdempotencySettings(retention_s=10), clock=lambda: now[0])
>>> first = fingerprint("POST", "/his/v1/bills", {"a": 1, "b": 2})
>>> keys.begin("H001", "k1", first) is None
True
>>> keys.finish("H001", "k1", first, Answer(201, b"{}"))
>>> keys.begin("H001", "k1", fingerprint("POST", "/his/v1/bills", {"b": 2, "a": 1}))
Answer(status=201, body=b'{}')
>>> keys.begin("H001", "k1", fingerprint("POST", "/his/v1/bills", {"a": 2}))
Traceback (most recent call last):
...
switch.his_parse.ApiError: Idempotency-Key k1 was used for another request
>>> now[0] = 11.0
>>> keys.begin("H001", "k1", fingerprint("POST", "/his/v1/bills", {"a": 2})) is None
True
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from switch.his_parse import ApiError

HEADER = "Idempotency-Key"
KEY = re.compile(r"^[\x21-\x7e]{1,64}$")  # printable ASCII, no space (a UUID fits)
REPLAYED = "Idempotent-Replayed"


@dataclass(frozen=True, slots=True)
class IdempotencySettings:
    retention_s: float = 86_400.0
    keys_max: int = 100_000

    def __post_init__(self) -> None:
        if self.retention_s <= 0 or self.keys_max < 1:
            raise ValueError("idempotency_retention_s > 0")


class Answer(NamedTuple):
    status: int
    body: bytes  # the JSON answer as sent


class _Entry(NamedTuple):
    fingerprint: str
    answer: Answer | None  # None: still being answered
    until_s: float


def fingerprint(method: str, path: str, body: Any) -> str:
    """The request a key names: method, path, canonical JSON of the body."""
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_of(header: str | None) -> str | None:
    if header is None:
        return None
    if not KEY.match(header):
        message = f"{HEADER} is 1 to 64 printable ASCII characters without spaces"
        raise ApiError(400, "invalid_request", message, field=f"header:{HEADER}")
    return header


class IdempotencyKeys:
    """Used on the event loop only (no lock)."""

    def __init__(
        self,
        settings: IdempotencySettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or IdempotencySettings()
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def _live(self, slot: tuple[str, str], now_s: float) -> _Entry | None:
        entry = self._entries.get(slot)
        if entry is not None and entry.until_s <= now_s:
            del self._entries[slot]
            return None
        return entry

    def begin(self, institution_id: str, key: str, print_: str) -> Answer | None:
        """The kept answer to replay, or None: go on (then `finish` or `abandon`)."""
        now_s = self._clock()
        slot = (institution_id, key)
        entry = self._live(slot, now_s)
        if entry is not None:
            if entry.fingerprint != print_:
                message = f"{HEADER} {key} was used for another request"
                raise ApiError(422, "idempotency_key_reused", message, field=f"header:{HEADER}")
            if entry.answer is None:
                raise ApiError(409, "request_in_progress", f"{HEADER} {key} is being answered")
            return entry.answer
        self._entries[slot] = _Entry(print_, None, now_s + self.settings.retention_s)
        while len(self._entries) > self.settings.keys_max:
            self._entries.popitem(last=False)
        return None

    def finish(self, institution_id: str, key: str, print_: str, answer: Answer) -> None:
        now_s = self._clock()
        self._entries[(institution_id, key)] = _Entry(
            print_, answer, now_s + self.settings.retention_s
        )

    def abandon(self, institution_id: str, key: str) -> None:
        """The request was refused: the key keeps nothing."""
        self._entries.pop((institution_id, key), None)
