"""What the SQLite ledger's writer process carries, for its wire (`ledger.writer.wire`): the
enums sent by number, the records sent by their fields, the bill parts sent once. Named by
`ledger.sqlite_ledger.CROSSING`; both processes call `sqlite_writer` (the wire imports none of
these classes itself)."""

from __future__ import annotations

import datetime as dt
import enum
import functools
from typing import Any

from ledger import core
from ledger.events import BillCompletion, TransferCode, purchases
from ledger.kinds import AccountKind
from ledger.medical import bills, catalogue, policy, refusals, split, sql_writes
from ledger.medical.accumulators import Totals
from ledger.medical.bills import BillState
from ledger.medical.catalogue import Coverage
from ledger.medical.policy import Category
from ledger.medical.split import Bill, Reason, Share, Split
from ledger.writer import jobs
from ledger.writer.wire import Crossing


def sqlite_writer() -> Crossing:
    """The classes, in an order both ends share (enum members are numbered by it)."""
    enums: tuple[type[enum.Enum], ...] = (core.AccountFlags, core.AccountResult, core.CloseResult)
    enums += (core.TransferResult, AccountKind, TransferCode, BillState, Coverage, Category)
    enums += (Reason, Share)
    # core.Balance and bills.BillRecord pickle by their own __reduce__ (enums by value)
    records: tuple[type, ...] = (core.Transfer, core.OfflineRecord, core.Account)
    records += (Totals, sql_writes.TransitionWrite, sql_writes.SubmitWrite, sql_writes.OfflineWrite)
    records += refusals.CHECKS + jobs.OPERATIONS + jobs.ANSWERS + (BillCompletion,)
    # by number, not by name: an advice's functions, the answers' rebuilding functions, and
    # what a submitted bill's split and record carry
    named: tuple[Any, ...] = (purchases.debit_accounts, purchases.bill_completion_postings)
    named += (purchases.paid_bill, bills._bill_record, core._balance, core.PostedTransfer)
    named += (split.BillLine, split.LineSplit, split.Part, split.Person, split.split_bill)
    named += (functools.partial, dt.date, catalogue.CatalogueVersion, catalogue.CatalogueItem)
    named += (policy.Policy, policy.ContributionBand, policy.SpecialCategory, policy.Counted)
    return Crossing(enums=enums, records=records, kept=(Bill, Split), named=named)
