"""The key distribution policy both ways: the table in specs/key-ceremony.md is the code's
(`hsm.policy.POLICY`) row for row; every path a rule allows works (and gives the key back on
the other side), every other path is refused with a message naming the governing rules."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hsm import keyblock
from hsm.des import adjust_parity, kcv
from hsm.errors import InvalidInputError
from hsm.keys import TR31_ATTRIBUTES, KeyRef, KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import Component, Lmk, combine
from hsm.policy import POLICY, Form, PolicyError, rules_for
from hsm.soft import SoftHsm

SPEC = Path(__file__).parents[2] / "specs" / "key-ceremony.md"
NOW = datetime(2026, 12, 7, tzinfo=UTC)
U = KeyUsage


def spec_rows() -> list[tuple[str, ...]]:
    text = SPEC.read_text()
    start = text.index("<!-- policy-table")
    table = text[start : text.index("<!-- end policy-table", start)].splitlines()[3:]
    return [tuple(cell.strip() for cell in row.strip().strip("|").split("|")) for row in table
            if row.startswith("|")]


def test_the_spec_table_is_the_code_table() -> None:
    assert spec_rows() == [rule.row() for rule in POLICY]


def test_every_usage_has_a_rule() -> None:
    assert {u for rule in POLICY for u in rule.keys} == set(KeyUsage)


def test_keys_that_need_exportability_are_not_exportable_by_default() -> None:
    """What the spec says: a key a `yes` rule covers leaves only if made --exportable."""
    for rule in POLICY:
        if rule.exportable:
            assert all(TR31_ATTRIBUTES[u][2] == "N" for u in rule.keys), rule.name


def new_hsm() -> SoftHsm:
    parts = [Component(secrets.token_bytes(16)) for _ in range(2)]
    return SoftHsm(Lmk(parts, kcv(combine(parts, minimum=2))), MemoryKeyStore())


def allowed(usage: KeyUsage, kek: KeyUsage | None, form: Form) -> bool:
    return any(r.kek is kek and r.form is form and form is not Form.NEVER
               for r in rules_for(usage))


async def attempt(hsm: SoftHsm, key: KeyRef, kek: KeyRef | None, form: Form) -> str:
    """Send KEY by FORM and receive it back; its KCV on the other side."""
    if form is Form.COMPONENTS:
        parts = await hsm.export_components(key, 3)
        return (await hsm.form_key("back/" + key.alias, key.usage, parts, now=NOW)).kcv
    assert kek is not None
    if form is Form.TR31:
        block = await hsm.export_key_block(key, kek)
        return (await hsm.import_key_block(kek, block, now=NOW, alias=f"back/{key.alias}")).kcv
    sent = await hsm.export_key(key, kek)
    back = await hsm.import_key("back/" + key.alias, key.usage, kek, sent.encrypted, sent.kcv,
                                now=NOW)
    return back.kcv


def test_every_path_both_ways() -> None:
    async def main() -> tuple[int, int]:
        hsm = new_hsm()
        keys = {u: await hsm.generate_key(f"k/{u.value}", u, now=NOW,
                                          exportable=u is not U.CARD_SIGN)  # never exportable
                for u in KeyUsage}
        works = refused = 0
        keks: list[KeyUsage | None] = [None, *KeyUsage]
        for usage, kek, form in itertools.product(KeyUsage, keks, (Form.ECB, Form.TR31,
                                                                   Form.COMPONENTS)):
            if (kek is None) != (form is Form.COMPONENTS):
                continue
            kek_ref = keys[kek] if kek is not None else None
            if allowed(usage, kek, form):
                assert await attempt(hsm, keys[usage], kek_ref, form) == keys[usage].kcv
                works += 1
                continue
            with pytest.raises(PolicyError) as refusal:
                await attempt(hsm, keys[usage], kek_ref, form)
            message = str(refusal.value)
            assert all(rule.name in message for rule in rules_for(usage)), message
            refused += 1
        return works, refused

    works, refused = asyncio.run(main())
    assert works == sum(len(r.keys) for r in POLICY if r.form is not Form.NEVER)
    assert refused > 20 * works


def test_a_key_not_made_exportable_stays() -> None:
    async def main() -> None:
        hsm = new_hsm()
        bureau = await hsm.generate_key("bureau/acme", U.BUREAU_KEK, now=NOW)
        load = await hsm.generate_key("card/MK_LOAD", U.MK_LOAD, now=NOW)
        tmk = await hsm.generate_key("tmk/1", U.TMK, now=NOW)
        with pytest.raises(PolicyError, match="card-masters-to-bureau: card/MK_LOAD v1 was not"):
            await hsm.export_key_block(load, bureau)
        with pytest.raises(PolicyError, match="tmk-components: tmk/1 v1 was not generated"):
            await hsm.export_components(tmk, 2)
        again = await hsm.generate_key("card/MK_LOAD", U.MK_LOAD, now=NOW, exportable=True)
        assert again.version == 2 and await hsm.export_key_block(again, bureau)
        exportable_tmk = await hsm.generate_key("tmk/1", U.TMK, now=NOW, exportable=True)
        for count in (1, 4):
            with pytest.raises(InvalidInputError, match="rule tmk-components: 2 to 3"):
                await hsm.export_components(exportable_tmk, count)

    asyncio.run(main())


def test_a_received_block_of_a_forbidden_usage_is_refused() -> None:
    """The receiving side applies the same table: a PERSONAL_DATA key wrapped under a bureau
    key by someone else's tool is not stored."""
    async def main() -> None:
        hsm = new_hsm()
        clear_kek = adjust_parity(secrets.token_bytes(16))
        kek = await hsm.form_key("bureau/acme", U.BUREAU_KEK, [Component(clear_kek)], now=NOW)
        key = adjust_parity(secrets.token_bytes(16))
        block = keyblock.wrap_transport(
            clear_kek, KeyRef("centre/PERSONAL_DATA", 1, U.PERSONAL_DATA, kcv(key)), key
        )
        with pytest.raises(PolicyError, match="stays-in-hsm"):
            await hsm.import_key_block(kek, block, now=NOW)
        tampered = block[:-1] + ("0" if block[-1] != "0" else "1")
        fine = keyblock.wrap_transport(clear_kek, KeyRef("card/MK_TAC", 3, U.MK_TAC, kcv(key)),
                                       key)
        ref = await hsm.import_key_block(kek, fine, now=NOW)
        assert (ref.alias, ref.version, ref.kcv) == ("card/MK_TAC", 1, kcv(key))
        from hsm.errors import KeyTamperedError
        with pytest.raises(KeyTamperedError):
            await hsm.import_key_block(kek, tampered, now=NOW)

    asyncio.run(main())
