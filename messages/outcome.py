"""Business outcomes as values, mapped to field 39 per interface.

Handlers return an :class:`Outcome`; the terminal and bank interfaces turn it into their
response code. Codes follow reference §2.8 (CUP-POS); the bank interface uses the same table.

>>> Outcome.MAC_ERROR.code
'A0'
>>> Outcome.from_code("94")
<Outcome.DUPLICATE: '94'>
"""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    APPROVED = "00"
    REFER_TO_ISSUER = "01"
    INVALID_MERCHANT = "03"  # institution not designated / not allowed
    DO_NOT_HONOUR = "05"
    ERROR = "06"
    INVALID_TRANSACTION = "12"
    INVALID_AMOUNT = "13"
    INVALID_CARD = "14"
    RE_SIGN_ON = "22"
    ORIGINAL_NOT_FOUND = "25"
    FORMAT_ERROR = "30"
    EXPIRED_CARD = "33"
    PIN_TRIES_EXCEEDED = "38"
    FUNCTION_NOT_SUPPORTED = "40"
    LOST_CARD = "41"
    STOLEN_CARD = "43"
    INSUFFICIENT_FUNDS = "51"
    WRONG_PIN = "55"
    NOT_PERMITTED_CARDHOLDER = "57"
    NOT_PERMITTED_TERMINAL = "58"
    AMOUNT_LIMIT = "61"
    RESTRICTED_CARD = "62"
    COUNT_LIMIT = "65"
    LATE_RESPONSE = "68"
    BATCH_MISMATCH = "77"
    OFFLINE_TOTALS_MISMATCH = "79"
    SECURITY_FAILURE = "89"
    CUTOVER = "90"
    ISSUER_INOPERATIVE = "91"
    NO_ROUTE = "92"
    DUPLICATE = "94"
    SYSTEM_FAULT = "96"
    TERMINAL_NOT_REGISTERED = "97"
    ISSUER_TIMEOUT = "98"
    PIN_FORMAT_ERROR = "99"
    MAC_ERROR = "A0"

    @property
    def code(self) -> str:
        return self.value

    @property
    def approved(self) -> bool:
        return self is Outcome.APPROVED

    @classmethod
    def from_code(cls, code: str) -> Outcome:
        """The outcome for a response code; unknown codes are :attr:`DO_NOT_HONOUR`."""
        try:
            return cls(code)
        except ValueError:
            return cls.DO_NOT_HONOUR
