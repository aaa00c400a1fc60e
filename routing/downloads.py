"""Parameter download (60.3 = 360) and incremental blacklist download (60.3 = 370).

The parameters are the newest version an operator set for the terminal (its group's, else its
institution's, else every terminal's: `medswitch parameters set`), read at each download, or,
with none stored, the configuration's ``[offline]`` limits (no tag 06).

A terminal keeps the blacklist version it holds and asks for what changed after it; each reply
carries at most :data:`ENTRIES_MAX` changes (field 62 is 512 bytes) and says whether more
remain, so the terminal asks again from the version it received.
"""

from __future__ import annotations

from messages.outcome import Outcome
from messages.private import BlacklistDelta, TerminalParameters
from messages.terminal import (
    BlacklistDownload,
    BlacklistReply,
    ParameterDownload,
    ParameterReply,
    TerminalReply,
)
from routing.common import answer
from routing.context import RequestContext

ENTRIES_MAX = 46  # 5 + 46 × 11 bytes fit field 62's 512
CATEGORIES = "employed=在职\nretired=退休"


async def handle_parameter_download(
    request: ParameterDownload, context: RequestContext
) -> TerminalReply:
    stored = context.cards.terminal_parameters(context.terminal.terminal_id)
    limits = context.offline if stored is None else stored.limits
    parameters = TerminalParameters(
        offline_floor_fen=limits.floor_fen,
        offline_count_max=limits.count_max,
        offline_age_max_h=limits.age_max_h,
        blacklist_version=context.cards.blacklist_version(),
        categories=CATEGORIES if stored is None else stored.categories,
        parameters_version=None if stored is None else stored.version,
    )
    return answer(request, context, Outcome.APPROVED, ParameterReply, parameters=parameters)


async def handle_blacklist_download(
    request: BlacklistDownload, context: RequestContext
) -> TerminalReply:
    after = int(request.from_version)
    changes = context.cards.blacklist_changes(after, ENTRIES_MAX + 1)
    more = len(changes) > ENTRIES_MAX
    if more:
        # Never split one version across replies: stop before the last version sent. Versions
        # are the list's change sequence (one loss report or unloss each), so a version never
        # holds more changes than one reply carries.
        last = changes[ENTRIES_MAX - 1][0]
        changes = [c for c in changes[:ENTRIES_MAX] if c[0] < last] or changes[:ENTRIES_MAX]
    version = changes[-1][0] if more else max([after, *[c[0] for c in changes]])
    entries = tuple(
        (action, bytes.fromhex(serial).rjust(10, b"\0")) for _, action, serial in changes
    )
    delta = BlacklistDelta(version, more, entries)
    return answer(request, context, Outcome.APPROVED, BlacklistReply, blacklist=delta)
