"""A self-service kiosk: the card inserted and its PIN verified by the card, balances (the card's
and the centre's), an ED load from the personal fund, an EP load from the cardholder's bank
savings (the bank PIN keyed into the kiosk's PIN pad, sent under its session PIK), and recovery
of a torn load.

The load: INITIALIZE FOR LOAD → 0200 (the centre verifies MAC1, answers MAC2) → CREDIT FOR LOAD
→ 0220 with the card's TAC. The kiosk writes the load to its state file before the card is
credited; if the card is pulled (or the confirmation is lost) the next `recover` asks the card
with GET TRANSACTION PROVE and confirms with the TAC the card proves.
"""

from __future__ import annotations

from dataclasses import replace

from messages.private import CardData, Purse
from messages.terminal import (
    BalanceInquiry,
    EdLoad,
    EdLoadConfirm,
    EpLoad,
    EpLoadConfirm,
    HistoryInquiry,
    HistoryReply,
)
from simulators import terminal_card
from simulators.card import terminal
from simulators.terminal_link import (
    TerminalError,
    TerminalLink,
    TerminalState,
    read_serial,
    refused,
    yuan,
)
from switch.card_io.connection import ApduError, CardConnection, CardConnectionError

ACCOUNTS = {"91": "personal fund", "92": "card ED (shadow)", "93": "card EP (shadow)"}


class Kiosk:
    def __init__(
        self,
        link: TerminalLink,
        card: CardConnection,
        *,
        pan: str,
        pin: str,
        terminal_no: bytes = bytes.fromhex("000000000001"),
        bank_pin: str | None = None,
    ) -> None:
        self.link = link
        self.card = card
        self.pan = pan
        self.pin = pin
        self.bank_pin = bank_pin or pin  # the savings account's PIN, keyed in for EP loads
        self.terminal_no = terminal_no

    @property
    def state(self) -> TerminalState:
        return self.link.state

    async def sign_on(self) -> list[str]:
        return [await self.link.sign_on()]

    def insert(self) -> list[str]:
        serial = read_serial(self.card, self.pin)
        return [f"card {serial.hex().upper()}: PIN verified"]

    async def balance(self) -> list[str]:
        terminal_card.open_application(self.card, self.pin)
        ed = terminal_card.balance(self.card, Purse.ED)
        ep = terminal_card.balance(self.card, Purse.EP)
        lines = [f"card: ED {yuan(ed)}  EP {yuan(ep)}"]
        reply = await self.link.exchange(BalanceInquiry(**self.link.envelope(), pan=self.pan))
        if reply.response_code != "00":
            raise refused(reply, "balance inquiry")
        for entry in reply.balances or ():
            name = ACCOUNTS.get(entry.account_type, entry.account_type)
            lines.append(f"centre: {name} {yuan(entry.amount_fen)}")
        return lines

    async def history(self) -> list[str]:
        """The centre's history of the card (0200 history inquiry)."""
        reply = await self.link.exchange(HistoryInquiry(**self.link.envelope(), pan=self.pan))
        if reply.response_code != "00" or not isinstance(reply, HistoryReply):
            raise refused(reply, "history inquiry")
        rows = (reply.history or b"").decode("utf-8", "replace").splitlines()
        lines = [f"history: {len(rows)} entries"]
        for row in rows:
            when, kind, amount, *rest = [*row.split("|"), "", "", ""][:4]
            fen = int(amount) if amount.isdigit() else 0
            lines.append(f"  {when} {kind} {yuan(fen)} {rest[0]}".rstrip())
        return lines

    async def load(self, amount_fen: int, *, lose_confirmation: bool = False) -> list[str]:
        """An ED load from the personal fund."""
        return await self._load(amount_fen, Purse.ED, lose_confirmation)

    async def ep_load(self, amount_fen: int, *, lose_confirmation: bool = False) -> list[str]:
        """An EP load from the cardholder's savings: the bank PIN under the session PIK."""
        return await self._load(amount_fen, Purse.EP, lose_confirmation)

    async def _load(self, amount_fen: int, purse: Purse, lose_confirmation: bool) -> list[str]:
        if self.state.pending_load is not None:
            raise TerminalError("a load awaits its confirmation: run recover first")
        serial = read_serial(self.card, self.pin)
        data = terminal_card.initialize_load(self.card, serial, amount_fen, self.terminal_no, purse)
        envelope = self.link.envelope()
        if purse is Purse.EP:
            pik = self.link.signed_on().pik
            block = await self.link.hsm.encrypt_pin(pik, self.bank_pin, self.pan)
            request: EdLoad = EpLoad(
                **envelope, pan=self.pan, amount_fen=amount_fen, card=data, pin_block=block
            )
        else:
            request = EdLoad(**envelope, pan=self.pan, amount_fen=amount_fen, card=data)
        reply = await self.link.exchange(request)
        what = "EP load" if purse is Purse.EP else "load"
        if reply.response_code != "00":
            if reply.card is not None and reply.card.issuer_script:
                self.card.transmit(reply.card.issuer_script)
            raise refused(reply, what)
        if reply.card is None or not reply.card.mac2 or not reply.card.card_datetime:
            raise TerminalError(f"the {what}'s answer carries no MAC2")
        self.state.pending_load = {
            "pan": self.pan,
            "amount_fen": amount_fen,
            "card": data.build().hex(),
            "card_datetime": reply.card.card_datetime,
            "purse": purse.name,
        }
        self.state.save()
        try:
            tac = terminal_card.credit_for_load(
                self.card, reply.card.card_datetime, reply.card.mac2
            )
        except (ApduError, CardConnectionError):
            return ["the card was pulled during the load: run recover with the card back"]
        if lose_confirmation:
            return [f"card credited {yuan(amount_fen)}; the confirmation was lost"]
        return await self._confirm(tac)

    async def _confirm(self, tac: bytes) -> list[str]:
        pending = self.state.pending_load
        assert pending is not None
        purse = Purse[pending.get("purse", "ED")]
        data = CardData.parse(bytes.fromhex(pending["card"]))
        done = replace(
            data,
            tac=tac,
            new_balance_fen=terminal_card.balance(self.card, purse),
            card_datetime=pending["card_datetime"],
        )
        confirm = EpLoadConfirm if purse is Purse.EP else EdLoadConfirm
        reply = await self.link.exchange(
            confirm(
                **self.link.envelope(),
                pan=pending["pan"],
                amount_fen=pending["amount_fen"],
                card=done,
            )
        )
        if reply.response_code != "00":
            raise refused(reply, "load confirmation")
        self.state.pending_load = None
        self.state.save()
        balance = yuan(done.new_balance_fen or 0)
        return [f"loaded {yuan(pending['amount_fen'])}: {purse.name} now {balance}"]

    async def recover(self) -> list[str]:
        """GET TRANSACTION PROVE for the load awaiting confirmation."""
        pending = self.state.pending_load
        if pending is None:
            return ["nothing to recover"]
        data = CardData.parse(bytes.fromhex(pending["card"]))
        terminal_card.open_application(self.card, self.pin)
        assert data.pboc_type is not None and data.online_counter is not None
        proof = terminal.get_transaction_prove(self.card, data.pboc_type, data.online_counter)
        if proof is None:
            self.state.pending_load = None
            self.state.save()
            return ["the card was never credited: nothing to confirm (the centre's load lapses)"]
        return ["the card proves the load", *await self._confirm(proof[4:8])]
