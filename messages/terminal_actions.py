"""What a terminal does on each response code (field 39): one table, shown in the spec's
response-code table (`python -m messages.specdoc`) and by the simulators on every refusal.

>>> explain("94")
'94 duplicate: the same batch and STAN with other content: use a new STAN'
"""

from __future__ import annotations

from types import MappingProxyType

from messages.outcome import Outcome

Oc = Outcome
TERMINAL_ACTIONS = MappingProxyType({
    Oc.APPROVED: "complete the transaction (card step, receipt)",
    Oc.REFER_TO_ISSUER: "decline; the cardholder contacts the insurance centre",
    Oc.INVALID_MERCHANT: "check field 42: the id of the institution owning the terminal, "
    "space-padded to 15; do not resend unchanged",
    Oc.DO_NOT_HONOUR: "decline; do not resend unchanged",
    Oc.ERROR: "decline; try again later, then call the centre's help desk",
    Oc.INVALID_TRANSACTION: "not allowed here or in the bill's or original's state; "
    "do not resend unchanged",
    Oc.INVALID_AMOUNT: "check field 4 (a settlement: the bill total as the HIS submitted it; "
    "a void: the original total), correct it and send again",
    Oc.INVALID_CARD: "the card number (field 2) is unknown or not the card's application "
    "serial: read the card again",
    Oc.RE_SIGN_ON: "sign on again, then repeat with the new keys and batch",
    Oc.ORIGINAL_NOT_FOUND: "the original (field 61) is unknown: nothing to undo",
    Oc.FORMAT_ERROR: "a field is missing or malformed (the centre's log names it); "
    "fix the message, the same frame gets 30 again",
    Oc.EXPIRED_CARD: "decline; the cardholder renews the card",
    Oc.PIN_TRIES_EXCEEDED: "decline; the PIN is blocked: unblock it at a service point",
    Oc.FUNCTION_NOT_SUPPORTED: "this terminal cannot do this transaction; do not retry",
    Oc.LOST_CARD: "decline; send field 58's issuer script (APPLICATION BLOCK) to the card",
    Oc.STOLEN_CARD: "decline; retain the card as the procedure says",
    Oc.INSUFFICIENT_FUNDS: "decline; the account cannot pay: another means of payment",
    Oc.WRONG_PIN: "ask for the PIN again (the tries are limited)",
    Oc.NOT_PERMITTED_CARDHOLDER: "decline; this cardholder may not do this",
    Oc.NOT_PERMITTED_TERMINAL: "decline; this kind of terminal may not do this "
    "(an EP load from bank savings: kiosks only)",
    Oc.AMOUNT_LIMIT: "decline; the amount is over a limit",
    Oc.RESTRICTED_CARD: "decline; the card is restricted",
    Oc.COUNT_LIMIT: "decline; too many transactions, try later",
    Oc.LATE_RESPONSE: "treat as no answer: reverse (0400) a reversible transaction",
    Oc.BATCH_MISMATCH: "field 60.2 is not the batch of the sign-on: sign on again and resend",
    Oc.OFFLINE_TOTALS_MISMATCH: "upload every offline record (0320), then settle the batch again",
    Oc.SECURITY_FAILURE: "a card cryptogram (MAC1, TAC) did not verify: check the card keys' "
    "diversification and the terminal number; the record goes to review",
    Oc.CUTOVER: "the business day is closing: retry in a few minutes",
    Oc.ISSUER_INOPERATIVE: "the bank or the centre's back end is unavailable: retry later",
    Oc.NO_ROUTE: "no bank serves this card: another means of payment",
    Oc.DUPLICATE: "the same batch and STAN with other content: use a new STAN",
    Oc.SYSTEM_FAULT: "retry later; reverse (0400) what may have been done",
    Oc.TERMINAL_NOT_REGISTERED: "field 41 is unknown to the centre: check it, have it registered",
    Oc.ISSUER_TIMEOUT: "the bank did not answer; the centre reverses: retry later",
    Oc.PIN_FORMAT_ERROR: "send the PIN as an ISO 9564 format 0 block under the session PIK",
    Oc.MAC_ERROR: "field 64 did not verify: sign on again for fresh keys, then resend",
})


def meaning(outcome: Outcome) -> str:
    return outcome.name.lower().replace("_", " ")


def explain(code: str) -> str:
    """`code meaning: what to do` for a response code (unknown codes say so)."""
    try:
        outcome = Outcome(code)
    except ValueError:
        return f"{code} (a code the terminal interface does not define): decline"
    return f"{code} {meaning(outcome)}: {TERMINAL_ACTIONS[outcome]}"
