"""A bank link's dialect: how one bank host speaks ISO 8583:1987 (specs/bank-interface.md,
"Dialects"). Each `[bank]` and `[[bank.links]]` names a preset (``dialect``) and may override
any of its settings; everything wire-level of that bank's links — both directions — follows it:

- ``length_header``: ``ascii4`` (4 ASCII digits), ``binary2`` (2 bytes, big-endian), ``none``
  (a message ends where its fields end);
- ``bitmap``: ``binary`` (8 bytes each) or ``hex`` (16 hex characters each);
- ``binary_fields``: F52, F64 and F128 ``raw`` (8 bytes) or ``hex`` (16 hex characters);
- ``numerics``: ``ascii`` digits and length prefixes, or ``bcd`` (packed; the MTI in 2 bytes);
- ``request_mac``, ``response_mac``, ``network_mac``: the MAC policy of financial requests,
  their responses and network management (0800/0810): ``required``, ``optional`` (verified
  when present), ``none`` (neither sent nor checked). Under ``optional`` a sign-off or key
  change request (0800 F70 002, 101) must still be MACed (its 0810 need not);
- ``mac_field``: ``128`` (always F128, so a secondary bitmap) or ``64`` (F64 when the message
  has no field above 64, else F128, as ISO 8583:1987 has it);
- ``mac_padding``: ISO 9797-1 padding ``method1`` (zeros) or ``method2`` (80 then zeros);
- ``field7``: F7 of the messages the centre originates in ``gmt`` (the standard's) or ``local``;
- ``repeat``: a repeated reversal (0421) ``keep``s its first attempt's F11 and F7 or takes
  ``new`` ones (the store-and-forward sender reads :attr:`Dialect.repeat`);
- ``omit_fields``: optional fields of the savings debit the bank does not want (of F12, F13,
  F22, F25, F37, F49; all are carried by default).

>>> jpos = PRESETS["jpos-iso87a"]
>>> jpos.bitmap, jpos.binary_fields, jpos.length_header.value
('hex', 'hex', 'ascii4')
>>> dialect_of(Settings(dialect="medswitch", response_mac="none")).response_mac
<MacPolicy.NONE: 'none'>
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from messages.codec import Codec
from messages.fieldspec import Encoding, InterfaceSpec
from messages.framing import FrameDecoder, LengthFormat
from messages.spec_bank import BANK

__all__ = [
    "OPTIONAL_FIELDS",
    "PRESETS",
    "Dialect",
    "DialectSettings",
    "MacPolicy",
    "Settings",
    "dialect_of",
]

#: Optional fields the savings debit carries unless a dialect omits them.
OPTIONAL_FIELDS = frozenset({12, 13, 22, 25, 37, 49})
#: Network management codes that change the link's state: MACed unless the policy is none.
GUARDED_NETWORK_CODES = frozenset({"002", "101"})
_HEX_FIELDS = frozenset({52, 64, 128})
MAC_FIELDS = (64, 128)


class MacPolicy(enum.Enum):
    REQUIRED = "required"
    OPTIONAL = "optional"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    length_header: LengthFormat = LengthFormat.ASCII4
    bitmap: str = "binary"
    binary_fields: str = "raw"
    numerics: str = "ascii"
    request_mac: MacPolicy = MacPolicy.REQUIRED
    response_mac: MacPolicy = MacPolicy.REQUIRED
    network_mac: MacPolicy = MacPolicy.OPTIONAL
    mac_field: str = "128"
    mac_padding: str = "method1"
    field7: str = "gmt"
    repeat: str = "keep"
    omit_fields: frozenset[int] = frozenset()

    def interface(self) -> InterfaceSpec:
        """The bank interface's field table as this dialect puts it on the wire."""
        return dataclasses.replace(
            BANK,
            encoding=Encoding.BCD if self.numerics == "bcd" else Encoding.ASCII,
            bitmap_hex=self.bitmap == "hex",
            hex_fields=_HEX_FIELDS if self.binary_fields == "hex" else frozenset(),
        )

    def codec(self) -> Codec:
        return Codec(self.interface())

    def frame_decoder(self, codec: Codec, frame_bytes_max: int) -> FrameDecoder:
        measure = codec.frame_length if self.length_header is LengthFormat.NONE else None
        return FrameDecoder(self.length_header, frame_bytes_max, measure)

    def mac_data(self, block: bytes) -> bytes:
        """What the X9.19 MAC is computed over: the MAC block padded as the dialect says (the
        HSM pads method 1 itself; method 2 is padded here, leaving it nothing to add)."""
        if self.mac_padding == "method2":
            padded = block + b"\x80"
            return padded + bytes(-len(padded) % 8)
        return block

    def transmitted(self, now: datetime) -> str:
        """F7 (MMDDhhmmss) of a message the centre originates at ``now``."""
        if self.field7 == "gmt":
            now = now.astimezone(UTC)
        return now.strftime("%m%d%H%M%S")

    def policy(self, mti: str, network_code: str | None = None) -> MacPolicy:
        """The MAC policy of a message: network management (a sign-off or key change
        request required unless the policy is none), a response, or a financial request."""
        if mti.startswith("08"):
            policy = self.network_mac
            guarded = network_code in GUARDED_NETWORK_CODES and mti == "0800"
            if policy is MacPolicy.OPTIONAL and guarded:
                return MacPolicy.REQUIRED
            return policy
        return self.response_mac if int(mti[2]) % 2 == 1 else self.request_mac

    def signs(self, mti: str, network_code: str | None = None) -> bool:
        """Whether the centre MACs a message it originates: whenever the peer may check it;
        network management only where the policy requires it."""
        policy = self.policy(mti, network_code)
        if mti.startswith("08"):
            return policy is MacPolicy.REQUIRED
        return policy is not MacPolicy.NONE

    def mac_field_of(self, numbers: Iterable[int]) -> int:
        """Where a message with these fields carries its MAC."""
        if self.mac_field == "64" and all(n <= 64 for n in numbers if n not in MAC_FIELDS):
            return 64
        return 128

    def debit_fields(self, stan: str, transmitted: str, local: datetime) -> dict[int, str]:
        """The savings debit's optional fields this dialect carries: F12/F13 the centre's
        local time and date, F22 051 (chip read, PIN entered), F25 00, F37 F7's MMDDhh and
        F11, F49 156 (CNY)."""
        fields = {
            12: local.strftime("%H%M%S"),
            13: local.strftime("%m%d"),
            22: "051",
            25: "00",
            37: transmitted[:6] + stan,
            49: "156",
        }
        return {n: v for n, v in fields.items() if n not in self.omit_fields}


