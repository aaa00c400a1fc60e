"""A POS's day end: its advices still unanswered sent again (store and forward: a debit's bill
completes through its advice, or through its upload record, which names the bill in field 63
too), then batch settlement 0500 with the batch's totals and, when the centre's totals differ,
batch upload 0320 of every record and the end of upload; a sign-on then opens the next batch.
"""

from __future__ import annotations

from typing import Any, Protocol

from messages.private import BillData, CardData, SettlementTotals
from messages.terminal import (
    BatchSettlement,
    BatchSettlementReply,
    BatchUploadEnd,
    BatchUploadRecord,
    DebitAdvice,
)
from simulators.terminal_link import (
    TerminalLink,
    TerminalState,
    Unreachable,
    answered,
    refused,
    yuan,
)


class Pos(Protocol):
    """What the day end needs of a POS (:class:`simulators.pos.Pos`): its link to the centre, its
    state on disk, and its pending reversal sent first. Named here so that this module does not
    import the POS that calls it."""

    @property
    def link(self) -> TerminalLink: ...

    @property
    def state(self) -> TerminalState: ...

    async def flush_reversal(self) -> list[str]: ...


def unanswered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Debits whose advice was sent (or due) and never answered 00."""
    return [r for r in records if r.get("online") and not r["advised"] and "stan" in r]


async def flush_advices(pos: Pos) -> list[str]:
    """Each unanswered advice again, with its bill under the session's TDK: the same STAN
    within its batch (the centre answers a copy it has seen with its first answer), a new one
    after a new sign-on. Stops at the first that goes unanswered."""
    lines = []
    for record in unanswered(pos.state.records):
        same = record.get("sent_batch", record["batch"]) == pos.state.batch
        envelope = pos.link.envelope(record["stan"] if same else None)
        record["stan"], record["sent_batch"] = envelope["stan"], envelope["batch"]
        pos.state.save()
        bill = None
        if record.get("bill_id"):  # as first sent: a refused script reported with it
            refused = bytes.fromhex(record["refused"]) if record.get("refused") else None
            bill = await _bill(pos, record["bill_id"], refused)
        advice = DebitAdvice(
            **envelope,
            pan=record["pan"],
            amount_fen=record["amount_fen"],
            card=CardData.parse(bytes.fromhex(record["card"])),
            bill=bill,
        )
        try:
            answer = await pos.link.exchange(advice)
        except Unreachable:
            lines.append("advice sent again, not answered: it goes with the batch upload")
            break
        record["advised"] = answer.response_code == "00"
        pos.state.save()
        again = answered(answer.response_code)
        lines.append(f"advice of {yuan(record['amount_fen'])} sent again: {again}")
    return lines


async def _bill(pos: Pos, bill_id: str, refused: bytes | None = None) -> bytes:
    keys = pos.link.signed_on()
    assert keys.tdk is not None
    plain = BillData(bill_id=bill_id, script_refused=refused).build()
    return await pos.link.hsm.encrypt_data(keys.tdk, plain)


async def settle_batch(pos: Pos) -> list[str]:
    """0500 with the batch's totals; when not balanced, 0320 for every record and the end of
    upload. Then a sign-on opens the next batch."""
    flushed = await pos.flush_reversal()
    if pos.state.pending_reversal is not None:
        return flushed
    flushed += await flush_advices(pos)
    # Every debit the card made counts, a voided one too: a void gives the bill's shares
    # back to the funds, but the card's TAC-confirmed debit stands (the centre counts it).
    debits = list(pos.state.records)
    total = SettlementTotals(sum(r["amount_fen"] for r in debits), len(debits), 0, 0)
    reply = await pos.link.exchange(BatchSettlement(**pos.link.envelope(), totals=total))
    if not isinstance(reply, BatchSettlementReply) or reply.totals is None:
        raise refused(reply, "batch settlement")
    lines = [*flushed, f"batch {pos.state.batch}: {len(debits)} debits, {yuan(total.debit_fen)}"]
    if reply.totals.result != 1:
        lines.append("not balanced: uploading every record")
        for record in debits:
            data = CardData.parse(bytes.fromhex(record["card"]))
            bill = await _bill(pos, record["bill_id"]) if record.get("bill_id") else None
            answer = await pos.link.exchange(
                BatchUploadRecord(
                    **pos.link.envelope(),
                    pan=record["pan"],
                    amount_fen=record["amount_fen"],
                    card=data,
                    bill=bill,
                )
            )
            lines.append(f"  record {yuan(record['amount_fen'])}: {answered(answer.response_code)}")
        end = await pos.link.exchange(
            BatchUploadEnd(**pos.link.envelope(), count=f"{len(debits):04d}")
        )
        lines.append(f"end of upload: {answered(end.response_code)}")
    else:
        lines.append("balanced")
    pos.state.records = []
    pos.state.save()
    lines.append(await pos.link.sign_on())  # the centre opens the next batch
    return lines
