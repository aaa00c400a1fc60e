"""A deployment's key home: the wrapped-key file, the LMK's configured check value, the ceremony
audit log, and the HSM formed over them (DESIGN §4). Used by the daemon, the demo and the CLI alike;
nothing here prompts or prints.

`HOME/keys.jsonl` holds wrapped keys (`switch.keystore_file`), `HOME/lmk.json` the LMK's expected
check value (never the LMK) and `HOME/audit.jsonl` one JSON line per ceremony step (who, what, KCVs,
when; never a key value).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hsm.errors import LmkError
from hsm.interface import Hsm
from hsm.keycard import HsmIdentity
from hsm.keys import KeyRef
from hsm.keystore import KeyStore
from hsm.lmk import Component, Lmk
from hsm.soft import SoftHsm
from switch.keystore_file import FileKeyStore

if TYPE_CHECKING:  # the ledger (and SQLAlchemy) load when personal data is used, not for --help
    from ledger.personal import PersonalKeys

LMK_CONFIG = "lmk.json"
#: The software HSM's Ed25519 identity, which custodians' key cards are bound to (hsm.keycard).
HSM_IDENTITY = "hsm-identity.json"
#: Files this process creates are its user's alone: the database and its WAL, keys, the audit
#: log, logs (issue 22: a 0644 database in a 0755 home held every cardholder).
PRIVATE_UMASK = 0o077
PRIVATE_HOME_MODE = 0o700
TEST_ONLY_BANNER = "*** TEST ONLY LMK: published test components, never for production ***"


class KeyNotFound(LookupError):
    """No stored key answers to the alias (or alias:version) asked for."""


class Home:
    def __init__(self, path: Path, operator: str) -> None:
        self.path = path
        self.operator = operator

    @property
    def store(self) -> FileKeyStore:
        return FileKeyStore(self.path / "keys.jsonl")

    def audit(self, what: str, **details: object) -> None:
        """Append one ceremony step. Callers pass references and KCVs only."""
        self.path.mkdir(PRIVATE_HOME_MODE, parents=True, exist_ok=True)
        line = {"at": ceremony_now().isoformat(), "who": self.operator, "what": what, **details}
        data = (json.dumps(line, sort_keys=True) + "\n").encode()
        fd = os.open(self.path / "audit.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def expected_lmk_kcv(self) -> str | None:
        config = self.path / LMK_CONFIG
        if not config.exists():
            return None
        return str(json.loads(config.read_text())["kcv"])


def private_home(path: Path) -> Path:
    """Make this process's files private (umask 077: 0600 files, 0700 directories) and `path`,
    the deployment's home, 0700 — created so, or tightened if it was looser, with the key
    home's files (a daemon's and a demo's start: an earlier deployment's home too). The
    database's files are tightened where they are opened (`ledger.migrate.upgrade_sqlite`)."""
    os.umask(PRIVATE_UMASK)
    path.mkdir(PRIVATE_HOME_MODE, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_HOME_MODE)
    for name in ("keys.jsonl", "audit.jsonl", LMK_CONFIG, HSM_IDENTITY):  # the key home's files
        _tighten(path / name, 0o600)
    return path


def _tighten(path: Path, mode: int) -> None:
    """``mode`` if looser; never a shared directory (sticky, as /tmp): that is no home."""
    if not path.exists():
        return
    current = path.stat().st_mode
    if current & 0o777 & ~mode and not current & stat.S_ISVTX:
        path.chmod(mode)


def hsm_identity(home: Path, *, create: bool = False) -> HsmIdentity:
    """The software HSM's identity key in HOME (made, 0600, when `create` and none yet);
    LmkError when there is none."""
    path = home / HSM_IDENTITY
    if not path.exists():
        if not create:
            raise LmkError(f"no HSM identity in {home}: key cards are bound with "
                           "`medswitch keys key-card init`")
        home.mkdir(PRIVATE_HOME_MODE, parents=True, exist_ok=True)
        made = HsmIdentity.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"private": made.private_bytes().hex()}) + "\n")
    return HsmIdentity(bytes.fromhex(json.loads(path.read_text())["private"]))


def ceremony_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def open_soft_hsm(
    home: Path, components: Sequence[Component], *, production: bool = False
) -> SoftHsm:
    """A SoftHsm over HOME's file key store, its LMK formed from `components` and checked
    against HOME's configured KCV. For the composition root: raises HsmError, never prompts."""
    return soft_hsm_over(home, components, FileKeyStore(home / "keys.jsonl"), production=production)


def soft_hsm_over(
    home: Path, components: Sequence[Component], store: KeyStore, *, production: bool = False
) -> SoftHsm:
    """A SoftHsm over `store` (the daemon's: on PostgreSQL the working keys go to the
    database), its LMK formed from `components` and checked against HOME's configured KCV."""
    expected = Home(home, "").expected_lmk_kcv()
    if expected is None:
        raise LmkError("no LMK configured: run `medswitch keys lmk-form --new` first")
    return SoftHsm(Lmk(components, expected, production=production), store)


def component_files_of(files: Sequence[Path]) -> list[Component]:
    """Components from the custodians' files (line 1 the component, line 2 `KCV:xxxxxx`)."""
    components = []
    for file in files:
        lines = [ln for ln in file.read_text().splitlines() if ln.strip()]
        expected = lines[1].split(":", 1)[-1] if len(lines) > 1 else None
        components.append(Component.parse(lines[0] if lines else "", expected))
    return components


async def personal_keys(hsm: Hsm, store: KeyStore) -> PersonalKeys:
    """The keys cardholders' names and ID numbers are sealed and indexed under (ledger.personal):
    the newest PERSONAL_DATA version seals, every version opens; KeyNotFound when missing."""
    from ledger.personal import DATA_ALIAS, INDEX_ALIAS, PersonalKeys

    data = sorted(await store.list(DATA_ALIAS), key=lambda stored: stored.version)
    index = sorted(await store.list(INDEX_ALIAS), key=lambda stored: stored.version)
    if not data or not index:
        raise KeyNotFound(
            f"no {DATA_ALIAS} or {INDEX_ALIAS}: generate them (medswitch keys generate, usages "
            "PERSONAL_DATA and PERSONAL_INDEX) before cardholders are written"
        )
    earlier = tuple(stored.ref for stored in data[:-1])
    return PersonalKeys(hsm, data[-1].ref, index[-1].ref, earlier)


async def resolve(home: Home, text: str) -> KeyRef:
    """ALIAS or ALIAS:VERSION → the stored reference (latest version by default)."""
    alias, _, version_text = text.partition(":")
    if version_text and not version_text.isdigit():
        raise KeyNotFound(f"bad key version in {text}")
    version = int(version_text) if version_text else None
    records = await home.store.list(alias)
    if version is not None:
        records = [r for r in records if r.version == version]
    if not records:
        raise KeyNotFound(f"no key {text}")
    return records[-1].ref
