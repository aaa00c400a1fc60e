"""Loads 圈存 and unloads 圈提: into doubt when MAC2 is released, then resolved exactly once —
proven (TAC, MAC3, or the card's counter) or proven not to have happened.

Identifiers (DESIGN §5): an attempt is its message key plus the card's INITIALIZE random; its proof
key is (application serial, purse, online counter). Three transfer ids follow from them:

- into doubt: ``transfer_id("into-doubt", message_key, random)``;
- resolution: ``transfer_id("resolve", message_key, random)`` — the *same* id whether the attempt
  happened or not, so the core's idempotency lets an attempt resolve one way, once;
- proof: ``transfer_id("proof", serial, purse, counter)`` — an attempt that happened moves its
  money through the side's proof clearing account in a linked pair (resolution, then proof), so at
  most one attempt per proof key reaches the shadow (or, for an unload, the personal fund). The
  proof clearing account nets to zero after every commit.

The into-doubt transfer's reference carries the whole attempt, so the card's counter at its next
load (:func:`ledger.events.balance_check.check_chip_balance`) can resolve what is still open.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ledger.core import Account, Ledger, QueuedReversal, Transfer, transfer_id
from ledger.events.common import (
    EventResult,
    Outcome,
    Purse,
    ReviewReason,
    TransferCode,
    bank_accounts,
    card_accounts,
    cardholder_accounts,
    centre,
    post_event,
    review,
    shadow,
)
from ledger.kinds import AccountKind as K
from ledger.kinds import account_id


@dataclass(frozen=True)
class Attempt:
    """A load (ED or EP) or an unload (ED) whose MAC2 is about to be released."""

    unload: bool
    message_key: str  # terminal, batch, STAN, class — or the bank link's key — as text
    card_random: str  # the card's INITIALIZE random, hex
    application_serial: str
    purse: Purse
    online_counter: int  # the counter INITIALIZE returned: the one this attempt uses
    amount_fen: int
    party: str  # the cardholder (ED: personal fund) or the bank (EP: bank clearing)

    def __post_init__(self) -> None:
        if any("|" in part for part in (self.card_random, self.application_serial, self.party)):
            raise ValueError("'|' is reserved in an attempt's reference")

    @property
    def reference(self) -> str:
        op = "unload" if self.unload else "load"
        return "|".join(
            (
                op,
                self.purse.value,
                self.application_serial,
                str(self.online_counter),
                self.party,
                self.card_random,
                self.message_key,  # last: the only part that may itself contain "|"
            )
        )

    @classmethod
    def parse(cls, reference: str, amount_fen: int) -> Attempt:
        """The attempt an into-doubt transfer's reference describes."""
        op, purse, serial, counter, party, random, message_key = reference.split("|", 6)
        return cls(
            op == "unload",
            message_key,
            random,
            serial,
            Purse(purse),
            int(counter),
            amount_fen,
            party,
        )

    @property
    def into_doubt_id(self) -> str:
        return transfer_id("into-doubt", self.message_key, self.card_random)

    @property
    def resolve_id(self) -> str:
        return transfer_id("resolve", self.message_key, self.card_random)

    @property
    def proof_id(self) -> str:
        return transfer_id("proof", self.application_serial, self.purse.value, self.online_counter)

    @property
    def doubt_account(self) -> str:
        if self.unload:
            return account_id(K.UNLOADS_IN_DOUBT, self.application_serial)
        kind = K.ED_LOADS_IN_DOUBT if self.purse is Purse.ED else K.EP_LOADS_IN_DOUBT
        return account_id(kind, self.application_serial)

    @property
    def source_account(self) -> str:
        """Where the money comes from, and goes back to when it did not happen."""
        if self.unload:
            return shadow(Purse.ED, self.application_serial)
        if self.purse is Purse.ED:
            return account_id(K.PERSONAL_FUND, self.party)
        return account_id(K.BANK_CLEARING, self.party)

    @property
    def target_account(self) -> str:
        """Where the money ends when it happened."""
        if self.unload:
            return account_id(K.PERSONAL_FUND, self.party)
        return shadow(self.purse, self.application_serial)

    @property
    def proof_clearing(self) -> str:
        return centre(K.ED_PROOF_CLEARING if self.purse is Purse.ED else K.EP_PROOF_CLEARING)


def load(
    message_key: str,
    card_random: str,
    application_serial: str,
    purse: Purse,
    online_counter: int,
    amount_fen: int,
    party: str,
) -> Attempt:
    """A load attempt; `party` is the cardholder for the ED, the bank for the EP."""
    return Attempt(
        False,
        message_key,
        card_random,
        application_serial,
        purse,
        online_counter,
        amount_fen,
        party,
    )


def unload(
    message_key: str,
    card_random: str,
    application_serial: str,
    online_counter: int,
    amount_fen: int,
    cardholder_id: str,
) -> Attempt:
    """An unload attempt (from the ED back to the personal fund)."""
    return Attempt(
        True,
        message_key,
        card_random,
        application_serial,
        Purse.ED,
        online_counter,
        amount_fen,
        cardholder_id,
    )


async def post_into_doubt(ledger: Ledger, attempt: Attempt) -> EventResult:
    """MAC1 verified, MAC2 about to be released: the money goes into doubt.

    ED load: personal fund → loads in doubt (may be INSUFFICIENT_FUNDS: decline).
    EP load (the bank approved the savings debit): bank clearing → loads in doubt.
    Unload: card ED shadow → unloads in doubt (the card's MAC1 said it holds the money).
    """
    if attempt.unload and attempt.purse is not Purse.ED:
        raise ValueError("unloads are from the ED")
    code = TransferCode.UNLOAD_INTO_DOUBT if attempt.unload else TransferCode.LOAD_INTO_DOUBT
    transfer = Transfer(
        attempt.into_doubt_id,
        attempt.source_account,
        attempt.doubt_account,
        attempt.amount_fen,
        code,
        attempt.reference,
    )
    result = await post_event(ledger, attempt.reference, [transfer], ensure=_accounts(attempt))
    if attempt.unload and result.outcome is Outcome.POSTED:
        await _review_if_below_zero(ledger, attempt)
    if result.outcome is Outcome.ALREADY_POSTED:
        return await _unless_undone(ledger, attempt, result)
    return result


