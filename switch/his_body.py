"""A HIS request's JSON body (specs/his-api.yaml, "Encoding"): UTF-8 only, without a byte-order
mark, at most 256 KiB wherever the application is mounted. Each way a body can be wrong has its
own clear answer: another media type or charset 415, a BOM or bytes that are not UTF-8 400
``bad_encoding`` (saying which, and where), then 400 ``malformed_json``."""

from __future__ import annotations

import codecs
import json
import logging
from typing import Any

from aiohttp import web

from switch.his_parse import ApiError

BODY_BYTES_MAX = 256 * 1024  # the HIS limit, whatever the application it is mounted in allows
BODY_LIMIT_TEXT = f"the body is limited to 256 KiB ({BODY_BYTES_MAX} bytes)"
UTF8_ONLY = "send application/json in UTF-8 (charset=utf-8 or none)"
BOMS = {
    codecs.BOM_UTF8: "UTF-8",
    codecs.BOM_UTF32_LE: "UTF-32",  # before UTF-16's: it starts with the same two bytes
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}

log = logging.getLogger("medswitch.his")


class ClientGone(Exception):
    """The client disconnected before its request was read (logged once where it is seen)."""


def check_media_type(request: web.Request) -> None:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", UTF8_ONLY)
    charset = request.charset
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type", f"charset {charset} refused: {UTF8_ONLY}")


async def _read(request: web.Request) -> bytes:
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
    return raw


def decode_utf8(raw: bytes) -> str:
    """The body's text; 400 ``bad_encoding`` for a byte-order mark or bytes that are not UTF-8.

    >>> decode_utf8("门诊".encode())
    '门诊'
    >>> decode_utf8(b"\\xef\\xbb\\xbf{}")
    Traceback (most recent call last):
    ...
    switch.his_parse.ApiError: the body starts with a UTF-8 byte-order mark: send UTF-8 without one
    """
    for bom, name in BOMS.items():
        if raw.startswith(bom):
            message = f"the body starts with a {name} byte-order mark: send UTF-8 without one"
            raise ApiError(400, "bad_encoding", message)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        message = f"the body is not UTF-8 (byte {error.start}): send UTF-8 only (not GBK)"
        raise ApiError(400, "bad_encoding", message) from None


async def json_body(request: web.Request) -> Any:
    """The request's JSON value, after the media type, size and encoding checks."""
    check_media_type(request)
    text = decode_utf8(await _read(request))
    try:
        return json.loads(text)
    except ValueError:
        raise ApiError(400, "malformed_json", "the body is not JSON") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deep") from None
