"""What crosses between the daemon and its ledger writer process, and how it is pickled: the
classes, enum members and functions of a `Crossing` by number (both ends' memo starts with them:
`Wire.known`), the hot records (frozen dataclasses, named tuples) by their fields through a
dispatch table (looked up in C, calling Python only for the types it names); the child's answers
also send the objects of `Crossing.kept` (a bill's lines and split) by number once the parent has
them (`Sent`, `Received`).

The wire imports none of the classes it pickles: it is given them (`Crossing`), by whoever opens
the writer process, as the dotted name of a function both processes call (`load_crossing`).

>>> import enum
>>> class Colour(enum.Enum):
...     RED = 1
>>> wire = Wire(Crossing(enums=(Colour,)))
>>> wire.loads(wire.dumps([Colour.RED, 0]))
[<Colour.RED: 1>, 0]
"""

from __future__ import annotations

import copyreg
import dataclasses
import enum
import functools
import hashlib
import importlib
import io
import itertools
import operator
import pickle
import struct
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

#: 3, not 5: its memo puts name their index (BINPUT), where protocol 4's MEMOIZE takes the
#: unpickler's count, which a memo copied in (`_Seeded`) does not set on Python 3.11.
PROTOCOL = 3
SENT_MAX = 16384  # kept objects the child remembers having sent; the parent keeps twice


class Crossing(NamedTuple):
    """The classes a writer's jobs and answers carry: ``enums`` whose members go by number (the
    same order on both ends), ``records`` (frozen dataclasses whose fields all init, or named
    tuples) by their fields, ``kept`` (immutable, sent again and again: a bill's lines and
    split) by number once sent."""

    enums: Sequence[type[enum.Enum]] = ()
    records: Sequence[type] = ()
    kept: Sequence[type] = ()
    #: Module-level functions and classes the jobs and answers carry (a job's checks, an
    #: answer's rebuilding function): sent by number, not by name. Only immutable objects
    #: both ends import; one left out still crosses, by name.
    named: Sequence[Any] = ()


def load_crossing(name: str) -> Crossing:
    """The `Crossing` the function ``module:function`` returns."""
    module, _, function = name.partition(":")
    made: Crossing = getattr(importlib.import_module(module), function)()
    return made


_receiving = threading.local()  # the wire (and `Received`) whose message is being unpickled


def _member(number: int) -> enum.Enum:
    member: enum.Enum = _receiving.members[number]
    return member


def _reduce_member(numbers: dict[Any, int], member: Any) -> Any:
    number = numbers.get(member)
    if number is None:  # a combination of flags: as pickle makes it
        return member.__reduce_ex__(PROTOCOL)
    return _member, (number,)


def _reduce_fields(
    cls: Callable[..., Any], get: Callable[[Any], Any], single: bool, obj: Any
) -> Any:
    values = get(obj)
    return cls, ((values,) if single else values)


def _reduce_tuple(cls: type, obj: Any) -> Any:
    return cls, tuple(obj) if isinstance(obj, tuple) else ()


def _maker(cls: type, names: Sequence[str]) -> Callable[..., Any] | None:
    """A function making ``cls`` from its fields' values without its ``__init__`` — each slot
    set through its descriptor, where a frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` by name (about 40 % more per field) — for a class with slots
    whose ``__init__`` does nothing else (no ``__post_init__``); else None."""
    if hasattr(cls, "__post_init__") or "__slots__" not in vars(cls):
        return None
    slots = []
    for name in names:
        slot = next((vars(k)[name] for k in cls.__mro__ if name in vars(k)), None)
        if type(slot) is not types.MemberDescriptorType:
            return None
        slots.append(slot.__set__)
    values = [f"v{n}" for n in range(len(names))]
    body = "".join(f"    s{n}(made, v{n})\n" for n in range(len(names)))
    source = f"def make({', '.join(values)}):\n    made = new(cls)\n{body}    return made\n"
    scope: dict[str, Any] = {f"s{n}": slot for n, slot in enumerate(slots)}
    scope.update(new=object.__new__, cls=cls)
    exec(source, scope)  # generated from the field count alone: nothing of the input
    make: Callable[..., Any] = scope["make"]
    make.__qualname__ = f"make_{cls.__name__}"
    return make


class Wire:
    """Both ends' pickling of one `Crossing`."""

    def __init__(self, crossing: Crossing) -> None:
        self.crossing = crossing
        self.members: list[enum.Enum] = [m for cls in crossing.enums for m in cls]
        table: dict[type, Callable[[Any], Any]] = dict(copyreg.dispatch_table)
        makers: list[Callable[..., Any]] = []  # crossing by number (`known`), not by name
        index: dict[type, dict[Any, int]] = {}
        for number, member in enumerate(self.members):
            index.setdefault(type(member), {})[member] = number
        for kind, numbers in index.items():
            table[kind] = functools.partial(_reduce_member, numbers)
        for cls in crossing.records:
            if issubclass(cls, tuple):  # a named tuple: rebuilt from its values
                table[cls] = functools.partial(_reduce_tuple, cls)
                continue
            fields = dataclasses.fields(cls)  # type: ignore[arg-type]
            if not fields:  # nothing to carry but the class
                table[cls] = functools.partial(_reduce_tuple, cls)
            elif all(f.init for f in fields):  # by its values: pickle's default costs more
                names = [f.name for f in fields]
                get = operator.attrgetter(*names)
                make = _maker(cls, names)
                if make is not None:
                    makers.append(make)
                table[cls] = functools.partial(_reduce_fields, make or cls, get, len(fields) == 1)
        self.table = table
        #: What both ends' memo starts with, in this order: a reference to one of them is a
        #: memo get (two bytes), where a class or function by name costs an import lookup
        #: both ways (about 5 µs a load) and an enum member a Python call.
        self.known: list[Any] = [_kept, _keep, _member, *self.members, *crossing.enums]
        self.known += [*crossing.records, *crossing.kept, *crossing.named, *makers]
        self.known = list({id(obj): obj for obj in self.known}.values())  # each once
        self._seeded = _Seeded(self.known)

    def fingerprint(self) -> str:
        """What `known` numbers, by name and a record's fields in order: the child's must be
        the parent's (a child started from code changed on disk since the daemon started would
        read one object as another, or a record's values into the wrong fields)."""
        return hashlib.sha256("\n".join(map(_described, self.known)).encode()).hexdigest()

    def dumps(self, value: Any) -> bytes:
        """``value`` pickled with the table's reducers."""
        out = io.BytesIO()
        self._seeded.pickler(out, self.table).dump(value)
        return framed(out)

    def loads(self, data: bytes | bytearray) -> Any:
        _receiving.members = self.members
        return self._seeded.load(data)


