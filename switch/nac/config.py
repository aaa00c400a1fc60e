"""The access controller's table (TOML, specs/dialup.md "The routing table"): its numbers,
its lines, its routes by destination NII. Read once into frozen dataclasses and checked whole
at start: any fault is one line naming where it is, and the controller does not start.

>>> table = parse_table('''
... [nac]
... numbers = ["95566"]
... [[lines]]
... name = "line01"
... pty = "/tmp/line01"
... [[routes]]
... nii = "0003"
... hosts = ["127.0.0.1:5800", "127.0.0.1:5801"]
... ''')
>>> table.routes["0003"][1].port, table.lines[0].framing.value, table.lines[0].speed_bps
(5801, 'cup', 2400)
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from messages.line_framing import LineFraming

SPEEDS_BPS = (1200, 2400, 9600)
LINES_MAX = 1023  # the line's number takes 10 bits of the TPDU source (specs/dialup.md)
HOSTS_PER_NII_MAX = 8
NII = re.compile(r"\d{4}")
NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class TableError(ValueError):
    """The table cannot be used: where and why, in one line."""


@dataclass(frozen=True, slots=True)
class Host:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Faults:
    """Faults injected on a line (tests, drills): the n-th frame to the terminal of each call
    cut after half its bytes (the line dropped), noise bytes written before each frame to the
    terminal, the answer to a dial delayed."""

    drop_answer: tuple[int, ...] = ()  # 1-based, per call
    noise_bytes: int = 0
    slow_answer_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    number: int  # 1-based, in the rewritten TPDU source
    pty: Path | None = None  # a pseudo-terminal pair, its terminal side linked at this path
    device: str | None = None  # a serial device (pyserial)
    speed_bps: int = 2400
    framing: LineFraming = LineFraming.CUP
    faults: Faults = field(default_factory=Faults)


@dataclass(frozen=True, slots=True)
class Settings:
    numbers: tuple[str, ...]  # the numbers the controller answers (digits)
    status_host: str = "127.0.0.1"
    status_port: int = 5890
    answer_timeout_s: float = 30.0  # no answer from the host: the line is dropped
    connect_timeout_s: float = 3.0
    host_retry_s: float = 5.0  # a host that failed is tried again after this
    escape_guard_s: float = 1.0  # S12: the silence around +++
    idle_timeout_s: float = 120.0  # a connected line silent this long is dropped
    calls_max: int = 256  # calls up at once; one more dial hears BUSY
    status_file: Path | None = None  # where the running controller writes its status URL


@dataclass(frozen=True, slots=True)
class Table:
    settings: Settings
    lines: tuple[Line, ...]
    routes: dict[str, tuple[Host, ...]]


def load_table(path: Path) -> Table:
    try:
        text = path.read_text()
    except OSError as error:
        raise TableError(f"{path}: {error.strerror}") from None
    return parse_table(text, path.parent)


def parse_table(text: str, base: Path = Path()) -> Table:
    """The table in ``text``; relative paths in it are relative to ``base`` (its directory)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TableError(f"not TOML: {error}") from None
    unknown = set(raw) - {"nac", "lines", "routes"}
    if unknown:
        raise TableError(f"unknown section(s): {', '.join(sorted(unknown))}")
    settings = _settings(raw.get("nac", {}), base)
    lines = tuple(_line(n + 1, entry, base) for n, entry in enumerate(_tables(raw, "lines")))
    if not lines or len(lines) > LINES_MAX:
        raise TableError(f"lines: 1 to {LINES_MAX} lines, not {len(lines)}")
    for what in ("name", "pty", "device"):
        seen = [getattr(line, what) for line in lines if getattr(line, what) is not None]
        if len(seen) != len(set(seen)):
            raise TableError(f"lines: a {what} given twice")
    routes: dict[str, tuple[Host, ...]] = {}
    for n, entry in enumerate(_tables(raw, "routes")):
        where = f"routes[{n}]"
        _only(entry, {"nii", "hosts"}, where)
        nii = entry.get("nii")
        if not isinstance(nii, str) or not NII.fullmatch(nii):
            raise TableError(f"{where}.nii: four digits, as a string")
        if nii in routes:
            raise TableError(f"{where}.nii: {nii} routed twice")
        hosts = entry.get("hosts")
        if not isinstance(hosts, list) or not 1 <= len(hosts) <= HOSTS_PER_NII_MAX:
            raise TableError(f'{where}.hosts: 1 to {HOSTS_PER_NII_MAX} "host:port"')
        routes[nii] = tuple(_host(h, f"{where}.hosts") for h in hosts)
    if not routes:
        raise TableError("routes: no route")
    return Table(settings, lines, routes)


