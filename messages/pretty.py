"""Human-readable dumps of messages, safe for logs: PANs masked, secrets wiped.

>>> from messages.codec import Message
>>> from messages.spec_terminal import TERMINAL
>>> print(pretty(Message("0200", {2: "6225880123456789", 52: bytes(8)}), TERMINAL))
MTI  0200
F002 primary account number (card number): 622588******6789
F052 PIN data (ISO 9564 format 0 under PIK): [wiped, 8 bytes]
"""

from __future__ import annotations

from messages.codec import Message
from messages.fieldspec import InterfaceSpec

PAN_FIELDS = frozenset({2})
ACCOUNT_FIELDS = frozenset({102})  # bank account numbers: masked like PANs


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits; everything between starred.

    >>> mask_pan("6225880123456789")
    '622588******6789'
    >>> mask_pan("12345")
    '*****'
    """
    if len(pan) < 11:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def pretty(message: Message, interface: InterfaceSpec) -> str:
    lines = [f"MTI  {message.mti}"]
    if message.tpdu or message.header:
        lines.append(f"TPDU {message.tpdu.hex().upper()}  header {message.header.hex().upper()}")
    for number in sorted(message.fields):
        spec = interface.fields.get(number)
        name = spec.name if spec else "undefined"
        value = message.fields[number]
        if spec is not None and spec.sensitive:
            shown = f"[wiped, {len(value)} {'bytes' if isinstance(value, bytes) else 'chars'}]"
        elif number in PAN_FIELDS or number in ACCOUNT_FIELDS:
            shown = mask_pan(value if isinstance(value, str) else value.hex())
        elif isinstance(value, bytes):
            shown = value.hex().upper()
        else:
            shown = value
        lines.append(f"F{number:03d} {name}: {shown}")
    return "\n".join(lines)
