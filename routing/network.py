"""Network-management handlers of the terminal interface: sign-on, sign-off, echo."""

from __future__ import annotations

from dataclasses import replace

from messages.outcome import Outcome
from messages.private import WorkingKeys
from messages.terminal import Echo, SignOff, SignOn, SignOnReply, TerminalReply
from routing.common import answer
from routing.context import RequestContext

_LAYOUTS = {"001": 24, "003": 40, "004": 60}


async def handle_sign_on(request: SignOn, context: RequestContext) -> TerminalReply:
    """New PIK/MAK(/TDK) under the terminal's TMK, a new batch, and the host's clock.

    The sign-on is not MACed (the terminal has no keys yet), so anyone can send one: the new
    keys are pending — the current ones keep serving — until a request MACed under them
    proves that their sender holds the TMK (specs/terminal-interface.md, sign-on). At most
    ``per_minute`` sign-ons of a terminal in any minute; more are answered 65."""
    layout = _LAYOUTS.get(request.key_scheme)
    tmk = await context.sessions.tmk(request.terminal_id)
    if layout is None:
        return answer(request, context, Outcome.FUNCTION_NOT_SUPPORTED)
    if tmk is None:
        return answer(request, context, Outcome.SECURITY_FAILURE, reason="no_tmk")
    if not context.sessions.admit(request.terminal_id, context.now):
        return answer(request, context, Outcome.COUNT_LIMIT, reason="sign_on_rate_limit")
    async with context.sessions.signing_on(request.terminal_id):  # the next version is ours
        keys = await context.hsm.sign_on(
            tmk, layout, f"term/{request.terminal_id}", now=context.now
        )
        batch = await context.sessions.offer(request.terminal_id, keys)
    reply = answer(
        request, context, Outcome.APPROVED, SignOnReply, keys=WorkingKeys.parse(keys.field62)
    )
    return replace(reply, batch=batch)  # 60.2 of the 0810: the batch the new keys open


async def handle_sign_off(request: SignOff, context: RequestContext) -> TerminalReply:
    await context.sessions.forget(request.terminal_id)
    return answer(request, context, Outcome.APPROVED)


async def handle_echo(request: Echo, context: RequestContext) -> TerminalReply:
    return answer(request, context, Outcome.APPROVED)
