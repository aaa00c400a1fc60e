"""Every worked example of specs/dayend-files.md and specs/ledger-files.md recomputed from the
spec alone: keys from the published TEST ONLY components (KCVs), the file key under b1's ZMK,
the payout file's MAC, the refund file's encryption and MAC, the return file and the statement
(their MACs, the return file's binding to the refund file's MAC and its masked card number),
and the contributions and cardholders files (MACs, the personal data decrypting to what the
spec says, under the BLAKE2b block of their own record). Imports nothing of medswitch."""

from __future__ import annotations

import hashlib

from tests.contract import files as f

DAYEND = f.examples("dayend-files.md")
LEDGER = f.examples("ledger-files.md")
KEYS = {" ".join(w[:-1]): w[-1] for w in (x.split() for x in DAYEND["keys"].splitlines()) if w}
FILE_KEY = f.from_components(KEYS["file key component 1"], KEYS["file key component 2"])


def test_the_keys_check_against_their_published_kcvs() -> None:
    for bank in ("b1", "b2"):
        zmk = f.from_components(KEYS[f"zmk {bank} component 1"], KEYS[f"zmk {bank} component 2"])
        assert f.kcv(zmk) == KEYS[f"zmk {bank} kcv"]
    assert f.kcv(FILE_KEY) == KEYS["file key kcv"]
    zmk = f.from_components(KEYS["zmk b1 component 1"], KEYS["zmk b1 component 2"])
    received = f.unwrap(zmk, KEYS["file key under zmk b1"], KEYS["file key kcv"])
    assert received == FILE_KEY
    assert f.wrap(zmk, FILE_KEY) == KEYS["file key under zmk b1"]


def test_the_payout_file_example() -> None:
    read = f.read_fixed(FILE_KEY, f.padded(DAYEND["payout"]),
                        (f.PAYOUT_HEADER, f.PAYOUT_DETAIL, f.PAYOUT_TRAILER))
    assert (read.header["format"], read.header["source"]) == ("MSPAYOUT", "INSURANCE")
    assert [d["amount"] for d in read.details] == ["000000000012345"]
    assert int(read.trailer["total"]) == 12345


def test_the_refund_file_example_decrypts_to_its_plain_file() -> None:
    sealed = bytes.fromhex("".join(DAYEND["refund"].split()))
    plain = f.decrypt(FILE_KEY, sealed)
    assert plain == f.padded(DAYEND["refund-plain"])
    assert f.encrypt(FILE_KEY, plain) == sealed and len(sealed) == 664
    read = f.read_fixed(FILE_KEY, plain, (f.PAYOUT_HEADER, f.PAYOUT_DETAIL, f.PAYOUT_TRAILER))
    assert read.header["format"] == "MSREFUND" and read.details[0]["account_no"].isdigit()


def test_the_return_file_example_answers_the_refund_file() -> None:
    refund = f.read_fixed(FILE_KEY, f.padded(DAYEND["refund-plain"]),
                          (f.PAYOUT_HEADER, f.PAYOUT_DETAIL, f.PAYOUT_TRAILER))
    answer = f.read_fixed(FILE_KEY, f.padded(DAYEND["return"]),
                          (f.RETURN_HEADER, f.RETURN_DETAIL, f.RETURN_TRAILER))
    assert answer.header["payout_file"] == "REFUND_20261125_b1_EP.enc"
    assert answer.header["payout_mac"] == refund.trailer["mac"]
    card = refund.details[0]["account_no"]
    assert answer.details[0]["account_no"] == card[:6] + "*" * (len(card) - 10) + card[-4:]
    assert answer.details[0]["status"] == "P" and int(answer.trailer["paid"]) == 1


def test_the_statement_example() -> None:
    read = f.read_fixed(FILE_KEY, f.padded(DAYEND["statement"]),
                        (f.STMT_HEADER, f.STMT_DETAIL, f.STMT_TRAILER))
    assert read.details[0]["kind"] == "CONTRIBUTION" and read.details[0]["counterparty"] == "u2"
    assert int(read.trailer["credits"]) == 105050 and int(read.trailer["debits"]) == 0


def test_the_contributions_example() -> None:
    records = f.read_record_file(FILE_KEY, LEDGER["contributions"].encode())
    assert records[-1] == ["T", "2", str(sum(int(r[3]) for r in records[1:-1]))]


def test_the_cardholders_example_decrypts_to_what_the_spec_says() -> None:
    records = f.read_record_file(FILE_KEY, LEDGER["cardholders"].encode())
    file_id = records[0][3]
    said = {"9000000001": "11010519900101001X|王芳", "9000000002": "110105195503150027|李强"}
    for record in records[1:-1]:
        plain = f.decrypt(FILE_KEY, bytes.fromhex(record[5]))
        block = hashlib.blake2b(f"{file_id}|{record[1]}".encode(), digest_size=8,
                                person=b"medsw-holders").digest()
        assert plain[:8] == block and plain[8:].decode() == said[record[1]]
        assert f.holder_data(FILE_KEY, file_id, record[1], *said[record[1]].split("|")) == \
            record[5]
