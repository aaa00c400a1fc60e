"""The transaction type of a request, for the ``type`` label of ``medswitch_messages_total``:
its row's name in the interface's transaction table (`messages.terminal_table`,
`messages.bank`) — a bounded set, never anything from the wire beyond which row matched.

>>> from messages.terminal import Echo
>>> transaction_type(Echo(stan="000001", terminal_id="POS00001", institution_id="1"))
'echo'
>>> transaction_type(object())
'other'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from messages import bank, terminal_table
from messages.bank import BankReversal, CardService
from messages.terminal import Reversal, SignOn


def _names() -> Mapping[type, str]:
    names: dict[type, str] = {}
    for row, request, _ in terminal_table.TABLE:
        names.setdefault(request, row.name)
    for bank_row, bank_request in bank.TABLE:
        names.setdefault(bank_request, bank_row.name)
    names[SignOn] = "sign_on"  # its three key schemes are one transaction
    names[Reversal] = names[BankReversal] = "reversal"
    return MappingProxyType(names)


NAMES = _names()


def transaction_type(request: object) -> str:
    if isinstance(request, CardService):
        return request.service  # the row name parsing found: pin_reload, loss_report...
    return NAMES.get(type(request), "other")
