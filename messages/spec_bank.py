"""The bank-host interface (ISO 8583:1987 host-to-host, ASCII numerics, binary bitmaps).

Frame: 4-digit ASCII length (2-byte binary as an option) | MTI (4 ASCII) | primary and
secondary bitmaps (binary) | fields. MAC in field 128 (ISO 9797-1 alg 3, X9.19, under the ZAK).
Field 122 carries the same PBOC card data as terminal field 58, so a card in a bank counter's
reader is really credited or debited; field 123 the same bill data as terminal field 63.
"""

from __future__ import annotations

from types import MappingProxyType

from messages.fieldspec import Encoding, FieldSpec, InterfaceSpec, Kind, Var

_FIELDS = (
    FieldSpec(2, "primary account number (card number)", Kind.N, 19, Var.LL),
    FieldSpec(3, "processing code", Kind.N, 6),
    FieldSpec(4, "amount, transaction (fen)", Kind.N, 12),
    FieldSpec(7, "transmission date and time MMDDhhmmss", Kind.N, 10),
    FieldSpec(11, "system trace audit number", Kind.N, 6),
    FieldSpec(12, "time, local transaction hhmmss", Kind.N, 6),
    FieldSpec(13, "date, local transaction MMDD", Kind.N, 4),
    FieldSpec(15, "date, settlement MMDD", Kind.N, 4),
    FieldSpec(22, "point of service entry mode", Kind.N, 3),
    FieldSpec(25, "point of service condition code", Kind.N, 2),
    FieldSpec(32, "acquiring institution identification code", Kind.N, 11, Var.LL),
    FieldSpec(33, "forwarding institution identification code", Kind.N, 11, Var.LL),
    FieldSpec(35, "track 2 data", Kind.Z, 37, Var.LL, sensitive=True),
    FieldSpec(37, "retrieval reference number", Kind.AN, 12),
    FieldSpec(38, "authorisation identification response", Kind.AN, 6),
    FieldSpec(39, "response code", Kind.AN, 2),
    FieldSpec(41, "card acceptor terminal identification (counter)", Kind.ANS, 8),
    FieldSpec(42, "card acceptor identification code (branch)", Kind.ANS, 15),
    FieldSpec(48, "additional data, private (key exchange: keys and KCVs)", Kind.ANS, 999, Var.LLL),
    FieldSpec(49, "currency code, transaction", Kind.N, 3),
    FieldSpec(52, "PIN data (ISO 9564 format 0 under ZPK)", Kind.B, 8, sensitive=True),
    FieldSpec(53, "security related control information", Kind.N, 16),
    FieldSpec(54, "additional amounts (balances)", Kind.AN, 120, Var.LLL),
    FieldSpec(64, "message authentication code, primary (dialects with mac_field 64)", Kind.B, 8),
    FieldSpec(70, "network management information code", Kind.N, 3),
    FieldSpec(90, "original data elements", Kind.N, 42),
    FieldSpec(100, "receiving institution identification code", Kind.N, 11, Var.LL),
    FieldSpec(102, "account identification 1 (savings account)", Kind.ANS, 28, Var.LL),
    FieldSpec(122, "PBOC ED/EP card data (same TLV as terminal field 58)", Kind.B, 255, Var.LLL),
    FieldSpec(123, "bill and split data (same TLV as terminal field 63)", Kind.B, 512, Var.LLL),
    FieldSpec(128, "message authentication code (X9.19 under ZAK)", Kind.B, 8),
)

BANK = InterfaceSpec(
    name="bank",
    fields=MappingProxyType({f.number: f for f in _FIELDS}),
    encoding=Encoding.ASCII,
    prefix_bytes=0,
    secondary_bitmap=True,
    mac_field=128,
    envelope=(3, 4, 7, 11, 32, 33, 41, 42, 70),
)
