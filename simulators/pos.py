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

from dataclasses import replace
from datetime import datetime
from typing import Any

from messages.private import BillData, CardData, OriginalData, Purse
from messages.terminal import (
    BlacklistDownload,
    BlacklistReply,
    CashClose,
    DebitAdvice,
    Echo,
    ParameterDownload,
    ParameterReply,
    Reversal,
    Settlement,
    Void,
)
from simulators import pos_batch, pos_records, terminal_card
from simulators.pos_rules import check_offline, offline_records, receipt, self_pay_line
from simulators.terminal_link import (
    BLACKLIST_ROUNDS_MAX,
    Envelope,
    NotSent,
    TerminalError,
    TerminalLink,
    TerminalState,
    Unreachable,
    answered,
    read_serial,
    refused,
    yuan,
)
from switch.card_io.connection import ApduError, CardConnection

SELF_PAY = ("ep", "cash")
NOT_SETTLED = (
    "the bill is not settled (nothing was sent, the card is not debited);"
    " a purchase without a bill can go offline"
)
SW_INSUFFICIENT = 0x9401  # the card's purse cannot pay the amount


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
        if self.state.pending_reversal is None:
            lines += await pos_batch.flush_advices(self)
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
            f"offline limits (parameters version {found.parameters_version or 0}): floor "
            f"{yuan(self.state.floor_fen)}, {self.state.count_max} records, "
            f"{self.state.age_max_h} h"
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

    def _debit(self, amount_fen: int, serial: bytes, purse: Purse = Purse.ED) -> CardData:
        terminal_card.open_application(self.card, self.pin)
        return terminal_card.purchase(self.card, self.psam, serial, amount_fen, self._now(), purse)

    def _record(self, data: CardData, **extra: Any) -> dict[str, Any]:
        record = {
            "pan": self.pan,
            "amount_fen": data.amount_fen,
            "purse": (data.purse or Purse.ED).name,
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

    async def _bill(self, bill_id: str, ep_fen: int | None = None, **visit: Any) -> bytes:
        keys = self.link.signed_on()
        if keys.tdk is None:
            raise TerminalError("no TDK from sign-on")
        plain = BillData(bill_id=bill_id, ep_fen=ep_fen, **visit).build()
        return await self.link.hsm.encrypt_data(keys.tdk, plain)

    async def _advise(
        self,
        record: dict[str, Any],
        data: CardData,
        bill: bytes | None,
        contact: pos_records.Contact | None = None,
    ) -> str:
        """0220 with the debit's TAC; unanswered, it is sent again at the batch settlement
        (and the record goes with the batch upload). A settlement's (``contact``) carries the
        card's challenge and a refused script to report; its 0230 may bring a health script."""
        if contact is not None:
            data = replace(data, challenge=contact.challenge())
            record["card"] = data.build().hex()  # sent again as it was sent
            if contact.refused is not None:
                record["refused"] = contact.refused.hex()
            bill = await self._bill(record["bill_id"], script_refused=contact.refused)
        advice = DebitAdvice(
            **self.link.envelope(),
            pan=self.pan,
            amount_fen=data.amount_fen or 0,
            card=data,
            bill=bill,
        )
        record["stan"] = advice.stan
        self.state.save()
        try:
            answer = await self.link.exchange(advice)
        except Unreachable:
            return "advice not answered: sent again at the batch settlement"
        record["advised"] = answer.response_code == "00"
        self.state.save()
        if contact is not None and answer.response_code == "00":
            contact.answered(await self._split(answer.bill))
        return f"advice {answered(answer.response_code)}"

    async def _split(self, cipher: bytes | None) -> BillData | None:
        """A reply's field 63 under the session's TDK."""
        if cipher is None:
            return None
        keys = self.link.signed_on()
        assert keys.tdk is not None
        return BillData.parse(await self.link.hsm.decrypt_data(keys.tdk, cipher))

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
        return [f"reversal of STAN {pending['stan']} answered {answered(answer.response_code)}"]

    async def settle(  # visit: the department and the ICD-10 diagnoses, for the card's book
        self, bill_id: str, total_fen: int, self_pay: str = "cash", personal: str = "card",
        visit: tuple[str, tuple[str, ...]] = ("", ()),
    ) -> list[str]:  # fmt: skip
        """A HIS bill: 0200 settlement → the split → the card's ED pays the personal share
        through the PSAM → 0220 advice with the TAC; the self-pay share from the card's EP
        (its own debit and advice) or in cash, as ``self_pay`` chooses (``ep`` | ``cash``).
        With ``personal`` = ``cash`` the personal share is paid in cash instead of by the card.
        A bill no card debit completes (its personal share paid in cash, or nil with the
        self-pay in cash) is closed in cash at the centre (0220, 60.1 = 22). A reversal when
        no answer came. The visit goes into the card's record book (simulators.pos_records)."""
        if self_pay not in SELF_PAY:
            raise TerminalError(f"self-pay is paid by {' or '.join(SELF_PAY)}, not {self_pay!r}")
        if personal not in ("card", "cash"):
            raise TerminalError(f"the personal share is paid by card or cash, not {personal!r}")
        try:
            flushed = [] if self.link.keys is not None else await self.sign_on()
        except Unreachable as error:
            raise TerminalError(f"{error}: {NOT_SETTLED}") from None
        flushed += await self.flush_reversal()
        if self.state.pending_reversal is not None:
            return flushed
        serial = self._serial()
        if serial.hex() in self.state.blacklist:
            raise TerminalError("card on the blacklist")
        book = pos_records.before_settlement(self.card)
        report = self.state.script_refusals.get(self.pan)  # a refusal at the card's last contact
        asked = await self._bill(
            bill_id, department=visit[0] or None, diagnoses=",".join(visit[1]) or None,
            card_visit=book.newest, card_health=book.health, card_visit_file=book.visit_file,
            script_refused=bytes.fromhex(report) if report else None,
        )  # fmt: skip
        envelope = self.link.envelope()
        request = Settlement(**envelope, pan=self.pan, amount_fen=total_fen,
                             card=CardData(challenge=book.challenge), bill=asked)  # fmt: skip
        try:
            reply = await self.link.exchange(request)
        except NotSent as error:
            raise TerminalError(f"{error}: {NOT_SETTLED}") from None
        except Unreachable:
            self._store_reversal(envelope, total_fen, bill_id)
            return [
                "no answer to the settlement before the card was debited: "
                "the card is not debited, the reversal is stored",
                *await self.flush_reversal(),
            ]
        split = await self._split(reply.bill)
        if reply.response_code != "00" or split is None:
            raise refused(reply, "settlement")
        self.state.script_refusals.pop(self.pan, None)  # reported
        lines = [*flushed, *receipt(bill_id, split)]
        applied = pos_records.apply_visit_script(self.card, split.visit_script)
        lines.append(applied.line)
        contact = pos_records.Contact(self.card, applied.refused)
        paid = {"online": True, "bill_id": bill_id, "settlement_stan": envelope["stan"]}
        paid["settlement_fen"] = total_fen
        ed = split.ed_fen or 0
        if ed and personal == "cash":
            lines.append(f"  personal account {yuan(ed)} collected in cash")
        elif ed:
            try:
                data = self._debit(ed, serial)
            except ApduError as error:  # the card refuses (9401: its ED cannot pay): reversed
                self._store_reversal(envelope, total_fen, bill_id)
                answered = await self.flush_reversal()
                raise TerminalError(
                    f"the card's ED cannot pay {yuan(ed)} ({error}): the settlement is reversed"
                    f" ({'; '.join(answered)})"
                ) from None
            record = self._record(data, **paid)
            status = await self._advise(record, data, None, contact)
            lines.append(f"  personal account {yuan(ed)}: card ED debited, {status}")
        owed = (split.ep_fen or 0) + (split.cash_fen or 0)
        ep_paid = False
        if owed:
            paid_lines, ep_paid = await self._self_pay(owed, serial, self_pay, paid, contact)
            lines += paid_lines
        # The centre completes a bill on the card debit of its personal share (or, with none,
        # of its EP self-pay); any other bill is closed in cash.
        if personal == "cash" or not (ed or ep_paid):
            lines.append(
                await self._close_in_cash(ed if personal == "cash" else 0, bill_id, contact)
            )
        if contact.refused is not None:  # reported at the card's next contact here
            self.state.script_refusals[self.pan] = contact.refused.hex()
            self.state.save()
        return lines + contact.lines

    async def _close_in_cash(
        self, personal_fen: int, bill_id: str, contact: pos_records.Contact
    ) -> str:
        """0220, 60.1 = 22: the bill's personal share (``personal_fen``, maybe nil) was paid in
        cash; the centre completes the bill (and its 0230 may bring a health script)."""
        bill = await self._bill(bill_id, script_refused=contact.refused)
        request = CashClose(
            **self.link.envelope(), pan=self.pan, amount_fen=personal_fen, bill=bill,
            card=CardData(challenge=contact.challenge()),
        )  # fmt: skip
        try:
            reply = await self.link.exchange(request)
        except (NotSent, Unreachable) as error:
            return f"  bill closed in cash, not answered ({error}): close it again with settle"
        if reply.response_code != "00":
            raise refused(reply, "close in cash")
        contact.answered(await self._split(reply.bill))
        return "  bill closed in cash at the centre 00"

    def _store_reversal(self, envelope: Envelope, total_fen: int, bill_id: str) -> None:
        self.state.pending_reversal = {
            "stan": envelope["stan"],
            "batch": envelope["batch"],
            "pan": self.pan,
            "amount_fen": total_fen,
            "bill_id": bill_id,
        }
        self.state.save()

    async def _self_pay(
        self,
        owed: int,
        serial: bytes,
        how: str,
        paid: dict[str, Any],
        contact: pos_records.Contact,
    ) -> tuple[list[str], bool]:
        """The self-pay share: a DEBIT FOR PURCHASE on the card's EP and its advice, or cash
        (also when the EP cannot pay it: the card refuses, 9401); and whether the EP paid."""
        if how == "ep":
            try:
                data = self._debit(owed, serial, Purse.EP)
            except ApduError as error:
                if error.sw != SW_INSUFFICIENT:
                    raise
                lines = [f"  the card's EP cannot pay {yuan(owed)}", self_pay_line("cash", owed)]
                return lines, False
            record = self._record(data, **paid)
            status = await self._advise(record, data, None, contact)
            return [f"{self_pay_line('ep', owed, data.tac)}, {status}"], True
        return [self_pay_line("cash", owed)], False

    async def purchase(self, amount_fen: int, purse: str = "ed") -> list[str]:
        """A purchase with no bill, paid from the card's ED (or EP): online when the centre
        answers (the debit and its advice at once); when the centre is unreachable, taken
        offline through the PSAM within the downloaded limits, uploaded with the batch."""
        chosen = _purse(purse)
        serial = self._serial()
        if serial.hex() in self.state.blacklist:
            raise TerminalError("card on the blacklist")
        try:
            lines = await self._reach()
        except Unreachable as error:
            taken = await self.offline(amount_fen, purse)
            return [f"{error}: offline", *taken]
        data = self._debit(amount_fen, serial, chosen)
        record = self._record(data, online=True)
        status = await self._advise(record, data, None)
        return [*lines, f"purchase {yuan(amount_fen)} from the card's {chosen.name}, {status}"]

    async def _reach(self) -> list[str]:
        """The centre answers: an echo when signed on, else a sign-on (keys, limits, blacklist)."""
        if self.link.keys is not None:
            reply = await self.link.exchange(Echo(**self.link.envelope()))
            if reply.response_code == "00":
                return []
        return await self.sign_on()

    async def offline(self, amount_fen: int, purse: str = "ed") -> list[str]:
        """A purchase with no line to the centre, within the downloaded limits."""
        chosen = _purse(purse)
        serial = self._serial()
        check_offline(self.state, serial.hex(), amount_fen, self._now())
        data = self._debit(amount_fen, serial, chosen)
        self._record(data, online=False)
        count = len(offline_records(self.state))
        return [
            f"offline purchase {yuan(amount_fen)} from the card's {chosen.name}:"
            f" TAC {(data.tac or b'').hex().upper()} ({count} of {self.state.count_max} offline)"
        ]

    async def void(self, bill_id: str) -> list[str]:
        """Void the settled bill's advice: the centre gives the share back to the fund."""
        mine = [r for r in self.state.records if r.get("bill_id") == bill_id]
        ep_fen = sum(r["amount_fen"] for r in mine if r.get("purse") == "EP" and r["advised"])
        for record in mine:
            if record.get("advised"):
                bill = await self._bill(bill_id, ep_fen or None)
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
                for each in mine:
                    each["voided"] = True
                self.state.save()
                return [f"bill {bill_id} voided"]
        raise TerminalError(f"no advised debit for bill {bill_id}")

    async def settle_batch(self) -> list[str]:
        """Day end (:func:`simulators.pos_batch.settle_batch`): unanswered advices again,
        0500 with the totals, 0320 of every record when they disagree, a new batch."""
        return await pos_batch.settle_batch(self)


def _purse(name: str) -> Purse:
    try:
        return Purse[name.upper()]
    except KeyError:
        raise TerminalError(f"the card pays from its ED or EP, not {name!r}") from None
