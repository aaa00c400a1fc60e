"""The frame trace (setting ``trace_file``): every terminal and bank frame in and out, one JSON
line each, masked before it is written, for an operator to read back with
``medswitch messages decode --trace FILE``.

Masked means: the card number (F2) and bank account (F102) are taken out of the frame and
written beside it masked (first 6 and last 4 digits, ``masked``: zeros in the frame could be
the number itself); PIN blocks, track and chip data (the interfaces' sensitive fields), MACs
(F64, F128) and a network-management message's keys (terminal F62, bank F48) are zeros of the
same length — so the line is still a frame that decodes, and holds no card secret
and no key. A frame that does not decode is not written, only its size (it cannot be masked).

The trace is a logger (``medswitch.trace``) of its own, off unless :func:`open_trace` gives it
a file; :func:`frame` costs one level check when it is off. The frame travels to the file's
formatter (:class:`TraceFormatter`, which holds the codecs) as the record's message, masked
there: no other handler sees it (the logger does not propagate), and as text it is only
"frame terminal in". The outbound bank links' frames are traced as ``bank`` frames too (peer
"HOST:PORT outbound"); a bank frame, either way, is read in its link's dialect and written in
the bank interface's own encoding (ASCII, length ``ascii4``), so decode reads it whatever the
dialect. Tracing writes
each frame as it
passes: for finding a fault, not for a day at full load.

"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from messages.codec import Codec, Message
from messages.errors import CodecError
from messages.framing import LengthFormat, encode_frame
from messages.message import FieldValue
from messages.pretty import mask_pan

log = logging.getLogger("medswitch.trace")

_PAN_FIELDS = frozenset({2, 102})
_MACS = frozenset({64, 128})
_KEYS_IN_NETWORK_MANAGEMENT = frozenset({48, 62})


class TracedFrame(NamedTuple):
    """One line of a trace file."""

    ts: str
    interface: str  # "terminal" | "bank"
    direction: str  # "in" | "out"
    peer: str
    frame_hex: str  # length prefix included; "" when the frame did not decode
    masked: dict[str, str]  # field number -> the masked card number or account taken out


class Masked(NamedTuple):
    frame_hex: str  # the frame without its secrets, length prefix included
    masked: dict[str, str]  # field number -> masked value of the fields taken out


class Passing(NamedTuple):
    """A frame handed to the trace logger (the record's message): masked only by the trace's
    own formatter; as text it says nothing of its content."""

    interface: str
    direction: str
    peer: str
    payload: bytes
    wire: Codec | None = None  # the codec the payload is in, if not the interface's own

    def __str__(self) -> str:
        return f"frame {self.interface} {self.direction}"


class TraceFormatter(logging.Formatter):
    """A frame record as its trace line: masked with the interfaces' codecs it holds."""

    def __init__(self) -> None:
        from messages.spec_bank import BANK
        from messages.spec_terminal import TERMINAL
        from switch.logs import JsonFormatter

        super().__init__()
        self._json = JsonFormatter()
        self._codecs = {
            "terminal": (Codec(TERMINAL), LengthFormat.BINARY2),
            "bank": (Codec(BANK), LengthFormat.ASCII4),
        }

    def format(self, record: logging.LogRecord) -> str:
        passing = record.msg
        if not isinstance(passing, Passing) or passing.interface not in self._codecs:
            return self._json.line(record.created, "debug", record.name, "not a frame", {})
        codec, length_format = self._codecs[passing.interface]
        found = masked(passing.wire or codec, length_format, passing.payload, codec)
        fields: dict[str, object] = {
            "interface": passing.interface,
            "direction": passing.direction,
            "peer": passing.peer,
        }
        if found is None:
            fields["undecodable_bytes"] = len(passing.payload)
        else:
            fields["frame"], fields["masked"] = found
        return self._json.line(record.created, "debug", record.name, "frame", fields)


def open_trace(path: Path) -> None:
    """Append every frame, masked, to ``path`` from now on (the daemon's umask: private)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(TraceFormatter())
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False  # not in the daemon's log


def frame(
    interface: str, direction: str, peer: str, payload: bytes, wire: Codec | None = None
) -> None:
    """Trace one frame's payload (without its length prefix), if tracing is on; ``wire``: the
    codec of the link's dialect, when it is not the interface's (an outbound bank link)."""
    if payload and log.isEnabledFor(logging.DEBUG):
        log.debug(Passing(interface, direction, peer, payload, wire))


def masked(
    codec: Codec, length_format: LengthFormat, payload: bytes, written: Codec | None = None
) -> Masked | None:
    """The frame without its secrets, encoded by ``written`` (default ``codec``: a frame
    read in a bank dialect is written as the interface's own, which decode reads); ``None``
    if it does not decode."""
    try:
        message = codec.decode(payload)
        kept = {
            n: _wiped(n, v, message.mti, codec)
            for n, v in message.fields.items()
            if n not in _PAN_FIELDS
        }
        taken = {
            str(n): mask_pan(v if isinstance(v, str) else v.hex())
            for n, v in message.fields.items()
            if n in _PAN_FIELDS
        }
        stripped = Message(message.mti, kept, message.tpdu, message.header)
        encoded = (written or codec).encode(stripped)
        return Masked(encode_frame(encoded, length_format).hex().upper(), taken)
    except CodecError:
        return None


def _wiped(number: int, value: FieldValue, mti: str, codec: Codec) -> FieldValue:
    spec = codec.interface.fields.get(number)
    secret = (
        (spec is not None and spec.sensitive)
        or number in _MACS
        or (mti.startswith("08") and number in _KEYS_IN_NETWORK_MANAGEMENT)
    )
    if not secret:
        return value
    return bytes(len(value)) if isinstance(value, bytes) else "0" * len(value)


def read(lines: Iterable[str]) -> Iterator[TracedFrame]:
    """The frames of a trace file's lines (other lines, and blank ones, are skipped)."""
    for text in lines:
        try:
            entry = json.loads(text)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("msg") != "frame":
            continue
        yield TracedFrame(
            str(entry.get("ts", "")),
            str(entry.get("interface", "")),
            str(entry.get("direction", "")),
            str(entry.get("peer", "")),
            str(entry.get("frame", "")),
            {str(k): str(v) for k, v in dict(entry.get("masked") or {}).items()},
        )