def _tables(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TableError(f"{key}: an array of tables ([[{key}]])")
    return value


def _only(entry: dict[str, Any], keys: set[str], where: str) -> None:
    unknown = set(entry) - keys
    if unknown:
        raise TableError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


def _number(entry: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise TableError(f"nac.{key}: a number from {low} to {high}")
    return float(value)


def _settings(entry: dict[str, Any], base: Path) -> Settings:
    if not isinstance(entry, dict):
        raise TableError("nac: a table")
    _only(entry, {*Settings.__dataclass_fields__}, "nac")
    numbers = entry.get("numbers")
    if not isinstance(numbers, list) or not numbers:
        raise TableError('nac.numbers: the numbers the controller answers, e.g. ["95566"]')
    digits = tuple("".join(c for c in str(n) if c.isdigit()) for n in numbers)
    if not all(digits):
        raise TableError("nac.numbers: each number needs digits")
    status_host = entry.get("status_host", "127.0.0.1")
    if not isinstance(status_host, str) or not status_host:
        raise TableError("nac.status_host: an address")
    status_file = entry.get("status_file")
    if status_file is not None and (not isinstance(status_file, str) or not status_file):
        raise TableError("nac.status_file: a path")
    return Settings(
        digits,
        status_host,
        int(_number(entry, "status_port", 5890, 0, 65535)),
        _number(entry, "answer_timeout_s", 30.0, 0.1, 600),
        _number(entry, "connect_timeout_s", 3.0, 0.1, 60),
        _number(entry, "host_retry_s", 5.0, 0.0, 3600),
        _number(entry, "escape_guard_s", 1.0, 0.02, 5.0),
        _number(entry, "idle_timeout_s", 120.0, 1.0, 3600),
        int(_number(entry, "calls_max", 256, 1, LINES_MAX)),
        base / status_file if status_file else None,
    )


def _line(number: int, entry: dict[str, Any], base: Path) -> Line:
    where = f"lines[{number - 1}]"
    _only(entry, {"name", "pty", "device", "speed_bps", "framing", "faults"}, where)
    name = entry.get("name", f"line{number:02d}")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise TableError(f"{where}.name: letters, digits, _ . - (32 at most)")
    pty, device = entry.get("pty"), entry.get("device")
    if (pty is None) == (device is None):
        raise TableError(f"{where}: give pty = PATH (a pseudo-terminal) or device = PATH")
    if not isinstance(pty or device, str):
        raise TableError(f"{where}: a path as a string")
    speed = entry.get("speed_bps", 2400)
    if speed not in SPEEDS_BPS:
        raise TableError(f"{where}.speed_bps: one of {', '.join(map(str, SPEEDS_BPS))}")
    try:
        framing = LineFraming(entry.get("framing", "cup"))
    except ValueError:
        raise TableError(f"{where}.framing: cup or stx") from None
    faults = entry.get("faults", {})
    if not isinstance(faults, dict):
        raise TableError(f"{where}.faults: a table")
    _only(faults, {"drop_answer", "noise_bytes", "slow_answer_s"}, f"{where}.faults")
    drop = faults.get("drop_answer", [])
    noise = faults.get("noise_bytes", 0)
    slow = faults.get("slow_answer_s", 0.0)
    if not isinstance(drop, list) or not all(isinstance(d, int) and d >= 1 for d in drop):
        raise TableError(f"{where}.faults.drop_answer: frame numbers from 1")
    if not isinstance(noise, int) or not 0 <= noise <= 64:
        raise TableError(f"{where}.faults.noise_bytes: 0 to 64")
    if not isinstance(slow, int | float) or not 0 <= slow <= 120:
        raise TableError(f"{where}.faults.slow_answer_s: 0 to 120")
    return Line(
        name,
        number,
        base / pty if isinstance(pty, str) else None,
        device if isinstance(device, str) else None,
        speed,
        framing,
        Faults(tuple(drop), noise, float(slow)),
    )


def _host(value: object, where: str) -> Host:
    if not isinstance(value, str) or value.count(":") != 1:
        raise TableError(f'{where}: "host:port", not {value!r}')
    host, _, port = value.partition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise TableError(f'{where}: "host:port", not {value!r}')
    return Host(host, int(port))
