"""Account kinds of DESIGN §5, the side of the money each is on, and the pairs a transfer may join.

Insurance money stays insurance money (专款专用) and the cardholder's own money stays theirs: every
kind belongs to exactly one side, and :data:`ALLOWED_PAIRS` lists, as data, every (debit kind,
credit kind) a transfer may join — one row per posting of DESIGN §5's table. The core refuses any
other pair, so no posting can carry money from one side to the other.

>>> side_of(AccountKind.CARD_ED_SHADOW) is Side.INSURANCE
True
>>> (AccountKind.PERSONAL_FUND, AccountKind.CARD_EP_SHADOW) in ALLOWED_PAIRS
False
>>> account_id(AccountKind.PERSONAL_FUND, "1001")
'pf:1001'
"""

from __future__ import annotations

import enum


class Side(enum.Enum):
    """Whose money an account holds."""

    INSURANCE = "insurance"
    CARDHOLDER = "cardholder"


class AccountKind(enum.Enum):
    """What an account is; the value is the prefix of its id."""

    # insurance side
    PERSONAL_FUND = "pf"  # 个人账户, per cardholder, never negative
    POOLED_FUND = "pool"  # 统筹基金
    CARD_ED_SHADOW = "ed"  # per card (application serial)
    INSTITUTION_PAYABLE_INSURANCE = "payins"  # per institution
    FUND_BANK = "fundbank"  # the insurance fund's money at its bank
    CONTRIBUTIONS_RECEIVABLE = "contrib"  # per employer unit
    ED_LOADS_IN_DOUBT = "edload"  # per card
    UNLOADS_IN_DOUBT = "unload"  # per card (unloads are from the ED)
    ED_PROOF_CLEARING = "edproof"  # nets to zero after every commit (see ledger.events.loads)
    INSURANCE_PAYOUTS_IN_FLIGHT = "payoutins"
    # cardholder side
    CARD_EP_SHADOW = "ep"  # per card
    EP_FLOAT = "epfloat"  # cardholders' own money at the bank
    INSTITUTION_PAYABLE_EP = "payep"  # per institution
    REFUNDS_PAYABLE = "refund"  # per cardholder
    BANK_CLEARING = "clearing"  # per bank
    EP_LOADS_IN_DOUBT = "epload"  # per card
    EP_PROOF_CLEARING = "epproof"
    EP_PAYOUTS_IN_FLIGHT = "payoutep"


_K = AccountKind

INSURANCE_KINDS = frozenset(
    {
        _K.PERSONAL_FUND,
        _K.POOLED_FUND,
        _K.CARD_ED_SHADOW,
        _K.INSTITUTION_PAYABLE_INSURANCE,
        _K.FUND_BANK,
        _K.CONTRIBUTIONS_RECEIVABLE,
        _K.ED_LOADS_IN_DOUBT,
        _K.UNLOADS_IN_DOUBT,
        _K.ED_PROOF_CLEARING,
        _K.INSURANCE_PAYOUTS_IN_FLIGHT,
    }
)

#: Asset accounts carry debit balances; their balance is debits - credits.
DEBIT_NORMAL_KINDS = frozenset(
    {_K.FUND_BANK, _K.CONTRIBUTIONS_RECEIVABLE, _K.EP_FLOAT, _K.BANK_CLEARING}
)

#: Kinds that may carry the never-negative flag. Card shadows never may: the card is the authority.
NEVER_NEGATIVE_KINDS = frozenset({_K.PERSONAL_FUND, _K.POOLED_FUND})

#: Kinds that get the never-negative flag when opened with default flags.
NEVER_NEGATIVE_BY_DEFAULT = frozenset({_K.PERSONAL_FUND})

#: Kinds whose accounts many cards' transfers share (the pooled fund, the institutions' payables,
#: the clearing and in-flight accounts) — the hot rows. Every other kind is one card's or one
#: cardholder's. Unless flagged never-negative, no transfer's decision depends on a shared
#: account's totals, so the PostgreSQL ledger adds to them without locking them first
#: (``ledger.pg_post``).
SHARED_KINDS = frozenset(
    {
        _K.POOLED_FUND,
        _K.INSTITUTION_PAYABLE_INSURANCE,
        _K.FUND_BANK,
        _K.CONTRIBUTIONS_RECEIVABLE,
        _K.ED_PROOF_CLEARING,
        _K.INSURANCE_PAYOUTS_IN_FLIGHT,
        _K.EP_FLOAT,
        _K.INSTITUTION_PAYABLE_EP,
        _K.BANK_CLEARING,
        _K.EP_PROOF_CLEARING,
        _K.EP_PAYOUTS_IN_FLIGHT,
    }
)
_SHARED_PREFIXES = frozenset(kind.value for kind in SHARED_KINDS)

