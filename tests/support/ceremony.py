"""A deployment made by a key ceremony through `medswitch keys` (no TEST ONLY keys), and the
daemon in process over that home's key file: what tests/switch/test_key_ceremony.py drives."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from switch.app import open_app
from switch.card_io.connection import DirectConnection
from switch.cli import main
from switch.config import Config, HttpConfig, ListenConfig
from switch.key_home import component_files_of, open_soft_hsm
from switch.keystore_file import FileKeyStore
from switch.sessions import Sessions
from tests.support.daemon import Daemon, now
from tests.support.operators import NamedOperators


@dataclass
class Ceremony:
    """A key home and the custodians' LMK component files (their own media)."""

    home: Path
    media: Path
    lmk_files: list[Path] = field(default_factory=list)

    def keys(self, *args: str, who: str = "alice", ok: bool = True) -> Result:
        """`medswitch keys --home HOME --operator WHO ARGS -c … -c …` (the LMK's components
        appended where the command takes them)."""
        lmk = [a for f in self.lmk_files for a in ("-c", str(f))]
        takes_lmk = args[0] not in ("component", "list", "policy", "lmk-form", "age")
        argv = ["keys", "--home", str(self.home), "--operator", who, *args]
        result = CliRunner().invoke(main, argv + (lmk if takes_lmk else []), env=self.login(argv))
        assert (result.exit_code == 0) is ok, result.output
        return result

    def cards(self, *args: str, who: str = "alice", ok: bool = True, group: str = "cards",
              readers: dict[str, Any] | None = None) -> Result:
        """`medswitch cards --home HOME --db HOME/medswitch.db --operator WHO -c … ARGS` (or
        the ``group`` psams), as WHO logged in (enrolled on first use); ``readers`` (name →
        virtual card) stand in for PC/SC."""
        lmk = [a for f in self.lmk_files for a in ("-c", str(f))]
        db = self.home / "medswitch.db"
        argv = [group, "--home", str(self.home), "--db", str(db), "--operator", who, *lmk, *args]
        obj = None
        if readers:
            obj = {"connect": lambda name: DirectConnection(readers[name], name)}
        result = CliRunner().invoke(main, argv, env=self.login(argv), obj=obj)
        assert (result.exit_code == 0) is ok, result.output
        return result

    def estate(self, *args: str, who: str = "alice") -> Result:
        """`medswitch ARGS --db HOME/medswitch.db` (terminals, institutions, …) as WHO logged
        in."""
        argv = [*args, "--db", str(self.home / "medswitch.db")]
        result = CliRunner().invoke(main, argv, env=self.login(["--operator", who]))
        assert result.exit_code == 0, result.output
        return result

    def login(self, argv: list[str]) -> dict[str, str]:
        """The environment of the operator ``--operator WHO`` names, logged in (enrolled on
        first use) once the home has its database; before it, the blank deployment's steps
        are recorded as typed."""
        db = self.home / "medswitch.db"
        if not db.exists():
            return {}
        return NamedOperators(db, self.media / "operator-tokens").env(argv)

    def documented(self, line: str, spec: Path) -> Result:
        """A command line exactly as the spec prints it, run in the custodians' directory (where
        its component files are) with MEDSWITCH_HOME naming the home."""
        assert line in spec.read_text(), line
        argv = shlex.split(line)
        assert argv[0] == "medswitch"
        with contextlib.chdir(self.media):
            result = CliRunner(env={"MEDSWITCH_HOME": str(self.home)}).invoke(main, argv[1:])
        assert result.exit_code == 0, result.output
        return result

    def component(self, custodian: str, name: str) -> Path:
        path = self.media / name
        self.keys("component", "--custodian", custodian, "--out", str(path), who=custodian)
        return path


def later(days: int) -> str:
    """The time ``days`` from now, to the second, as `--now` takes it."""
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0).isoformat()


def with_tmks(tmp_path: Path, terminals: tuple[str, ...]) -> Ceremony:
    """A home whose LMK alice and bob formed from their components, with an exportable TMK for
    each of ``terminals``."""
    media = tmp_path / "media"
    media.mkdir()
    c = Ceremony(tmp_path / "home", media)
    c.lmk_files = [c.component("alice", "lmk.alice"), c.component("bob", "lmk.bob")]
    c.keys("lmk-form", "--new", *[a for f in c.lmk_files for a in ("-c", str(f))])
    for terminal in terminals:
        c.keys("generate", f"tmk/{terminal}", "--usage", "TMK", "--exportable")
    return c


async def invoke(args: list[str]) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, main, args, catch_exceptions=False)


@asynccontextmanager
async def serving(ceremony: Ceremony) -> AsyncIterator[Daemon]:
    """The daemon over HOME's database and key file, its LMK formed from the custodians'
    files, listening on port 0."""
    hsm = open_soft_hsm(ceremony.home, component_files_of(ceremony.lmk_files))
    store = FileKeyStore(ceremony.home / "keys.jsonl")
    config = Config(home=str(ceremony.home), database_url="",
                    terminal=replace(ListenConfig(), port=0), http=HttpConfig(port=0))
    app = await open_app(config, hsm, Sessions(store), clock=now)
    await app.start()
    try:
        yield Daemon(app, hsm, store, ceremony.home)
    finally:
        await app.stop()
