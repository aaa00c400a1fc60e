"""Field specifications as data, compiled once into pyiso8583 spec dicts.

An interface (terminal CUP-POS, bank host) is a frozen table of :class:`FieldSpec`. The table is
the single source for the codec, the pretty printer, the generated documentation in ``specs/``
and the hypothesis strategies in the tests.

>>> f4 = FieldSpec(4, "amount, transaction", Kind.N, 12)
>>> compile_field(f4, Encoding.BCD)["len_count"]
'nibbles'
>>> compile_field(f4, Encoding.ASCII)["data_enc"]
'ascii'
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Kind(enum.Enum):
    """ISO 8583 data types."""

    N = "n"  # numeric digits
    Z = "z"  # track data: digits and separators (BCD nibbles 0-9, D) on the terminal interface
    AN = "an"
    ANS = "ans"
    B = "b"  # binary, length in bytes

    @property
    def is_digits(self) -> bool:
        return self in (Kind.N, Kind.Z)


class Var(enum.IntEnum):
    """Length type: fixed, or the number of length digits (LL = 2, LLL = 3)."""

    FIXED = 0
    LL = 2
    LLL = 3


class Align(enum.Enum):
    """Where a BCD field of odd digit count puts its pad nibble's complement."""

    RIGHT = "right"  # leading 0 nibble: amounts, counters
    LEFT = "left"  # trailing 0 nibble: 22, and every LL/LLL numeric


class Encoding(enum.Enum):
    """How numerics and lengths travel: packed BCD (CUP-POS) or ASCII (ISO 8583:1987 hosts)."""

    BCD = "bcd"
    ASCII = "ascii"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    number: int
    name: str
    kind: Kind
    length: int  # fixed length, or the maximum; digits for n/z, bytes otherwise
    var: Var = Var.FIXED
    align: Align | None = None  # None: RIGHT for fixed numerics, LEFT for variable ones
    sensitive: bool = False  # wiped in pretty printing and logs (35, 36, 52, 55)

    @property
    def bcd_align(self) -> Align:
        if self.align is not None:
            return self.align
        return Align.RIGHT if self.var is Var.FIXED else Align.LEFT

    @property
    def format(self) -> str:
        """ISO notation, e.g. ``n12``, ``ans..999``, ``b64``."""
        size = self.length * 8 if self.kind is Kind.B and self.var is Var.FIXED else self.length
        dots = "." * int(self.var)
        return f"{self.kind.value}{dots}{size}"


def compile_field(spec: FieldSpec, encoding: Encoding) -> dict[str, Any]:
    """One pyiso8583 field spec for ``spec`` under ``encoding``."""
    compiled: dict[str, Any] = {"desc": spec.name, "max_len": spec.length}
    bcd = encoding is Encoding.BCD
    if bcd:
        compiled["len_enc"] = "bcd"
        compiled["len_type"] = (int(spec.var) + 1) // 2  # LL → 1 byte, LLL → 2 bytes
    else:
        compiled["len_enc"] = "ascii"
        compiled["len_type"] = int(spec.var)
    if spec.kind is Kind.B:
        compiled["data_enc"] = "b"
    elif spec.kind.is_digits and bcd:
        compiled["data_enc"] = "b"
        compiled["len_count"] = "nibbles"
        pad = "left_pad" if spec.bcd_align is Align.RIGHT else "right_pad"
        compiled[pad] = "0"
    else:
        compiled["data_enc"] = "ascii"
    return compiled


@dataclass(frozen=True, slots=True)
class InterfaceSpec:
    """A wire interface: its fields, encodings, message prefix and MAC field."""

    name: str
    fields: Mapping[int, FieldSpec]
    encoding: Encoding
    prefix_bytes: int  # bytes before the MTI (TPDU + header on the terminal interface)
    secondary_bitmap: bool
    mac_field: int
    envelope: tuple[int, ...] = ()  # fields a format-error reply may echo (never card data)
    bitmap_hex: bool = False  # bitmaps as 16 hex characters (jPOS ISO87A), not 8 bytes
    hex_fields: frozenset[int] = frozenset()  # binary fields sent as hex text, 2 chars a byte

    def compile(self, prefix: bool = True) -> dict[str, Any]:
        """The pyiso8583 spec dict. Build it once per codec, never per message.

        ``prefix=False`` leaves the bytes before the MTI out of it, for a caller that reads and
        writes them itself (the codec: they are plain bytes, one pyiso8583 field less)."""
        bcd = self.encoding is Encoding.BCD
        spec: dict[str, Any] = {
            "h": {
                "data_enc": "b",
                "len_enc": "b",
                "len_type": 0,
                "max_len": self.prefix_bytes if prefix else 0,
                "desc": "TPDU and header",
            },
            "t": {
                "data_enc": "b" if bcd else "ascii",
                "len_enc": "b",
                "len_type": 0,
                "max_len": 2 if bcd else 4,
                "desc": "Message type",
            },
            "p": {"data_enc": "b", "len_enc": "b", "len_type": 0, "max_len": 8, "desc": "Bitmap"},
            "1": {
                "data_enc": "b",
                "len_enc": "b",
                "len_type": 0,
                "max_len": 8,
                "desc": "Secondary bitmap",
            },
        }
        if self.bitmap_hex:
            for bitmap in ("p", "1"):
                spec[bitmap].update(data_enc="ascii", max_len=16)
        for number, field in self.fields.items():
            compiled = compile_field(field, self.encoding)
            if number in self.hex_fields and field.kind is Kind.B:
                compiled.update(data_enc="ascii", max_len=field.length * 2)
            spec[str(number)] = compiled
        return spec
