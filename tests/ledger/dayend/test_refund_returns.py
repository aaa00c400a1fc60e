"""A refund's return file through the real entry point (issue 26 item 3): the centre's day-end
writes the REFUND file encrypted (the card number the savings account is linked to is inside,
never in clear on disk); the bank's return file must carry that card number masked. A return
file quoting it in clear is refused whole by `medswitch dayend import-returns` (exit 1, the line
named, nothing posted, the refusal audited); the same answer masked is accepted."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from ledger.dayend import bank_files as bf
from ledger.dayend import return_file as rf
from switch.key_home import Home, component_files_of, open_soft_hsm, resolve
from tests.support.dayend import Cli, approved_day

TABLES = ("transfers", "payouts", "review_items")


def _with_clear_card(cli: Cli, answer: Path, card_no: str) -> Path:
    """The bank's answer re-sealed with the refund line's account number in clear."""
    hsm = open_soft_hsm(cli.keys_home, component_files_of([Path(p) for p in cli.components[1::2]]))
    key = asyncio.run(resolve(Home(cli.keys_home, "test"), "bank/b1/FILE"))
    parsed = asyncio.run(rf.parse_return(hsm, key, answer.read_bytes()))
    lines = tuple(dataclasses.replace(line, account_no=card_no) for line in parsed.lines)
    clear = dataclasses.replace(parsed, lines=lines)
    path = answer.parent / "clear" / answer.name
    path.parent.mkdir()
    path.write_bytes(asyncio.run(bf.seal(hsm, key, rf.render_return(clear))))
    return path


def test_a_refund_return_with_the_card_number_in_clear_is_refused_by_the_import(cli: Cli) -> None:
    cards, date, compact = approved_day(cli)
    refund = cli.out / "outbox" / f"REFUND_{compact}_b1_EP.enc"
    ((card_no,),) = cli.rows(
        f"SELECT account_no FROM payouts WHERE id = '{compact}-R-{cards[0].holder}'"
    )
    assert str(card_no) == cards[0].card_no  # the refund goes to the card's savings account
    assert cards[0].card_no.encode() not in refund.read_bytes()  # encrypted on disk
    cli.verify(refund)  # `dayend verify` decrypts and checks it (exit 0)

    common = ("--home", str(cli.keys_home), *cli.components, "--out", str(cli.out / "bank"))
    cli.invoke("sim", "bank-files", "returns", str(refund), "--date", date, *common)
    (masked,) = sorted((cli.out / "bank").glob("RETURN_REFUND_*.txt"))
    assert cards[0].card_no.encode() not in masked.read_bytes()
    clear = _with_clear_card(cli, masked, cards[0].card_no)

    before = [sorted(cli.rows(f"SELECT * FROM {t}"), key=repr) for t in TABLES]
    db = (
        "--db",
        str(cli.db),
        "--keys-home",
        str(cli.keys_home),
        *cli.components,
        "--operator",
        "carol",
    )
    out = cli.invoke("dayend", "import-returns", str(clear), *db, ok=False).output
    assert f"{clear.name}: REFUSED: " in out and "line 1: " in out, out
    assert "masked" in out and "never in clear" in out and cards[0].card_no not in out
    assert [sorted(cli.rows(f"SELECT * FROM {t}"), key=repr) for t in TABLES] == before
    assert cli.rows("SELECT action, subject FROM audit_log WHERE action LIKE '%.refused'") == [
        ("recon.returns.refused", clear.name)
    ]

    out = cli.invoke("dayend", "import-returns", str(masked), *db).output
    assert "1 paid, 0 returned now" in out, out