#: Every (debit kind, credit kind) a transfer may join, one row per posting of DESIGN §5's table.
ALLOWED_PAIRS: frozenset[tuple[AccountKind, AccountKind]] = frozenset(
    {
        # contributions and their bank statement
        (_K.CONTRIBUTIONS_RECEIVABLE, _K.PERSONAL_FUND),
        (_K.CONTRIBUTIONS_RECEIVABLE, _K.POOLED_FUND),
        (_K.FUND_BANK, _K.CONTRIBUTIONS_RECEIVABLE),
        # ED load: into doubt, proven (through the proof clearing), proven not to have happened
        (_K.PERSONAL_FUND, _K.ED_LOADS_IN_DOUBT),
        (_K.ED_LOADS_IN_DOUBT, _K.ED_PROOF_CLEARING),
        (_K.ED_PROOF_CLEARING, _K.CARD_ED_SHADOW),
        (_K.ED_LOADS_IN_DOUBT, _K.PERSONAL_FUND),
        # unload from the ED
        (_K.CARD_ED_SHADOW, _K.UNLOADS_IN_DOUBT),
        (_K.UNLOADS_IN_DOUBT, _K.ED_PROOF_CLEARING),
        (_K.ED_PROOF_CLEARING, _K.PERSONAL_FUND),
        (_K.UNLOADS_IN_DOUBT, _K.CARD_ED_SHADOW),
        # card debits, bills, voids, cancel
        (_K.CARD_ED_SHADOW, _K.INSTITUTION_PAYABLE_INSURANCE),
        (_K.POOLED_FUND, _K.INSTITUTION_PAYABLE_INSURANCE),
        (_K.INSTITUTION_PAYABLE_INSURANCE, _K.POOLED_FUND),
        (_K.INSTITUTION_PAYABLE_INSURANCE, _K.PERSONAL_FUND),
        (_K.CARD_ED_SHADOW, _K.PERSONAL_FUND),
        # insurance payouts
        (_K.INSTITUTION_PAYABLE_INSURANCE, _K.INSURANCE_PAYOUTS_IN_FLIGHT),
        (_K.INSURANCE_PAYOUTS_IN_FLIGHT, _K.FUND_BANK),
        (_K.INSURANCE_PAYOUTS_IN_FLIGHT, _K.INSTITUTION_PAYABLE_INSURANCE),
        # EP load, bank statement of savings debits
        (_K.BANK_CLEARING, _K.EP_LOADS_IN_DOUBT),
        (_K.EP_LOADS_IN_DOUBT, _K.EP_PROOF_CLEARING),
        (_K.EP_PROOF_CLEARING, _K.CARD_EP_SHADOW),
        (_K.EP_LOADS_IN_DOUBT, _K.BANK_CLEARING),
        (_K.EP_FLOAT, _K.BANK_CLEARING),
        # EP card debits, voids, cancel
        (_K.CARD_EP_SHADOW, _K.INSTITUTION_PAYABLE_EP),
        (_K.INSTITUTION_PAYABLE_EP, _K.REFUNDS_PAYABLE),
        (_K.CARD_EP_SHADOW, _K.REFUNDS_PAYABLE),
        # EP payouts: institutions and cardholder refunds
        (_K.INSTITUTION_PAYABLE_EP, _K.EP_PAYOUTS_IN_FLIGHT),
        (_K.REFUNDS_PAYABLE, _K.EP_PAYOUTS_IN_FLIGHT),
        (_K.EP_PAYOUTS_IN_FLIGHT, _K.EP_FLOAT),
        (_K.EP_PAYOUTS_IN_FLIGHT, _K.INSTITUTION_PAYABLE_EP),
        (_K.EP_PAYOUTS_IN_FLIGHT, _K.REFUNDS_PAYABLE),
    }
)

_BY_PREFIX = {kind.value: kind for kind in AccountKind}


def side_of(kind: AccountKind) -> Side:
    """The side of the money an account kind belongs to."""
    return Side.INSURANCE if kind in INSURANCE_KINDS else Side.CARDHOLDER


def account_id(kind: AccountKind, owner: str) -> str:
    """The id of the account of `kind` owned by `owner` (cardholder, card serial, institution…)."""
    return f"{kind.value}:{owner}"


def kind_of(account: str) -> AccountKind:
    """The kind encoded in an account id.

    >>> kind_of("ep:8888").name
    'CARD_EP_SHADOW'
    """
    prefix, _, _ = account.partition(":")
    return _BY_PREFIX[prefix]


def is_shared(account: str) -> bool:
    """Whether the account id is of a :data:`SHARED_KINDS` kind (no lookup of the kind).

    >>> is_shared("pool:main"), is_shared("ed:8888"), is_shared("nokind")
    (True, False, False)
    """
    return account.partition(":")[0] in _SHARED_PREFIXES
