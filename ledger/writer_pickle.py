"""What crosses between the daemon and its ledger writer process (`ledger.writer_process`),
and how it is pickled: through a dispatch table (looked up in C, calling Python only for the
types it names) that sends enum members by number and the hot frozen dataclasses by their
fields; the child's answers also send a bill's lines and split by number once the parent has
them (`Sent`, `Received`).

>>> from ledger.core import TransferResult
>>> import pickle
>>> pickle.loads(dumps([TransferResult.CREATED, 0]))
[<TransferResult.CREATED: 0>, 0]
"""

from __future__ import annotations

import copyreg
import dataclasses
import enum
import functools
import io
import itertools
import operator
import pickle
import threading
from collections.abc import Callable
from typing import Any

PROTOCOL = pickle.HIGHEST_PROTOCOL
SENT_MAX = 16384  # bills and splits the child remembers having sent; the parent keeps twice


@functools.cache
def _members() -> list[enum.Enum]:
    """The enums' members that cross, numbered the same on both ends (an enum unpickles
    through its class's call: a microsecond each, and an answer holds dozens)."""
    from ledger.core import AccountFlags, AccountResult, CloseResult, TransferResult
    from ledger.events import TransferCode
    from ledger.kinds import AccountKind
    from ledger.medical.bills import BillState
    from ledger.medical.catalogue import Coverage
    from ledger.medical.policy import Category
    from ledger.medical.split import Reason, Share

    classes = (AccountFlags, AccountResult, CloseResult, TransferResult, AccountKind)
    classes += (TransferCode, BillState, Coverage, Category, Reason, Share)  # type: ignore[assignment]
    return [member for cls in classes for member in cls]


def _member(number: int) -> enum.Enum:
    return _members()[number]


@functools.cache
def _table() -> dict[type, Callable[[Any], Any]]:
    """Reducers by exact type, for a pickler's ``dispatch_table`` (looked up in C: nothing is
    called for the other objects): enum members by number; the frozen dataclasses that cross
    most (the ledger's records, the medical writes) by their fields in order, rebuilt by their
    ``__init__`` (their default, a Python ``__setstate__`` walking ``fields()``, costs
    several times as much)."""
    from ledger import core
    from ledger.medical import service, sql_writes
    from ledger.medical.accumulators import Totals

    table: dict[type, Callable[[Any], Any]] = dict(copyreg.dispatch_table)
    index: dict[type, dict[Any, int]] = {}
    for number, member in enumerate(_members()):
        index.setdefault(type(member), {})[member] = number
    for kind, numbers in index.items():
        table[kind] = functools.partial(_reduce_member, numbers)
    classes = [core.Transfer, core.OfflineRecord, core.Account, core.Balance, Totals]
    classes += [sql_writes.TransitionWrite, sql_writes.SubmitWrite, sql_writes.OfflineWrite]
    classes += [service._Approval, service._Paid, service._Cancel, service._CashClose]
    for cls in classes:
        fields = dataclasses.fields(cls)
        if all(f.init for f in fields):
            get = operator.attrgetter(*(f.name for f in fields))
            table[cls] = functools.partial(_reduce_fields, cls, get, len(fields) == 1)
    return table


def _reduce_member(numbers: dict[Any, int], member: Any) -> Any:
    number = numbers.get(member)
    if number is None:  # a combination of flags: as pickle makes it
        return member.__reduce_ex__(PROTOCOL)
    return _member, (number,)


def _reduce_fields(cls: type, get: Callable[[Any], Any], single: bool, obj: Any) -> Any:
    values = get(obj)
    return cls, ((values,) if single else values)


def dumps(value: Any) -> bytes:
    """``value`` pickled with `_table`'s reducers (what crosses to the writer process)."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, PROTOCOL)
    pickler.dispatch_table = _table()
    pickler.dump(value)
    return out.getvalue()


class Sent:
    """The child's side of the answers' pickling: `_table`'s reducers, and a bill's lines or
    split (immutable, and the same objects from the bill's approval to its completion: the
    writer keeps them) whole once, then by number while the child remembers it. The parent
    keeps more than the child remembers, so a number always names what the parent has
    (`Received`)."""

    def __init__(self) -> None:
        from ledger.medical.split import Bill, Split

        self._dispatch = dict(_table())
        self._dispatch[Bill] = self._dispatch[Split] = self._reduce_kept
        self._sent: dict[int, tuple[int, Any]] = {}  # id → (number, the object, held)
        self._numbers = itertools.count()
        self._added: list[int] = []  # ids numbered by the message being pickled
        self._fresh: Any = None  # the object whose new number is being pickled

    def dump(self, answers: Any) -> bytes:
        out = io.BytesIO()
        pickler = pickle.Pickler(out, PROTOCOL)
        pickler.dispatch_table = self._dispatch
        self._added, self._fresh = [], None
        try:
            pickler.dump(answers)
        except BaseException:  # what it numbered did not reach the parent
            for key in self._added:
                del self._sent[key]
            raise
        return out.getvalue()

    def _reduce_kept(self, obj: Any) -> Any:
        if obj is self._fresh:  # inside its own _keep(number, obj): as pickle makes it
            self._fresh = None
            return obj.__reduce_ex__(PROTOCOL)
        found = self._sent.get(id(obj))
        if found is not None and found[1] is obj:
            return _kept, (found[0],)
        number = next(self._numbers)
        self._sent[id(obj)] = (number, obj)  # held: its id cannot name another object
        self._added.append(id(obj))
        if len(self._sent) > SENT_MAX:
            del self._sent[next(iter(self._sent))]
        self._fresh = obj
        return _keep, (number, obj)


_receiving = threading.local()  # the `Received` whose message is being unpickled


def _kept(number: int) -> Any:
    return _receiving.kept[number]


def _keep(number: int, obj: Any) -> Any:
    kept = _receiving.kept
    kept[number] = obj
    if len(kept) > 2 * SENT_MAX:
        del kept[next(iter(kept))]
    return obj


class Received:
    """The parent's side of `Sent`."""

    def __init__(self) -> None:
        self._kept: dict[int, Any] = {}

    def load(self, data: bytes | bytearray) -> Any:
        _receiving.kept = self._kept
        return pickle.loads(data)


def crossing(error: BaseException | None) -> BaseException | None:
    """``error`` if it survives pickling both ways (errors are rare: checked each time),
    else a RuntimeError naming it: the parent must be able to read every answer."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error, PROTOCOL))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error
