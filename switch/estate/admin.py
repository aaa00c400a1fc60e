"""The estate as a small internal JSON API on the daemon's HTTP port, for the operators' console
(the same operations as the CLI: this package). Every request names its operator by a login
token (``Authorization: Bearer TOKEN``, from `medswitch operators login`); reads need any role,
changes the ``maker`` role, and are audited under the authenticated operator. A change made
here is seen by this daemon at once (it forgets the terminal and card records it keeps).

    GET  /admin/v1/terminals[?institution=&status=&limit=]   GET /admin/v1/terminals/{id}
    POST /admin/v1/terminals {terminal_id, institution_id, kind, group?}
    POST /admin/v1/terminals/{id}/disable | /enable | /move {institution_id?, group?,
         no_group?} | /replace-psam {psam}
    GET  /admin/v1/psams, /admin/v1/psams/{serial}; POST …/{serial}/disable | /enable | /unbind
    GET  /admin/v1/institutions, …/{id}; POST /admin/v1/institutions {institution_id, kind,
         name, level?, bank?}; POST …/{id}/disable | /enable | /authorise-health |
         /revoke-health
    GET  /admin/v1/parameters, …/{version}; POST /admin/v1/parameters {institution? | group?,
         floor_fen, count_max, age_max_h, categories?}
    GET  /admin/v1/blacklist[?all=1]; POST /admin/v1/blacklist {card, reason, note?};
         POST /admin/v1/blacklist/remove {card, note}
    GET  /admin/v1/bills, …/{bill_id}; GET /admin/v1/cards, …/{card}   (card numbers masked)

Answers: 200 with JSON; 400 ``{"error": …}`` for a refused change or a bad body, 401 without a
valid token, 403 without the role, 404 for what does not exist.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from switch.estate import blacklist as bl
from switch.estate import institutions as inst
from switch.estate import lookups
from switch.estate import parameters as params
from switch.estate import terminals as term
from switch.estate.common import EstateError, NotFound

PREFIX = "/admin/v1"
Handler = Callable[[web.Request], Awaitable[web.Response]]
Operation = Callable[[Any, str, web.Request, dict[str, Any]], Any]


class AdminApi:
    """The routes, over the back office's ``engine``; ``changed`` is called after every change
    (the daemon forgets what it keeps)."""

    def __init__(self, engine: Any, changed: Callable[[], None]) -> None:
        self.engine = engine
        self.changed = changed

    def mount(self, app: web.Application) -> None:
        r, get, post = app.router, self._read, self._change
        r.add_get(f"{PREFIX}/terminals", get(lambda e, _, q, b: term.list_terminals(
            e, institution=q.query.get("institution"), status=q.query.get("status"),
            limit=_limit(q))))
        r.add_get(f"{PREFIX}/terminals/{{id}}", get(
            lambda e, _, q, b: term.show_terminal(e, q.match_info["id"])))
        r.add_post(f"{PREFIX}/terminals", post(lambda e, who, q, b: term.add_terminal(
            e, who, _text(b, "terminal_id"), _text(b, "institution_id"), _text(b, "kind"),
            _optional(b, "group"))))
        r.add_post(f"{PREFIX}/terminals/{{id}}/disable", post(
            lambda e, who, q, b: term.set_terminal_status(e, who, q.match_info["id"], "disabled")))
        r.add_post(f"{PREFIX}/terminals/{{id}}/enable", post(
            lambda e, who, q, b: term.set_terminal_status(e, who, q.match_info["id"], "active")))
        r.add_post(f"{PREFIX}/terminals/{{id}}/move", post(lambda e, who, q, b: term.move_terminal(
            e, who, q.match_info["id"], institution_id=_optional(b, "institution_id"),
            group=_optional(b, "group"), no_group=b.get("no_group") is True)))
        r.add_post(f"{PREFIX}/terminals/{{id}}/replace-psam", post(
            lambda e, who, q, b: term.replace_psam(e, who, q.match_info["id"], _text(b, "psam"))))
        r.add_get(f"{PREFIX}/psams", get(lambda e, _, q, b: term.list_psams(
            e, institution=q.query.get("institution"), status=q.query.get("status"),
            limit=_limit(q))))
        r.add_get(f"{PREFIX}/psams/{{serial}}", get(
            lambda e, _, q, b: term.show_psam(e, q.match_info["serial"])))
        for verb, status in (("disable", "disabled"), ("enable", "active")):
            r.add_post(f"{PREFIX}/psams/{{serial}}/{verb}", post(_psam_status(status)))
            r.add_post(f"{PREFIX}/institutions/{{id}}/{verb}", post(_institution_status(status)))
        r.add_post(f"{PREFIX}/psams/{{serial}}/unbind", post(
            lambda e, who, q, b: term.unbind_psam(e, who, q.match_info["serial"])))
        self._mount_rest(app)

    def _mount_rest(self, app: web.Application) -> None:
        r, get, post = app.router, self._read, self._change
        r.add_get(f"{PREFIX}/institutions", get(lambda e, _, q, b: inst.list_institutions(
            e, kind=q.query.get("kind"), limit=_limit(q))))
        r.add_get(f"{PREFIX}/institutions/{{id}}", get(
            lambda e, _, q, b: inst.show_institution(e, q.match_info["id"])))
        r.add_post(f"{PREFIX}/institutions", post(lambda e, who, q, b: inst.add_institution(
            e, who, _text(b, "institution_id"), _text(b, "kind"), _text(b, "name"),
            level=_integer(b, "level", required=False),
            settlement_bank_id=_optional(b, "bank"))))
        for verb, allowed in (("authorise-health", True), ("revoke-health", False)):
            r.add_post(f"{PREFIX}/institutions/{{id}}/{verb}", post(_health_writer(allowed)))
        r.add_get(f"{PREFIX}/parameters", get(
            lambda e, _, q, b: params.list_parameters(e, limit=_limit(q))))
        r.add_get(f"{PREFIX}/parameters/{{version}}", get(
            lambda e, _, q, b: params.show_parameters(e, _path_int(q, "version"))))
        r.add_post(f"{PREFIX}/parameters", post(lambda e, who, q, b: params.set_parameters(
            e, who, params.scope_of(_optional(b, "institution"), _optional(b, "group")),
            floor_fen=_integer(b, "floor_fen"), count_max=_integer(b, "count_max"),
            age_max_h=_integer(b, "age_max_h"),
            categories=_optional(b, "categories") or params.DEFAULT_CATEGORIES)))
        r.add_get(f"{PREFIX}/blacklist", get(self._blacklist))
        r.add_post(f"{PREFIX}/blacklist", post(lambda e, who, q, b: bl.add_entry(
            e, who, _text(b, "card"), _text(b, "reason"), _optional(b, "note") or "")))
        r.add_post(f"{PREFIX}/blacklist/remove", post(lambda e, who, q, b: bl.remove_entry(
            e, who, _text(b, "card"), _text(b, "note"))))
        r.add_get(f"{PREFIX}/bills", get(lambda e, _, q, b: lookups.list_bills(
            e, institution=q.query.get("institution"), state=q.query.get("state"),
            limit=_limit(q))))
        r.add_get(f"{PREFIX}/bills/{{id}}", get(
            lambda e, _, q, b: lookups.show_bill(e, q.match_info["id"])))
        r.add_get(f"{PREFIX}/cards", get(lambda e, _, q, b: lookups.list_cards(
            e, status=q.query.get("status"), limit=_limit(q))))
        r.add_get(f"{PREFIX}/cards/{{card}}", get(
            lambda e, _, q, b: lookups.show_card(e, q.match_info["card"])))

    @staticmethod
    def _blacklist(engine: Any, _: str, request: web.Request, __: dict[str, Any]) -> Any:
        version, entries = bl.list_entries(
            engine, include_removed=request.query.get("all") == "1", limit=_limit(request))
        return {"version": version, "entries": [entry.as_json() for entry in entries]}

    def _read(self, operation: Operation) -> Handler:
        return self._handler(operation, None)

    def _change(self, operation: Operation) -> Handler:
        return self._handler(operation, "maker")

    def _handler(self, operation: Operation, role: str | None) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            from switch.operators import AuthError, http_status, operator_of_bearer

            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return _error(401, "an operator's login token is required (Bearer)")
            body: dict[str, Any] = {}
            if request.method == "POST" and request.can_read_body:
                try:
                    loaded: Any = json.loads(await request.read())
                except ValueError:
                    return _error(400, "the body is not JSON")
                if not isinstance(loaded, dict):
                    return _error(400, "the body is a JSON object")
                body = loaded

            def call() -> Any:
                operator = operator_of_bearer(self.engine, header, role)
                return operation(self.engine, operator.name, request, body)

            try:
                result = await asyncio.to_thread(call)
            except AuthError as error:
                return _error(http_status(error), str(error))
            except NotFound as error:
                return _error(404, str(error))
            except EstateError as error:
                return _error(400, str(error))
            if role is not None:
                self.changed()
            return web.json_response(_jsonable(result))

        return handle


def _psam_status(status: str) -> Operation:
    def change(engine: Any, who: str, request: web.Request, _: dict[str, Any]) -> Any:
        return term.set_psam_status(engine, who, request.match_info["serial"], status)

    return change


def _institution_status(status: str) -> Operation:
    def change(engine: Any, who: str, request: web.Request, _: dict[str, Any]) -> Any:
        return inst.set_institution_status(engine, who, request.match_info["id"], status)

    return change


def _health_writer(allowed: bool) -> Operation:
    def change(engine: Any, who: str, request: web.Request, _: dict[str, Any]) -> Any:
        return inst.set_health_writer(engine, who, request.match_info["id"], allowed)

    return change


def _jsonable(result: Any) -> Any:
    if isinstance(result, list):
        return [item.as_json() for item in result]
    return result if isinstance(result, dict) else result.as_json()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise EstateError(f"{name} is required (a string)")
    return value


def _optional(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise EstateError(f"{name} is a string")
    return value


def _integer(body: dict[str, Any], name: str, *, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise EstateError(f"{name} is required (an integer)")
    return value


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "200")
    if not text.isdigit():
        raise EstateError("limit is a number")
    return int(text)


def _path_int(request: web.Request, name: str) -> int:
    text = request.match_info[name]
    if not text.isdigit():
        raise NotFound(f"no {name} {text[:20]}")
    return int(text)
