"""A hospital or pharmacy POS with its PSAM, over the terminal link
(:mod:`simulators.terminal_link`) it shares with the kiosk.

The terminal speaks the switch's terminal interface through the same code the switch uses
(:mod:`messages.terminal_table`, :mod:`messages.codec`, :mod:`messages.framing`) and keeps its
working keys in its own secure module (a :class:`~hsm.soft.SoftHsm` holding its TMK): it signs
on, MACs every request and checks every reply's MAC. What the terminal must not forget — batch,
STAN, downloaded limits, blacklist, the batch's records, a load awaiting confirmation — is a
JSON file written atomically after every change, so it survives a restart.

    link = TerminalLink(Endpoint("127.0.0.1", 5880), "P0000001", institution, hsm, tmk, state)
    pos = Pos(link, card, psam, pan="...", pin="123456")
    await pos.sign_on(); await pos.offline(1200); await pos.settle_batch()
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from messages.private import BillData, CardData, OriginalData, SettlementTotals
from messages.terminal import (
    BatchSettlement,
    BatchSettlementReply,
    BatchUploadEnd,
    BatchUploadRecord,
    BlacklistDownload,
    BlacklistReply,
    DebitAdvice,
    ParameterDownload,
    ParameterReply,
    Reversal,
    Settlement,
    Void,
)
from simulators import terminal_card
from simulators.terminal_link import (
    BLACKLIST_ROUNDS_MAX,
    TerminalError,
    TerminalLink,
    TerminalState,
    Unreachable,
    read_serial,
    refused,
    yuan,
)
from switch.card_connection import CardConnection


class Pos:
    """A POS with its card reader and PSAM."""

    def __init__(
        self,
        link: TerminalLink,
        card: CardConnection,
        psam: CardConnection,
        *,
        pan: str,
        pin: str,
    ) -> None:
        self.link = link
        self.card = card
        self.psam = psam
        self.pan = pan
        self.pin = pin

    @property
    def state(self) -> TerminalState:
        return self.link.state

    def _serial(self) -> bytes:
        return read_serial(self.card, self.pin)

    def _now(self) -> datetime:
        return self.link.now()

    async def sign_on(self) -> list[str]:
        lines = [await self.link.sign_on()]
        lines.append(await self.download_parameters())
        lines.append(await self.download_blacklist())
        lines += await self.flush_reversal()
        return lines

    async def download_parameters(self) -> str:
        reply = await self.link.exchange(ParameterDownload(**self.link.envelope()))
        if not isinstance(reply, ParameterReply) or reply.parameters is None:
            raise refused(reply, "parameter download")
        found = reply.parameters
        self.state.floor_fen = found.offline_floor_fen or 0
        self.state.count_max = found.offline_count_max or 0
        self.state.age_max_h = found.offline_age_max_h or 0
        self.state.save()
        return (
            f"offline limits: floor {yuan(self.state.floor_fen)}, "
            f"{self.state.count_max} records, {self.state.age_max_h} h"
        )

    async def download_blacklist(self) -> str:
        for _ in range(BLACKLIST_ROUNDS_MAX):
            request = BlacklistDownload(
                **self.link.envelope(), from_version=f"{self.state.blacklist_version:08d}"
            )
            reply = await self.link.exchange(request)
            if not isinstance(reply, BlacklistReply) or reply.blacklist is None:
                raise refused(reply, "blacklist download")
            delta = reply.blacklist
            for action, serial in delta.entries:
                if action == "A":
                    self.state.blacklist.add(serial.hex())
                else:
                    self.state.blacklist.discard(serial.hex())
            self.state.blacklist_version = delta.version
            self.state.save()
            if not delta.more:
                break
        return f"blacklist version {self.state.blacklist_version}: {len(self.state.blacklist)}"

    def _debit(self, amount_fen: int, serial: bytes) -> CardData:
        terminal_card.open_application(self.card, self.pin)
        return terminal_card.purchase(self.card, self.psam, serial, amount_fen, self._now())

    def _record(self, data: CardData, **extra: Any) -> dict[str, Any]:
        record = {
            "pan": self.pan,
            "amount_fen": data.amount_fen,
            "card": data.build().hex(),
            "batch": self.state.batch,
            "at": self._now().isoformat(),
            "advised": False,
            "voided": False,
            **extra,
        }
        self.state.records.append(record)
        self.state.save()
        return record

    async def _bill(self, bill_id: str) -> bytes:
        keys = self.link.signed_on()
        if keys.tdk is None:
            raise TerminalError("no TDK from sign-on")
        return await self.link.hsm.encrypt_data(keys.tdk, BillData(bill_id=bill_id).build())

    async def flush_reversal(self) -> list[str]:
        """Send the stored reversal until the centre answers: 0400, then 0401 repeats with
        the same STAN within a batch. Field 61 names the original; the bill reference goes
        under the current session's TDK (a restart signs on afresh)."""
        pending = self.state.pending_reversal
        if pending is None:
            return []
        repeat = pending.get("sent_batch") == self.state.batch
        envelope = self.link.envelope(pending["sent_stan"] if repeat else None)
        pending["sent_stan"], pending["sent_batch"] = envelope["stan"], envelope["batch"]
        self.state.save()
        reversal = Reversal(
            **envelope,
            processing_code="000000",
            txn_type="22",
            pan=pending["pan"],
            amount_fen=pending["amount_fen"],
            original=OriginalData(pending["batch"], pending["stan"], "0000"),
            bill=await self._bill(pending["bill_id"]),
            repeat=repeat,
        )
        try:
            answer = await self.link.exchange(reversal)
        except Unreachable:
            return ["reversal not answered: it is sent again before the next request"]
        self.state.pending_reversal = None
        self.state.save()
        return [f"reversal of STAN {pending['stan']} answered {answer.response_code}"]

    async def settle(self, bill_id: str, total_fen: int) -> list[str]:
        """A HIS bill: 0200 settlement → the split → the card's ED pays the personal share
        through the PSAM → 0220 advice with the TAC. A reversal when no answer came."""
        flushed = await self.flush_reversal()
        if self.state.pending_reversal is not None:
            return flushed
        serial = self._serial()
        if serial.hex() in self.state.blacklist:
            raise TerminalError("card on the blacklist")
        bill = await self._bill(bill_id)
        envelope = self.link.envelope()
        request = Settlement(
            **envelope, pan=self.pan, amount_fen=total_fen, card=CardData(), bill=bill
        )
        try:
            reply = await self.link.exchange(request)
        except Unreachable:
            self.state.pending_reversal = {
                "stan": envelope["stan"],
                "batch": envelope["batch"],
                "pan": self.pan,
                "amount_fen": total_fen,
                "bill_id": bill_id,
            }
            self.state.save()
            return [
                "no answer to the settlement before the card was debited: "
                "the card is not debited, the reversal is stored",
                *await self.flush_reversal(),
            ]
        if reply.response_code != "00" or reply.bill is None:
            raise refused(reply, "settlement")
        keys = self.link.signed_on()
        assert keys.tdk is not None
        split = BillData.parse(await self.link.hsm.decrypt_data(keys.tdk, reply.bill))
        lines = [*flushed, *receipt(bill_id, split)]
        ed = split.ed_fen or 0
        if ed:
            data = self._debit(ed, serial)
            record = self._record(
                data,
                bill_id=bill_id,
                online=True,
                settlement_stan=envelope["stan"],
                settlement_fen=total_fen,
            )
            advice = DebitAdvice(
                **self.link.envelope(), pan=self.pan, amount_fen=ed, card=data, bill=bill
            )
            record["stan"] = advice.stan
            self.state.save()
            try:
                answer = await self.link.exchange(advice)
            except Unreachable:
                lines.append("advice not answered: the record goes with the batch upload")
                return lines
            record["advised"] = answer.response_code == "00"
            self.state.save()
            lines.append(f"card ED debited {yuan(ed)}, advice {answer.response_code}")
        return lines

    async def offline(self, amount_fen: int) -> list[str]:
        """A purchase with no line to the centre, within the downloaded limits."""
        serial = self._serial()
        if serial.hex() in self.state.blacklist:
            raise TerminalError("card on the blacklist: no offline purchase")
        pending = [r for r in self.state.records if not r.get("online")]
        if not self.state.count_max:
            raise TerminalError("no offline limits downloaded: sign on first")
        if amount_fen > self.state.floor_fen:
            raise TerminalError(f"above the offline floor limit {yuan(self.state.floor_fen)}")
        if len(pending) >= self.state.count_max:
            raise TerminalError(f"{len(pending)} offline records: settle the batch first")
        if pending:
            oldest = min(datetime.fromisoformat(r["at"]) for r in pending)
            if self._now() - oldest > timedelta(hours=self.state.age_max_h):
                raise TerminalError("the oldest offline record is too old: settle the batch")
        data = self._debit(amount_fen, serial)
        self._record(data, online=False)
        return [f"offline purchase {yuan(amount_fen)}: TAC {(data.tac or b'').hex().upper()}"]

    async def void(self, bill_id: str) -> list[str]:
        """Void the settled bill's advice: the centre gives the share back to the fund."""
        for record in self.state.records:
            if record.get("bill_id") == bill_id and record.get("advised"):
                bill = await self._bill(bill_id)
                original = OriginalData(record["batch"], record["settlement_stan"], "0000")
                reply = await self.link.exchange(
                    Void(
                        **self.link.envelope(),
                        pan=record["pan"],
                        amount_fen=record["settlement_fen"],
                        original=original,
                        bill=bill,
                    )
                )
                if reply.response_code != "00":
                    raise refused(reply, "void")
                record["voided"] = True
                self.state.save()
                return [f"bill {bill_id} voided"]
        raise TerminalError(f"no advised debit for bill {bill_id}")

    async def settle_batch(self) -> list[str]:
        """0500 with the batch's totals; when not balanced, 0320 for every record and the
        end of upload. Then a sign-on opens the next batch."""
        flushed = await self.flush_reversal()
        if self.state.pending_reversal is not None:
            return flushed
        # Every debit the card made counts, a voided one too: a void gives the bill's shares
        # back to the funds, but the card's TAC-confirmed debit stands (the centre counts it).
        debits = list(self.state.records)
        total = SettlementTotals(sum(r["amount_fen"] for r in debits), len(debits), 0, 0)
        reply = await self.link.exchange(BatchSettlement(**self.link.envelope(), totals=total))
        if not isinstance(reply, BatchSettlementReply) or reply.totals is None:
            raise refused(reply, "batch settlement")
        lines = [
            *flushed,
            f"batch {self.state.batch}: {len(debits)} debits, {yuan(total.debit_fen)}",
        ]
        if reply.totals.result != 1:
            lines.append("not balanced: uploading every record")
            for record in debits:
                data = CardData.parse(bytes.fromhex(record["card"]))
                answer = await self.link.exchange(
                    BatchUploadRecord(
                        **self.link.envelope(),
                        pan=record["pan"],
                        amount_fen=record["amount_fen"],
                        card=data,
                    )
                )
                lines.append(f"  record {yuan(record['amount_fen'])}: {answer.response_code}")
            end = await self.link.exchange(
                BatchUploadEnd(**self.link.envelope(), count=f"{len(debits):04d}")
            )
            lines.append(f"end of upload: {end.response_code}")
        else:
            lines.append("balanced")
        self.state.records = []
        self.state.save()
        lines.append(await self.link.sign_on())  # the centre opens the next batch
        return lines


def receipt(bill_id: str, split: BillData) -> list[str]:
    lines = [
        f"bill {bill_id}: total {yuan(split.total_fen or 0)}",
        f"  personal account {yuan(split.personal_fen or 0)}"
        f"  pooled fund {yuan(split.pooled_fen or 0)}  self-pay {yuan(split.self_pay_fen or 0)}",
        f"  from the card: ED {yuan(split.ed_fen or 0)}  EP {yuan(split.ep_fen or 0)}"
        f"  cash {yuan(split.cash_fen or 0)}",
    ]
    lines += [f"  {line}" for line in (split.explanation or "").splitlines()]
    if split.ep_fen or split.cash_fen:
        self_pay = (split.ep_fen or 0) + (split.cash_fen or 0)
        lines.append(f"  self-pay {yuan(self_pay)} collected in cash")
    return lines
