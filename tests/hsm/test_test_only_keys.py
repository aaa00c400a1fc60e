"""The published TEST ONLY keys live under the TEST ONLY LMK only (issue 26: the bank ZMKs and the
file key of specs/dayend-files.md "Worked examples" are public). Under an LMK formed from a
centre's own components — a production estate, `medswitch hsm serve --production` included —
the HSM refuses to form a key from any published component and to store any published key
(imported under a ZMK included), nothing stored; under the demo's TEST ONLY LMK they are formed
with their published check values. The code's components are the spec's."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsm.des import Des, kcv
from hsm.errors import InvalidInputError
from hsm.keys import KeyUsage
from hsm.keystore import MemoryKeyStore
from hsm.lmk import (
    TEST_ONLY_COMPONENTS,
    TEST_ONLY_KEY_COMPONENTS,
    TEST_ONLY_LMK_KCV,
    Component,
    Lmk,
    combine,
    generate_component,
)
from hsm.soft import SoftHsm
from switch.cli import main
from tests.support.dayend import make_keys
from tests.support.spec_examples import examples, key_table

NOW = datetime(2026, 12, 7, tzinfo=UTC)
PUBLISHED = key_table(examples("dayend-files.md")["keys"])
OWN = bytes.fromhex("1F2E3D4C5B6A79880123456789ABCDEF")  # a ZMK of the centre's own


def _parts(name: str) -> list[Component]:
    return [Component.parse(c) for c in TEST_ONLY_KEY_COMPONENTS[name]]


def _hsm(
    *, test_only: bool, production: bool = False, store: MemoryKeyStore | None = None
) -> SoftHsm:
    store = store or MemoryKeyStore()
    if test_only:
        parts = [Component.parse(c) for c in TEST_ONLY_COMPONENTS]
        return SoftHsm(Lmk(parts, TEST_ONLY_LMK_KCV), store)
    own = [generate_component(lambda n: b"\x5a" * n), generate_component(lambda n: b"\x33" * n)]
    return SoftHsm(Lmk(own, kcv(combine(own)), production=production), store)


def test_the_codes_test_only_components_are_the_ones_the_spec_publishes() -> None:
    for name, (first, second) in TEST_ONLY_KEY_COMPONENTS.items():
        assert (PUBLISHED[f"{name} component 1"], PUBLISHED[f"{name} component 2"]) == (
            first, second)
        assert kcv(combine(_parts(name))) == PUBLISHED[f"{name} kcv"]


@pytest.mark.parametrize("production", [False, True])
def test_an_lmk_of_its_own_refuses_the_published_keys(production: bool) -> None:
    async def run() -> None:
        store = MemoryKeyStore()
        hsm = _hsm(test_only=False, production=production, store=store)
        for name, usage in (("zmk b1", KeyUsage.ZMK), ("zmk b2", KeyUsage.ZMK),
                            ("file key", KeyUsage.FILE)):
            with pytest.raises(InvalidInputError, match="published TEST ONLY component"):
                await hsm.form_key("bank/b1/X", usage, _parts(name), now=NOW)
        mixed = [_parts("zmk b1")[0], Component(OWN)]  # one public component: still refused
        with pytest.raises(InvalidInputError, match="published TEST ONLY"):
            await hsm.form_key("bank/b1/ZMK", KeyUsage.ZMK, mixed, now=NOW)

        zmk = await hsm.form_key("bank/b1/ZMK", KeyUsage.ZMK, [Component(OWN)], now=NOW)
        public = combine(_parts("file key"))  # the published file key, sent under our ZMK
        sent = Des(OWN).encrypt_ecb(public)
        with pytest.raises(InvalidInputError, match=r"TEST ONLY key \(KCV D954A2\) is refused"):
            await hsm.import_key("bank/b1/FILE", KeyUsage.FILE, zmk, sent, kcv(public), now=NOW)
        assert await store.list("bank/b1/FILE") == []  # nothing stored
        await hsm.generate_key("bank/b1/FILE", KeyUsage.FILE, now=NOW)  # its own: fine

    asyncio.run(run())


def test_the_test_only_lmk_forms_them_with_their_published_check_values() -> None:
    async def run() -> None:
        hsm = _hsm(test_only=True)
        for name, usage in (("zmk b1", KeyUsage.ZMK), ("file key", KeyUsage.FILE)):
            ref = await hsm.form_key(f"t/{usage.value}", usage, _parts(name), now=NOW)
            assert ref.kcv == PUBLISHED[f"{name} kcv"]

    asyncio.run(run())


def test_keys_form_refuses_them_in_one_line_under_an_lmk_of_its_own(tmp_path: Path) -> None:
    home, components = make_keys(tmp_path)  # random LMK components: an estate of its own
    files = []
    for n, part in enumerate(TEST_ONLY_KEY_COMPONENTS["zmk b1"], 1):
        path = tmp_path / f"zmk.{n}"
        path.write_text(f"{part}\nKCV:{kcv(bytes.fromhex(part))}\n")
        files += ["-k", str(path)]
    result = CliRunner().invoke(main, ["keys", "--home", str(home), "form", "bank/b1/ZMK",
                                       "--usage", "ZMK", *files, *components])
    assert result.exit_code == 1, result.output
    assert "bank/b1/ZMK: a published TEST ONLY component is refused" in result.output
    listed = CliRunner().invoke(main, ["keys", "--home", str(home), "list"])
    assert "bank/b1/ZMK" not in listed.output
