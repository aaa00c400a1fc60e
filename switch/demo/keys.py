"""Keys of the demo deployment: an LMK from the published TEST ONLY components, a TMK per
terminal, the card master keys (key version 1), the data-check and PSAM transport keys, the
centre's card-data signing key (`centre/CARD_SIGN`, RSA-2048: its public key by `medswitch keys
public-key centre/CARD_SIGN`), the
file key card issuance batches are sealed under (`cards/file`), the
keys cardholders' names and ID numbers are sealed and indexed under, a file key per bank for the
day-end payout and return files, and a ZMK per bank formed from the TEST ONLY components
published in specs/dayend-files.md ("File keys"), so the bank's side of the key exchange can be
done by hand on the demo (`medswitch keys export bank/<bank>/FILE --kek bank/<bank>/ZMK`).

Everything is created through the HSM and recorded in the ceremony audit log; only check values
are printed. A production deployment runs the ceremony by hand (`medswitch keys ...`) and an
HSM formed with ``production=True`` refuses the TEST ONLY components.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from hsm.des import kcv
from hsm.keys import KeyUsage
from hsm.lmk import TEST_ONLY_COMPONENTS, TEST_ONLY_KEY_COMPONENTS, Component, combine
from hsm.soft import SoftHsm
from ledger.demo import institutions
from ledger.personal import PersonalKeys
from routing.cardkeys import card_master_alias
from switch.key_home import LMK_CONFIG, Home, component_files_of, open_soft_hsm, personal_keys
from switch.sessions import tmk_alias

CARD_MASTER_USAGES = (
    KeyUsage.MK_LOAD,
    KeyUsage.MK_PURCHASE,
    KeyUsage.MK_TAC,
    KeyUsage.MK_UNLOAD,
    KeyUsage.MK_PIN_RELOAD,
    KeyUsage.MK_PIN_UNBLOCK,
    KeyUsage.MK_APP_MAINT,
    KeyUsage.MK_CONTROL,
    KeyUsage.MK_RECORD,
)
CENTRE_USAGES = (
    KeyUsage.DATA_CHECK,
    KeyUsage.PSAM_TRANSPORT,
    KeyUsage.PERSONAL_DATA,  # centre/PERSONAL_DATA: cardholders' names and ID numbers sealed
    KeyUsage.PERSONAL_INDEX,  # centre/PERSONAL_INDEX: their ID numbers' keyed hashes
    KeyUsage.CARD_SIGN,  # centre/CARD_SIGN: signs the cards' holder and health data (RSA)
)


CARD_BATCH_FILE_KEY = "cards/file"  # `cards issue|approve|personalize --file-key` default

# TEST ONLY: each demo bank's ZMK components, published in specs/dayend-files.md ("File keys").
TEST_ONLY_BANK_ZMK_COMPONENTS = {
    bank: TEST_ONLY_KEY_COMPONENTS[f"zmk {bank}"] for bank in ("b1", "b2")
}


def centre_alias(usage: KeyUsage) -> str:
    return f"centre/{usage.value}"


def demo_bank_ids() -> list[str]:
    """The demo's banks: day-end MACs each one's payout files under its file key."""
    return [row["id"] for row in institutions() if row["kind"] == "bank"]


def bank_file_alias(bank_id: str) -> str:
    """The alias day-end's default `[dayend] file_key_alias` names for a bank's file key."""
    return f"bank/{bank_id}/FILE"


def bank_zmk_alias(bank_id: str) -> str:
    """The alias a bank link's `zmk_alias` names for its ZMK (specs/bank-interface.md)."""
    return f"bank/{bank_id}/ZMK"


def custodian_files(home: Path) -> list[Path]:
    return [home / "custodians" / f"{name}.component" for name in ("a", "b")]


def write_test_components(home: Path) -> list[Path]:
    """The custodians' files (component, then its KCV) and the LMK's recorded check value."""
    files = custodian_files(home)
    files[0].parent.mkdir(0o700, parents=True, exist_ok=True)
    components = [Component.parse(c) for c in TEST_ONLY_COMPONENTS]
    for file, component, text in zip(files, components, TEST_ONLY_COMPONENTS, strict=True):
        if not file.exists():
            file.write_text(f"{text}\nKCV:{component.kcv}\n")
            file.chmod(0o600)
    config = home / LMK_CONFIG
    if not config.exists():
        formed = kcv(combine(components, minimum=2))
        config.write_text(json.dumps({"kcv": formed, "formed_at": _now().isoformat()}) + "\n")
        Home(home, "demo").audit(
            "lmk.form",
            kcv=formed,
            recorded=True,
            test_only=True,
            component_kcvs=[c.kcv for c in components],
        )
    return files