PRESETS: dict[str, Dialect] = {
    preset.name: preset
    for preset in (
        Dialect("medswitch"),
        Dialect("jpos-iso87a", bitmap="hex", binary_fields="hex"),
        Dialect("binary-header", length_header=LengthFormat.BINARY2),
    )
}


class DialectSettings(Protocol):
    """What a `[bank]` or `[[bank.links]]` section says of its dialect ("" = the preset's)."""

    @property
    def dialect(self) -> str: ...
    @property
    def length_header(self) -> str: ...
    @property
    def bitmap(self) -> str: ...
    @property
    def binary_fields(self) -> str: ...
    @property
    def numerics(self) -> str: ...
    @property
    def request_mac(self) -> str: ...
    @property
    def response_mac(self) -> str: ...
    @property
    def network_mac(self) -> str: ...
    @property
    def mac_field(self) -> str: ...
    @property
    def mac_padding(self) -> str: ...
    @property
    def field7(self) -> str: ...
    @property
    def repeat(self) -> str: ...
    @property
    def omit_fields(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Settings:
    """Dialect settings on their own (tests, simulators); every field as in the config."""

    dialect: str = "medswitch"
    length_header: str = ""
    bitmap: str = ""
    binary_fields: str = ""
    numerics: str = ""
    request_mac: str = ""
    response_mac: str = ""
    network_mac: str = ""
    mac_field: str = ""
    mac_padding: str = ""
    field7: str = ""
    repeat: str = ""
    omit_fields: tuple[str, ...] = ()


#: Each dialect setting's values (also the configuration's rule table's, `switch.config_rules`).
CHOICES: dict[str, tuple[str, ...]] = {
    "length_header": tuple(f.value for f in LengthFormat),
    "bitmap": ("binary", "hex"),
    "binary_fields": ("raw", "hex"),
    "numerics": ("ascii", "bcd"),
    "request_mac": tuple(p.value for p in MacPolicy),
    "response_mac": tuple(p.value for p in MacPolicy),
    "network_mac": tuple(p.value for p in MacPolicy),
    "mac_field": ("128", "64"),
    "mac_padding": ("method1", "method2"),
    "field7": ("gmt", "local"),
    "repeat": ("keep", "new"),
}


def dialect_of(settings: DialectSettings, where: str = "bank") -> Dialect:
    """The dialect a section configures: its preset with the settings it gives; ValueError
    naming the setting and its choices otherwise."""
    preset = PRESETS.get(settings.dialect)
    if preset is None:
        raise ValueError(f"{where}.dialect must be one of {', '.join(PRESETS)}")
    values: dict[str, object] = {}
    for name, choices in CHOICES.items():
        given = getattr(settings, name)
        if not given:
            continue
        if given not in choices:
            raise ValueError(f"{where}.{name} must be one of {', '.join(choices)}")
        if name == "length_header":
            values[name] = LengthFormat(given)
        elif name.endswith("_mac"):
            values[name] = MacPolicy(given)
        else:
            values[name] = given
    omitted = set()
    for item in settings.omit_fields:
        number = item.upper().removeprefix("F")
        if not number.isdigit() or int(number) not in OPTIONAL_FIELDS:
            fields = ", ".join(str(f) for f in sorted(OPTIONAL_FIELDS))
            raise ValueError(f"{where}.omit_fields: each one of {fields}")
        omitted.add(int(number))
    if omitted:
        values["omit_fields"] = frozenset(omitted)
    return dataclasses.replace(preset, **values)  # type: ignore[arg-type]