def _described(obj: Any) -> str:
    name = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', obj)!r}"
    if isinstance(obj, type) and dataclasses.is_dataclass(obj):
        return name + repr([field.name for field in dataclasses.fields(obj)])
    if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
        return name + repr(list(obj._fields))
    return name


class _Seeded:
    """Picklers and unpicklers whose memo starts with ``known`` (copied in C from one made at
    the start), so that both ends number them alike."""

    def __init__(self, known: Sequence[Any]) -> None:
        template = pickle.Pickler(io.BytesIO(), PROTOCOL)
        template.memo = {id(obj): (n, obj) for n, obj in enumerate(known)}
        self._pickler_memo = template.memo
        # The unpickler's memo is set by loading a stream that puts each object at its index
        # (a dict given to ``Unpickler.memo`` is dropped on Python 3.11).
        stream = [b"\x80\x02"]
        for n in range(len(known)):
            stream.append(b"J" + n.to_bytes(4, "little") + b"Q")  # BININT n, BINPERSID
            stream.append(b"r" + n.to_bytes(4, "little") + b"0")  # LONG_BINPUT n, POP
        seed = _Known(io.BytesIO(b"".join(stream) + b"N."), known)
        seed.load()
        self._unpickler_memo = seed.memo
        self._template = (template, seed)  # what the memo proxies read from

    def pickler(self, out: io.BytesIO, table: dict[type, Callable[[Any], Any]]) -> pickle.Pickler:
        pickler = pickle.Pickler(out, PROTOCOL)
        pickler.dispatch_table = table
        pickler.memo = self._pickler_memo
        return pickler

    def load(self, data: bytes | bytearray) -> Any:
        unpickler = pickle.Unpickler(io.BytesIO(data))
        unpickler.memo = self._unpickler_memo
        return unpickler.load()


_FRAME = struct.Struct("<Q")


def framed(out: io.BytesIO) -> bytes:
    """A protocol-3 pickle in ``out`` made one frame (protocol 4's opcode, which any
    unpickler reads): the unpickler reads the frame in one call, not each opcode from the
    file it is given (half its work, on a job's 50 opcodes)."""
    view = out.getbuffer()
    try:
        return b"".join((view[:2], b"\x95", _FRAME.pack(len(view) - 2), view[2:]))
    finally:
        view.release()


class _Known(pickle.Unpickler):
    """Loads `_Seeded`'s stream: persistent id n is the n-th known object."""

    def __init__(self, file: io.BytesIO, known: Sequence[Any]) -> None:
        super().__init__(file)
        self._known = known

    def persistent_load(self, pid: Any) -> Any:
        return self._known[pid]


class Sent:
    """The child's side of the answers' pickling: the wire's reducers, and a `Crossing.kept`
    object (immutable, and the same object from a bill's approval to its completion: the
    writer keeps them) whole once, then by number while the child remembers it. The parent
    keeps more than the child remembers, so a number always names what the parent has
    (`Received`)."""

    def __init__(self, wire: Wire) -> None:
        self._seeded = wire._seeded
        self._dispatch = dict(wire.table)
        for cls in wire.crossing.kept:
            self._dispatch[cls] = self._reduce_kept
        self._sent: dict[int, tuple[int, Any]] = {}  # id → (number, the object, held)
        self._numbers = itertools.count()
        self._added: list[int] = []  # ids numbered by the message being pickled
        self._fresh: Any = None  # the object whose new number is being pickled

    def dump(self, answers: Any) -> bytes:
        out = io.BytesIO()
        pickler = self._seeded.pickler(out, self._dispatch)
        self._added, self._fresh = [], None
        try:
            pickler.dump(answers)
        except BaseException:  # what it numbered did not reach the parent
            for key in self._added:
                del self._sent[key]
            raise
        return framed(out)

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


def _kept(number: int) -> Any:
    return _receiving.kept[number]


def _keep(number: int, obj: Any) -> Any:
    kept = _receiving.kept
    kept[number] = obj
    if len(kept) > 2 * SENT_MAX:
        del kept[next(iter(kept))]
    return obj


class Received:
    """The parent's side of `Sent` (one per child: a new child numbers from 0 again)."""

    def __init__(self, wire: Wire) -> None:
        self._members = wire.members
        self._seeded = wire._seeded
        self._kept: dict[int, Any] = {}

    def load(self, data: bytes | bytearray) -> Any:
        _receiving.kept = self._kept
        _receiving.members = self._members
        return self._seeded.load(data)


def portable(error: BaseException | None) -> BaseException | None:
    """``error`` if it survives pickling both ways (errors are rare: checked each time),
    else a RuntimeError naming it: the parent must be able to read every answer."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error, PROTOCOL))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error