async def provision(home: Path, terminal_ids: Iterable[str]) -> dict[str, str]:
    """Create whatever demo keys are missing; returns alias → KCV of what was created."""
    wanted = [(card_master_alias(u), u) for u in CARD_MASTER_USAGES]
    wanted += [(centre_alias(u), u) for u in CENTRE_USAGES]
    wanted += [(tmk_alias(t), KeyUsage.TMK) for t in terminal_ids]
    wanted += [(bank_file_alias(b), KeyUsage.FILE) for b in demo_bank_ids()]
    wanted += [(CARD_BATCH_FILE_KEY, KeyUsage.FILE)]  # `medswitch cards issue` seals under it
    created = await _provision(home, wanted)
    return created | await _form_bank_zmks(home)


async def _form_bank_zmks(home: Path) -> dict[str, str]:
    """Each demo bank's ZMK from its published TEST ONLY components, when missing."""
    hsm = open_soft_hsm(home, component_files_of(custodian_files(home)))
    audit = Home(home, "demo")
    existing = {stored.alias for stored in await audit.store.list()}
    created: dict[str, str] = {}
    for bank in demo_bank_ids():
        alias = bank_zmk_alias(bank)
        if alias in existing or bank not in TEST_ONLY_BANK_ZMK_COMPONENTS:
            continue
        parts = [Component.parse(c) for c in TEST_ONLY_BANK_ZMK_COMPONENTS[bank]]
        ref = await hsm.form_key(alias, KeyUsage.ZMK, parts, now=_now())
        created[alias] = ref.kcv
        audit.audit("key.form", alias=alias, usage="ZMK", version=ref.version, kcv=ref.kcv,
                    component_kcvs=[c.kcv for c in parts], test_only=True)
    return created


async def _provision(home: Path, wanted: list[tuple[str, KeyUsage]]) -> dict[str, str]:
    files = write_test_components(home)
    hsm = open_soft_hsm(home, component_files_of(files))
    audit = Home(home, "demo")
    existing = {stored.alias for stored in await audit.store.list()}
    created: dict[str, str] = {}
    for alias, usage in wanted:
        if alias in existing:
            continue
        ref = await _generate(hsm, alias, usage)
        created[alias] = ref
        audit.audit(
            "key.generate", alias=alias, usage=usage.value, version=1, kcv=ref, test_only=True
        )
    return created


async def demo_personal_keys(home: Path) -> PersonalKeys:
    """The demo's keys for cardholders' personal data (made first if missing; TEST ONLY LMK)
    on a software HSM over HOME's key file: what `ledger.demo.init_demo` seals with, and what
    the daemon and the CLI open with later. Only these two: the others are `provision`'s."""
    usages = (KeyUsage.PERSONAL_DATA, KeyUsage.PERSONAL_INDEX)
    await _provision(home, [(centre_alias(u), u) for u in usages])
    hsm = open_soft_hsm(home, component_files_of(custodian_files(home)))
    return await personal_keys(hsm, Home(home, "demo").store)


async def _generate(hsm: SoftHsm, alias: str, usage: KeyUsage) -> str:
    ref = await hsm.generate_key(alias, usage, now=_now())
    return ref.kcv


def write_config(home: Path, terminal_port: int = 5800, http_port: int = 5880) -> Path:
    """The demo's medswitch.toml, naming the custodians' component files."""
    path = home / "medswitch.toml"
    if not path.exists():
        components = ", ".join(f'"{f}"' for f in custodian_files(home))
        path.write_text(
            "# medswitch demo deployment — TEST ONLY keys, embedded SQLite.\n"
            f'home = "{home}"\n\n[terminal]\nport = {terminal_port}\n\n'
            f'[http]\nport = {http_port}\n\n[hsm]\nbackend = "soft"\n'
            f"lmk_components = [{components}]\n"
        )
    return path


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
