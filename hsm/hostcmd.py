r"""The network HSM's host-command codec (sans-IO): payShield-style framing and the command
table. specs/hsm-protocol.md documents the layouts; `switch.hsm_net` does the IO.

Frame: 2-byte big-endian length | header (4 chars, echoed: the correlation id) | command (2)
| fields. Response: header | response code (command, second character + 1) | error code (2)
| fields; on an error other than 01 the fields are the error text (no key material).

Field encodings: S = 2-digit length + ASCII; B = 4 hex digits (byte count) + binary;
N = 10 decimal digits; T = 14 digits yyyymmddhhmmss; K = key reference
`K` S(alias) 6N(version) S(usage) S(kcv); P = card key path: K then 1 digit (factor count) and
16 hex digits per factor; R = K or P (for BU); composite O (OnlineTxn) = N type N balance
N amount N counter B rnd B terminal B MAC1; U (PurchaseRecord) = N type N amount B terminal
N serial T time. Results: K, B, S, X (ExportedKey: B S), G (SignOnKeys: B K K 1N K?), and
"?" for a verification, answered by error code 00 (True) or 01 (False).

>>> encode_request("0001", "BU", "kcv", (KeyRef("zmk/1", 1, KeyUsage.ZMK, "08D7B4"),))
b'\x00"0001BUK05zmk/100000103ZMK0608D7B40'
>>> BY_CODE["M8"].response_code
'M9'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hsm.errors import ERRORS_BY_CODE, HsmError, InvalidInputError
from hsm.interface import ExportedKey, MacAlgorithm, OnlineTxn, PurchaseRecord, SignOnKeys
from hsm.keys import CardKeyPath, KeyRef, KeyUsage

HEADER_LENGTH = 4
OK, VERIFY_FAILED = "00", "01"


@dataclass(frozen=True, slots=True)
class Command:
    code: str
    method: str
    fields: tuple[tuple[str, str], ...]  # (parameter name, kind); "*" before a name: keyword
    result: str

    @property
    def response_code(self) -> str:
        return self.code[0] + chr(ord(self.code[1]) + 1)


def _c(code: str, method: str, spec: str, result: str) -> Command:
    fields = tuple(tuple(item.split(":")) for item in spec.split()) if spec else ()
    return Command(code, method, fields, result)  # type: ignore[arg-type]


COMMANDS: tuple[Command, ...] = (
    # payShield codes where payShield has the operation
    _c("NC", "diagnostics", "", "S"),
    _c("A0", "generate_key", "alias:S usage:S *now:T", "K"),
    _c("A6", "import_key", "alias:S usage:S kek:K encrypted:B kcv:S *now:T", "K"),
    _c("A8", "export_key", "key:K kek:K", "X"),
    _c("BU", "kcv", "key:R", "S"),
    _c("M6", "generate_mac", "key:K algorithm:S data:B", "B"),
    _c("M8", "verify_mac", "key:K algorithm:S data:B mac:B", "?"),
    _c("CA", "translate_pin", "source:K destination:K pin_block:B pan:S", "B"),
    _c("CC", "translate_pin", "source:K destination:K pin_block:B pan:S", "B"),
    _c("M0", "encrypt_data", "key:K data:B", "B"),
    _c("M2", "decrypt_data", "key:K data:B", "B"),
    # vendor commands: personal data at rest
    _c("X0", "encrypt_personal", "key:K context:B data:B", "B"),
    _c("X2", "decrypt_personal", "key:K context:B sealed:B", "B"),
    _c("X4", "index_personal", "key:K data:B", "B"),
    # vendor commands: terminals, card PINs and PBOC ED/EP
    _c("V0", "sign_on", "tmk:K layout:N alias_prefix:S *now:T", "G"),
    _c("V2", "accept_sign_on", "tmk:K field62:B alias_prefix:S *now:T", "G"),
    _c("V4", "verify_mac1", "key:P txn:O", "?"),
    _c("V6", "generate_mac2", "key:P txn:O host_time:T", "B"),
    _c("V8", "verify_mac3", "key:P txn:O new_balance_fen:N host_time:T mac3:B", "?"),
    _c("W0", "verify_load_tac", "key:P txn:O new_balance_fen:N host_time:T tac:B", "?"),
    _c("W2", "generate_purchase_mac1", "key:P record:U rnd:B offline_ctr:N", "B"),
    _c("W4", "verify_purchase_mac2", "key:P record:U rnd:B offline_ctr:N mac2:B", "?"),
    _c("W6", "verify_purchase_tac", "key:P record:U tac:B", "?"),
    _c("W8", "script_mac", "key:P challenge:B command:B sequence:N", "B"),
    _c("Y0", "write_card_key", "control:P key:P challenge:B header:B attributes:B", "B"),
    _c("Y2", "write_psam_key", "transport:P key:K challenge:B header:B attributes:B", "B"),
    _c("Y4", "card_data_check_code", "key:P data:B", "B"),
    _c("Y6", "verify_card_data_check_code", "key:P data:B code:B", "?"),
    _c("Y8", "pin_reload_mac", "reload_key:P pin_key:K pin_block:B pan:S", "B"),
    _c("Z0", "pin_unblock_command",
       "unblock_key:P pin_key:K pin_block:B pan:S challenge:B key_index:N", "B"),
    _c("Z2", "sign", "key:K message:B", "B"),
    _c("Z4", "public_key", "key:K", "B"),
)
BY_CODE = {c.code: c for c in COMMANDS}
BY_METHOD = {c.method: c for c in COMMANDS if c.code != "CC"}


class Reader:
    """Consumes fields from a message body; a short or malformed body is InvalidInputError."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, length: int) -> bytes:
        end = self._pos + length
        if end > len(self._data):
            raise InvalidInputError("message shorter than its fields")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def text(self, length: int) -> str:
        try:
            return self.take(length).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidInputError("non-ASCII text field") from None

    def number(self, length: int) -> int:
        digits = self.text(length)
        if not digits.isdigit():
            raise InvalidInputError("non-numeric numeric field")
        return int(digits)

    def rest(self) -> bytes:
        return self.take(len(self._data) - self._pos)

    def done(self) -> None:
        if self._pos != len(self._data):
            raise InvalidInputError("trailing bytes after the last field")