def _accounts(attempt: Attempt) -> list[Account]:
    """The card's and its party's accounts (opened on first use if issuance did not)."""
    party = attempt.party
    funding = bank_accounts(party) if attempt.purse is Purse.EP else cardholder_accounts(party)
    return card_accounts(attempt.application_serial) + funding


async def _unless_undone(ledger: Ledger, attempt: Attempt, replay: EventResult) -> EventResult:
    """A retransmitted attempt that was meanwhile proven not to have happened must not get its
    MAC2 again: the card could still take it, with the money already back at its source."""
    found = (await ledger.lookup_transfers([attempt.resolve_id])).get(attempt.resolve_id)
    if found is None or not found.result.ok:
        return replay
    if found.transfer.credit_account_id != attempt.source_account:
        return replay  # proven to have happened: a second MAC2 changes nothing on the card
    item = await review(ledger, ReviewReason.ATTEMPT_ALREADY_UNDONE, attempt.reference)
    return EventResult(Outcome.CONFLICT, replay.transfer_ids, item)


async def _review_if_below_zero(ledger: Ledger, attempt: Attempt) -> None:
    balance = await ledger.balance(shadow(Purse.ED, attempt.application_serial))
    if balance is not None and balance.balance_fen < 0:
        await review(ledger, ReviewReason.SHADOW_BELOW_ZERO, attempt.reference, balance.balance_fen)


async def resolve_attempt(ledger: Ledger, attempt: Attempt, *, happened: bool) -> EventResult:
    """Resolve an attempt in doubt, once. `happened`: TAC/MAC3 verified or proven by the card;
    not `happened`: proven not to have happened (counter unchanged, 9406). An EP load that did
    not happen goes back to bank clearing and a reversal is queued for the bank."""
    if happened:
        return await _resolve_happened(ledger, attempt)
    code = TransferCode.UNLOAD_UNDONE if attempt.unload else TransferCode.LOAD_UNDONE
    back = Transfer(
        attempt.resolve_id,
        attempt.doubt_account,
        attempt.source_account,
        attempt.amount_fen,
        code,
        attempt.reference,
    )
    result = await post_event(ledger, attempt.reference, [back])
    if result.ok and attempt.purse is Purse.EP:
        reversal = QueuedReversal(
            attempt.resolve_id, attempt.party, attempt.reference, attempt.amount_fen
        )
        await ledger.queue_reversal(reversal)
    return result


async def _resolve_happened(ledger: Ledger, attempt: Attempt) -> EventResult:
    if attempt.unload:
        codes = (TransferCode.UNLOAD_PROVEN, TransferCode.UNLOAD_TO_FUND)
    else:
        codes = (TransferCode.LOAD_PROVEN, TransferCode.LOAD_TO_SHADOW)
    pair = [
        Transfer(
            attempt.resolve_id,
            attempt.doubt_account,
            attempt.proof_clearing,
            attempt.amount_fen,
            codes[0],
            attempt.reference,
        ),
        Transfer(
            attempt.proof_id,
            attempt.proof_clearing,
            attempt.target_account,
            attempt.amount_fen,
            codes[1],
            attempt.reference,
        ),
    ]
    return await post_event(ledger, attempt.reference, pair, linked=True)


def doubt_accounts(application_serial: str, purse: Purse) -> list[str]:
    """The card's accounts that hold `purse` attempts in doubt (loads; for the ED unloads too)."""
    doubts = [load("", "", application_serial, purse, 0, 0, "").doubt_account]
    if purse is Purse.ED:
        doubts.append(unload("", "", application_serial, 0, 0, "").doubt_account)
    return doubts


async def open_attempts(ledger: Ledger, application_serial: str, purse: Purse) -> list[Attempt]:
    """The card's attempts still in doubt for `purse` (from its doubt accounts' recent history)."""
    doubts = doubt_accounts(application_serial, purse)
    histories = await asyncio.gather(*(ledger.history(doubt) for doubt in doubts))
    attempts: list[Attempt] = []
    for doubt, history in zip(doubts, histories, strict=True):
        for posted in history:
            transfer = posted.transfer
            if transfer.credit_account_id == doubt and transfer.code in (
                TransferCode.LOAD_INTO_DOUBT,
                TransferCode.UNLOAD_INTO_DOUBT,
            ):
                attempts.append(Attempt.parse(transfer.reference, transfer.amount_fen))
    found = await ledger.lookup_transfers([a.resolve_id for a in attempts])
    resolved = {transfer for transfer, posted in found.items() if posted.result.ok}
    return [a for a in attempts if a.resolve_id not in resolved]


async def find_attempt(ledger: Ledger, message_key: str, card_random: str) -> Attempt | None:
    """The attempt put into doubt under this message key and card random, if it was.

    What a confirmation (TAC advice) or a proof needs when it carries only the original's key.
    A terminal's reversal of a load moves nothing: the attempt stays in doubt until proven.
    """
    into_doubt = transfer_id("into-doubt", message_key, card_random)
    found = (await ledger.lookup_transfers([into_doubt])).get(into_doubt)
    if found is None or not found.result.ok:
        return None
    return Attempt.parse(found.transfer.reference, found.transfer.amount_fen)
