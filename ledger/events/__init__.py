"""The business events of DESIGN §5's table, as functions with typed inputs and outcomes on top
of the core's :class:`ledger.core.Ledger`.

Every function derives its transfer ids from the event's identity (DESIGN §5's identifiers), so a
replayed event returns ``ALREADY_POSTED`` and moves nothing; anything anomalous is recorded as a
review item with a reason and returned beside the outcome. Nothing here reads the clock: a time
that matters (the sweep's grace period) is passed in.
"""

from ledger.events.balance_check import ChipCheck, ChipStatus, check_chip_balance, prove_by_counter
from ledger.events.common import (
    CENTRE,
    EventResult,
    Outcome,
    Purse,
    ReviewReason,
    TransferCode,
    bank_accounts,
    card_accounts,
    cardholder_accounts,
    centre_accounts,
    institution_accounts,
    outcome_of,
    unit_accounts,
)
from ledger.events.funds import (
    ContributionLine,
    PayoutOrder,
    StatementLine,
    contribution_transfers,
    post_contribution,
    post_contribution_received,
    post_payout,
    post_savings_debits_settled,
    resolve_payout,
)
from ledger.events.loads import (
    Attempt,
    doubt_accounts,
    find_attempt,
    load,
    open_attempts,
    post_into_doubt,
    resolve_attempt,
    unload,
)
from ledger.events.purchases import (
    GRACE_PERIOD,
    BillCompletion,
    CardDebit,
    CardSweep,
    Void,
    bill_completion_transfers,
    card_debit_id,
    post_bill_completion,
    post_card_debit,
    post_card_sweep,
    post_void,
)

__all__ = [
    "CENTRE",
    "GRACE_PERIOD",
    "Attempt",
    "BillCompletion",
    "CardDebit",
    "CardSweep",
    "ChipCheck",
    "ChipStatus",
    "ContributionLine",
    "EventResult",
    "Outcome",
    "PayoutOrder",
    "Purse",
    "ReviewReason",
    "StatementLine",
    "TransferCode",
    "Void",
    "bank_accounts",
    "bill_completion_transfers",
    "card_accounts",
    "card_debit_id",
    "cardholder_accounts",
    "centre_accounts",
    "check_chip_balance",
    "contribution_transfers",
    "doubt_accounts",
    "find_attempt",
    "institution_accounts",
    "load",
    "open_attempts",
    "outcome_of",
    "post_bill_completion",
    "post_card_debit",
    "post_card_sweep",
    "post_contribution",
    "post_contribution_received",
    "post_into_doubt",
    "post_payout",
    "post_savings_debits_settled",
    "post_void",
    "prove_by_counter",
    "resolve_attempt",
    "resolve_payout",
    "unit_accounts",
    "unload",
]