def _s(value: str) -> bytes:
    raw = value.encode("ascii")
    if len(raw) > 99:
        raise InvalidInputError("text field longer than 99")
    return b"%02d" % len(raw) + raw


def _b(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise InvalidInputError("data field longer than 65535 bytes")
    return b"%04X" % len(value) + value


def _n(value: int) -> bytes:
    if not 0 <= value < 10**10:
        raise InvalidInputError("numeric field out of range")
    return b"%010d" % value


def _t(value: datetime) -> bytes:
    return value.strftime("%Y%m%d%H%M%S").encode()


def _k(ref: KeyRef) -> bytes:
    return b"K" + _s(ref.alias) + b"%06d" % ref.version + _s(ref.usage.value) + _s(ref.kcv)


def _p(path: CardKeyPath) -> bytes:
    return _k(path.master) + b"%d" % len(path.factors) + b"".join(
        f.hex().upper().encode() for f in path.factors
    )


def _online(t: OnlineTxn) -> bytes:
    return (_n(t.txn_type) + _n(t.old_balance_fen) + _n(t.amount_fen) + _n(t.online_ctr)
            + _b(t.rnd) + _b(t.terminal_id) + _b(t.mac1))


def _purchase(r: PurchaseRecord) -> bytes:
    return _n(r.txn_type) + _n(r.amount_fen) + _b(r.terminal_id) + _n(r.term_serial) + _t(r.when)


def _r_s(r: Reader) -> str:
    return r.text(r.number(2))


def _r_b(r: Reader) -> bytes:
    try:
        length = int(r.text(4), 16)
    except ValueError:
        raise InvalidInputError("bad data length") from None
    return r.take(length)


def _r_t(r: Reader) -> datetime:
    try:
        return datetime.strptime(r.text(14), "%Y%m%d%H%M%S")
    except ValueError:
        raise InvalidInputError("bad date-time field") from None


def _r_k(r: Reader) -> KeyRef:
    if r.take(1) != b"K":
        raise InvalidInputError("expected a key reference")
    alias, version, usage = _r_s(r), r.number(6), _r_s(r)
    try:
        return KeyRef(alias, version, KeyUsage(usage), _r_s(r))
    except ValueError:
        raise InvalidInputError("unknown key usage") from None


def _r_p(r: Reader) -> CardKeyPath:
    master = _r_k(r)
    count = r.number(1)
    try:
        factors = tuple(bytes.fromhex(r.text(16)) for _ in range(count))
    except ValueError:
        raise InvalidInputError("bad diversification factor") from None
    return CardKeyPath(master, factors)


def _r_r(r: Reader) -> KeyRef | CardKeyPath:
    path = _r_p(r)
    return path if path.factors else path.master


def _r_online(r: Reader) -> OnlineTxn:
    return OnlineTxn(r.number(10), r.number(10), r.number(10), r.number(10),
                     _r_b(r), _r_b(r), _r_b(r))


def _r_purchase(r: Reader) -> PurchaseRecord:
    return PurchaseRecord(r.number(10), r.number(10), _r_b(r), r.number(10), _r_t(r))


def _r_g(r: Reader) -> SignOnKeys:
    field62, pik, mak = _r_b(r), _r_k(r), _r_k(r)
    tdk = _r_k(r) if r.number(1) else None
    return SignOnKeys(field62, pik, mak, tdk)


def _g(value: SignOnKeys) -> bytes:
    tail = b"1" + _k(value.tdk) if value.tdk is not None else b"0"
    return _b(value.field62) + _k(value.pik) + _k(value.mak) + tail


def _x(value: ExportedKey) -> bytes:
    return _b(value.encrypted) + _s(value.kcv)


def _r_x(r: Reader) -> ExportedKey:
    return ExportedKey(_r_b(r), _r_s(r))


def _encode_r(value: KeyRef | CardKeyPath) -> bytes:
    return _p(value if isinstance(value, CardKeyPath) else CardKeyPath(value))


ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "S": lambda v: _s(str(v.value if isinstance(v, KeyUsage | MacAlgorithm) else v)),
    "B": _b, "N": _n, "T": _t, "K": _k, "P": _p, "R": _encode_r, "O": _online,
    "U": _purchase, "G": _g, "X": _x,
}
DECODERS: dict[str, Callable[[Reader], Any]] = {
    "S": _r_s, "B": _r_b, "N": lambda r: r.number(10), "T": _r_t, "K": _r_k, "P": _r_p,
    "R": _r_r, "O": _r_online, "U": _r_purchase, "G": _r_g, "X": _r_x,
}
# Parameters passed as enums to the HSM
ENUM_PARAMETERS: dict[str, Callable[[str], Any]] = {
    "usage": KeyUsage, "algorithm": MacAlgorithm,
}


