"""The terminal interface (CUP-POS ISO 8583, 64-field bitmap, packed BCD numerics).

Frame: 2-byte binary length | TPDU (5) | header (6) | MTI (BCD) | bitmap | fields.
Field encodings follow reference §2.2; the private fields 58, 62 and 63 carry medswitch's
medical-insurance data (layouts in :mod:`messages.private` and ``specs/terminal-interface.md``).
"""

from __future__ import annotations

from types import MappingProxyType

from messages.fieldspec import Align, Encoding, FieldSpec, InterfaceSpec, Kind, Var

_FIELDS = (
    FieldSpec(2, "primary account number (card number)", Kind.N, 19, Var.LL),
    FieldSpec(3, "processing code", Kind.N, 6),
    FieldSpec(4, "amount, transaction (fen)", Kind.N, 12),
    FieldSpec(11, "system trace audit number (POS serial)", Kind.N, 6),
    FieldSpec(12, "time, local transaction hhmmss (host fills)", Kind.N, 6),
    FieldSpec(13, "date, local transaction MMDD (host fills)", Kind.N, 4),
    FieldSpec(14, "date, expiration YYMM", Kind.N, 4),
    FieldSpec(15, "date, settlement MMDD", Kind.N, 4),
    FieldSpec(22, "point of service entry mode", Kind.N, 3, align=Align.LEFT),
    FieldSpec(23, "card sequence number", Kind.N, 3),
    FieldSpec(25, "point of service condition code", Kind.N, 2),
    FieldSpec(26, "point of service PIN capture code", Kind.N, 2),
    FieldSpec(32, "acquiring institution identification code", Kind.N, 11, Var.LL),
    FieldSpec(35, "track 2 data", Kind.Z, 37, Var.LL, sensitive=True),
    FieldSpec(36, "track 3 data", Kind.Z, 104, Var.LLL, sensitive=True),
    FieldSpec(37, "retrieval reference number", Kind.AN, 12),
    FieldSpec(38, "authorisation identification response", Kind.AN, 6),
    FieldSpec(39, "response code", Kind.AN, 2),
    FieldSpec(41, "card acceptor terminal identification", Kind.ANS, 8),
    FieldSpec(42, "card acceptor identification code (institution)", Kind.ANS, 15),
    FieldSpec(44, "additional response data", Kind.AN, 25, Var.LL),
    FieldSpec(48, "additional data, private (totals, counts, versions)", Kind.N, 322, Var.LLL),
    FieldSpec(49, "currency code, transaction", Kind.AN, 3),
    FieldSpec(52, "PIN data (ISO 9564 format 0 under PIK)", Kind.B, 8, sensitive=True),
    FieldSpec(53, "security related control information", Kind.N, 16),
    FieldSpec(54, "additional amounts (balances)", Kind.AN, 120, Var.LLL),
    FieldSpec(55, "ICC system related data", Kind.B, 255, Var.LLL, sensitive=True),
    FieldSpec(58, "PBOC ED/EP card data (medswitch TLV)", Kind.B, 255, Var.LLL),
    FieldSpec(
        60, "reserved private: 60.1 type, 60.2 batch, 60.3 network code, ...", Kind.N, 32, Var.LLL
    ),
    FieldSpec(61, "original data: batch, STAN, date, ...", Kind.N, 29, Var.LLL),
    FieldSpec(62, "reserved private: working keys, parameters, blacklist", Kind.B, 512, Var.LLL),
    FieldSpec(
        63, "reserved private: bill and split (medswitch TLV, under TDK)", Kind.B, 512, Var.LLL
    ),
    FieldSpec(64, "message authentication code (CUP-ECB under MAK)", Kind.B, 8),
)

TERMINAL = InterfaceSpec(
    name="terminal",
    fields=MappingProxyType({f.number: f for f in _FIELDS}),
    encoding=Encoding.BCD,
    prefix_bytes=11,
    secondary_bitmap=False,
    mac_field=64,
    envelope=(3, 11, 25, 41, 42, 60),
)
