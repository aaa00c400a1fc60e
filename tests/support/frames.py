"""The published terminal frame (reference §2.6, V8) and the terminal codec the message tests
share."""

from __future__ import annotations

from messages.codec import Codec
from messages.framing import FrameDecoder, LengthFormat
from messages.spec_terminal import TERMINAL

# Reference §2.6, the whole 129-byte frame as published (length prefix included).
V8_FRAME = bytes.fromhex(
    "007F600003000060321032007202003020048000C08015000000000000001234000002030099303030303030"
    "303139353237313831383232313738373531353600192600000100060000000000435F011232383434313233"
    "34353637383930313233345F03063136303033365F04063230303832365C0230314233413039324145"
)

TERMINAL_CODEC = Codec(TERMINAL)


def v8_payload() -> bytes:
    (payload,) = FrameDecoder(LengthFormat.BINARY2).feed(V8_FRAME)
    return payload