class FrameSplitter:
    r"""Bytes in, complete message bodies out, whatever way the stream was cut.

    >>> splitter = FrameSplitter()
    >>> splitter.feed(b"\x00\x060001NC\x00")
    [b'0001NC']
    >>> splitter.feed(b"\x020")
    []
    >>> splitter.feed(b"1")
    [b'01']
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        bodies = []
        start = 0
        buffer = self._buffer
        while len(buffer) - start >= 2:
            end = start + 2 + int.from_bytes(buffer[start : start + 2], "big")
            if end > len(buffer):
                break
            bodies.append(bytes(buffer[start + 2 : end]))
            start = end
        if start:
            del buffer[:start]
        return bodies


def frame(body: bytes) -> bytes:
    if len(body) > 0xFFFF:
        raise InvalidInputError("message longer than 65535 bytes")
    return len(body).to_bytes(2, "big") + body


def encode_request(header: str, code: str, method: str, args: Sequence[Any]) -> bytes:
    command = BY_CODE[code]
    if command.method != method or len(args) != len(command.fields):
        raise InvalidInputError(f"{code} does not take these arguments")
    parts = [header.encode(), code.encode()]
    parts += [ENCODERS[kind](value) for (_, kind), value in zip(command.fields, args, strict=True)]
    return frame(b"".join(parts))


def decode_request(body: bytes) -> tuple[str, Command, list[Any], dict[str, Any]]:
    """(header, command, positional args, keyword args) of a request body (no length)."""
    reader = Reader(body)
    header = reader.text(HEADER_LENGTH)
    code = reader.text(2)
    command = BY_CODE.get(code)
    if command is None:
        raise UnknownCommandError(header, code)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, kind in command.fields:
        value = DECODERS[kind](reader)
        bare = name.lstrip("*")
        if bare in ENUM_PARAMETERS:
            try:
                value = ENUM_PARAMETERS[bare](value)
            except ValueError:
                raise InvalidInputError(f"unknown {bare}") from None
        if name.startswith("*"):
            kwargs[bare] = value
        else:
            args.append(value)
    reader.done()
    return header, command, args, kwargs


class UnknownCommandError(InvalidInputError):
    code = "68"

    def __init__(self, header: str, command: str) -> None:
        super().__init__(f"command {command!r} is not supported")
        self.header = header


def encode_response(header: str, command: Command, result: Any) -> bytes:
    if command.result == "?":
        error = OK if result else VERIFY_FAILED
        return frame(f"{header}{command.response_code}{error}".encode())
    body = ENCODERS[command.result](result)
    return frame(f"{header}{command.response_code}{OK}".encode() + body)


def encode_error(header: str, code: str, error: HsmError) -> bytes:
    response = code[0] + chr(ord(code[1]) + 1) if len(code) == 2 else "ZZ"
    text = str(error).encode("ascii", "replace")[:200]
    return frame(f"{header}{response}{error.code}".encode() + text)


def decode_response(body: bytes, command: Command) -> Any:
    """The result value; raises the HsmError the error code names."""
    reader = Reader(body)
    reader.take(HEADER_LENGTH)
    if reader.text(2) != command.response_code:
        raise InvalidInputError("response code does not match the command")
    error = reader.text(2)
    if command.result == "?" and error in (OK, VERIFY_FAILED):
        reader.done()
        return error == OK
    if error != OK:
        text = reader.rest().decode("ascii", "replace")
        raise ERRORS_BY_CODE.get(error, HsmError)(text or f"HSM error {error}")
    value = DECODERS[command.result](reader)
    reader.done()
    return value
