"""Every request class of both transaction tables has its own transaction type for the metrics'
``type`` label, from the table's row names: a bounded set."""

from __future__ import annotations

from messages import bank, terminal_table
from messages.bank import BankReversal, CardService
from messages.terminal import Reversal, SignOn
from switch.txn_types import NAMES, transaction_type


def test_every_request_class_has_a_type_from_its_table() -> None:
    requests = {request for _, request, _ in terminal_table.TABLE} | {c for _, c in bank.TABLE}
    assert requests <= set(NAMES)
    names = {row.name for row, _, _ in terminal_table.TABLE} | {row.name for row, _ in bank.TABLE}
    assert set(NAMES.values()) <= names | {"reversal"}
    assert NAMES[SignOn] == "sign_on"
    assert NAMES[Reversal] == NAMES[BankReversal] == "reversal"
    assert len(set(NAMES.values())) <= len(names) + 1


def test_a_card_service_is_typed_by_its_service() -> None:
    service = CardService(
        stan="000001", transmitted="1207150000", acquirer_id="01020000",
        service="loss_report", pan="6212340000000016",
    )  # fmt: skip
    assert transaction_type(service) == "loss_report"
    assert transaction_type("not a request") == "other"
