"""The centre as an outsider meets it: `medswitch …` run as a subprocess (never imported) on a
demo deployment in a fresh home (`medswitch demo init`, `medswitch demo sandbox`), the bank's
file keys received under the banks' ZMKs as specs/dayend-files.md says (*File keys, MAC and
encryption*), and the business date of now by the spec's default cut-over."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.contract import files

RUN_S = 120.0
ZONE = ZoneInfo("Asia/Shanghai")  # dayend-files "Running day-end": the centre's time zone
CUTOVER = dt.time(23, 0)  # `cutover = "23:00"` by default


@dataclass(frozen=True)
class Answer:
    code: int
    out: str  # stdout and stderr


#: The demo's administrator (specs/dayend-files.md, *Operators*: TEST ONLY password NAME-password).
DEMO_ADMIN = "demo-admin"
CLERK = "clerk"  # who runs the commands that name no --operator


@dataclass
class Centre:
    home: Path
    file_keys: dict[str, bytes] = field(default_factory=dict)
    logged_in: set[str] = field(default_factory=set)

    @property
    def env(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        return {"MEDSWITCH_HOME": str(self.home), "PATH": f"{bin_dir}:/usr/bin:/bin",
                "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", str(self.home))}

    def token(self, name: str) -> Path:
        return self.home / "contract-tokens" / f"{name}.token"

    def login(self, name: str) -> None:
        """NAME enrolled by the demo's administrator with every back-office role (once) and
        logged in, as the spec says operators are: `medswitch operators add|login`."""
        if name in self.logged_in:
            return
        admin = self.token(DEMO_ADMIN)
        if DEMO_ADMIN not in self.logged_in:
            self._medswitch(["operators", "login", DEMO_ADMIN, "--token-file", str(admin)],
                            f"{DEMO_ADMIN}-password\n")
            self.logged_in.add(DEMO_ADMIN)
        if name != DEMO_ADMIN:
            roles = [a for r in ("maker", "checker", "key_custodian") for a in ("--role", r)]
            password = f"{name}-password"
            self._medswitch(["operators", "add", name, *roles, "--token-file", str(admin)],
                            f"{password}\n{password}\n")
            self._medswitch(["operators", "login", name, "--token-file", str(self.token(name))],
                            f"{password}\n")
        self.logged_in.add(name)

    def _medswitch(self, args: list[str], typed: str) -> None:
        done = subprocess.run([str(Path(sys.executable).parent / "medswitch"), *args],
                              env=self.env, cwd=self.home, input=typed, capture_output=True,
                              text=True, timeout=RUN_S, check=False)
        assert done.returncode == 0, (args, done.stdout + done.stderr)

    def run(self, *args: str, ok: bool | None = True) -> Answer:
        """`medswitch ARGS` as the operator ``--operator NAME`` names (else the clerk), logged
        in; asserts the exit status when `ok` is not None."""
        named = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--operator"]
        env = self.env
        if (self.home / "medswitch.db").exists():
            who = named[-1] if named else CLERK
            self.login(who)
            env = env | {"MEDSWITCH_OPERATOR_TOKEN_FILE": str(self.token(who))}
        done = subprocess.run([str(Path(sys.executable).parent / "medswitch"), *args],
                              env=env, cwd=self.home, capture_output=True, text=True,
                              timeout=RUN_S, check=False)
        answer = Answer(done.returncode, done.stdout + done.stderr)
        if ok is not None:
            assert (answer.code == 0) is ok, (args, answer)
        return answer

    def shell(self, command: str) -> str:
        """A command exactly as a spec prints it, in the demo's environment, by the clerk."""
        self.login(CLERK)
        env = self.env | {"MEDSWITCH_OPERATOR_TOKEN_FILE": str(self.token(CLERK))}
        done = subprocess.run(["bash", "-c", command], env=env, cwd=self.home,
                              capture_output=True, text=True, timeout=RUN_S, check=False)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        return done.stdout

    @property
    def db(self) -> tuple[str, ...]:
        return ("--db", str(self.home / "medswitch.db"))

    @property
    def keys(self) -> tuple[str, ...]:
        return ("--keys-home", str(self.home), "-c", str(self.component("a")),
                "-c", str(self.component("b")))

    def component(self, custodian: str) -> Path:
        return self.home / "custodians" / f"{custodian}.component"


def demo(home: Path) -> Centre:
    home.mkdir(parents=True, exist_ok=True)
    centre = Centre(home)
    centre.run("demo", "init", "--cardholders", "20")
    centre.run("demo", "sandbox")
    return centre


def receive_file_key(centre: Centre, bank: str, zmk: bytes) -> bytes:
    """The bank's side of the documented key exchange: the centre exports its file key under
    the bank's ZMK (the command exactly as dayend-files prints it for b1, read from the spec;
    the same for b2), the bank decrypts it under the ZMK and checks it against the KCV."""
    spec = (files.SPECS / "dayend-files.md").read_text(encoding="utf-8")
    command = re.findall(r"```\n(medswitch keys export [^\n]*)\n```", spec)
    assert len(command) == 1, "dayend-files prints the export command once"
    printed = centre.shell(command[0].replace("b1", bank))
    found = re.search(rf"bank/{bank}/FILE v\d+ under bank/{bank}/ZMK v\d+: ([0-9A-F]{{32}}) "
                      r"KCV ([0-9A-F]{6})", printed)
    assert found, printed
    key = files.unwrap(zmk, found[1], found[2])
    centre.file_keys[bank] = key
    return key


def business_date(now: dt.datetime | None = None) -> dt.date:
    """The date the cut-over closes next: from 12:00 a cut-over closes its own date."""
    local = (now or dt.datetime.now(dt.UTC)).astimezone(ZONE)
    return local.date() if local.time() < CUTOVER else local.date() + dt.timedelta(days=1)


def after_cutover(date: dt.date) -> str:
    """An ISO instant two minutes after DATE's cut-over (what `dayend run --now` takes)."""
    return (dt.datetime.combine(date, CUTOVER, ZONE) + dt.timedelta(minutes=2)).isoformat()
