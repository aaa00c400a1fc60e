"""Configuration, read once into frozen dataclasses: a TOML file, then MEDSWITCH_* overrides.

The file is ``$MEDSWITCH_HOME/medswitch.toml`` (or ``--config``). Every setting has a default
that runs the embedded demo deployment; an environment variable named after the setting's path
overrides the file, e.g. ``MEDSWITCH_TERMINAL_PORT=6000`` or ``MEDSWITCH_DATABASE_URL=...``.
A wrong type or an unknown key is a clear error at start, never a surprise at runtime.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ledger.medical.limits import BillLimits
from switch import config_rules
from switch.bank.dialect import dialect_of
from switch.his_idempotency import IdempotencySettings
from switch.his_rate import RateSettings
from switch.his_throttle import ThrottleSettings

T = TypeVar("T")
DEFAULT_HOME = "var/demo"  # the embedded demo deployment, relative to the working directory


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the setting."""


@dataclass(frozen=True, slots=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = 5800
    connections_max: int = 2000
    frame_bytes_max: int = 8192
    idle_timeout_s: float = 300.0  # no frame for this long: the connection is closed
    read_timeout_s: float = 30.0  # a frame not complete this long after its first byte: closed
    connections_per_address_max: int = 200  # from one IP address (a NAT may hide many POS)
    in_flight_max: int = 32  # requests handled at once for one connection; then reading pauses
    write_buffer_bytes_max: int = 65_536  # replies not yet taken by the peer; then reading pauses
    drain_timeout_s: float = 10.0  # at SIGTERM: the longest wait for accepted requests' replies


@dataclass(frozen=True, slots=True)
class SignOnConfig:
    """Terminal sign-ons (specs/terminal-interface.md, sign-on): at most ``per_minute`` per
    terminal in any 60 s (per worker process; more are answered 65), and the pending key sets
    kept per terminal (``pending_max`` >= ``per_minute``)."""

    per_minute: int = 6
    pending_max: int = 6


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 5880  # /metrics, /healthz, /readyz and the HIS API
    # With workers > 1, worker i also serves its own /metrics on this port + i (0: none).
    worker_metrics_port: int = 0
    connections_max: int = 256
    connections_per_address_max: int = 64
    header_timeout_s: float = 10.0  # a request's head complete within this of its first byte
    body_timeout_s: float = 30.0  # its body complete within this of its head
    idle_timeout_s: float = 60.0  # a connection with no request in progress: closed after this
    body_bytes_max: int = 256 * 1024  # a larger request body is answered 413
    drain_timeout_s: float = 10.0  # at SIGTERM: the longest wait for requests being handled
    status_token: str = ""  # /status from beyond loopback with "Authorization: Bearer <token>"


@dataclass(frozen=True, slots=True)
class HsmConfig:
    backend: str = "soft"  # soft | network
    host: str = "127.0.0.1"
    port: int = 1500
    lmk_components: tuple[str, ...] = ()  # component files or key-card:READER (soft backend)
    timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class OfflineConfig:
    """What terminals may do offline, sent with the parameter download (60.3 = 360)."""

    floor_fen: int = 20_000  # the largest offline purchase
    count_max: int = 50  # offline purchases before the POS must upload
    age_max_h: int = 72  # the oldest offline purchase before the POS must upload


@dataclass(frozen=True, slots=True)
class BankConfig:
    """The inbound link of one bank host (the bank as acquirer for its counters)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 5810
    allowed_peers: tuple[str, ...] = ("127.0.0.1",)  # peer IP addresses; empty: any
    acquirer_id: str = "01020000"  # F32 the bank sends (and the reply echoes)
    zak_alias: str = "bank/01020000/ZAK"  # the link's MAC key (X9.19), latest version
    zpk_alias: str = "bank/01020000/ZPK"  # PINs entered at the bank's counters
    # The outbound link to the same bank as savings issuer (EP loads); no host: none.
    outbound_host: str = ""
    outbound_port: int = 5811
    outbound_zak_alias: str = "bank/01020000/out/ZAK"
    outbound_zpk_alias: str = "bank/01020000/out/ZPK"
    centre_id: str = "09990000"  # the centre's F32 on messages it originates
    outbound_timeout_s: float = 10.0  # a savings debit unanswered this long is reversed
    outbound_connections: int = 1  # connections to the bank; requests spread over those up
    bins: tuple[str, ...] = ()  # card BIN prefixes whose EP loads go to this bank; empty: all
    zmk_alias: str = "bank/01020000/ZMK"  # the link's ZMK: new zone keys travel under it
    key_change_interval_s: float = 0.0  # the centre changes the outbound keys this often; 0: never
    key_overlap_s: float = 300.0  # after a change, the previous keys still verify this long
    # The link's dialect (switch/bank/dialect.py): a preset; each setting below "" = the preset's.
    dialect: str = "medswitch"  # medswitch | jpos-iso87a | binary-header
    length_header: str = ""  # ascii4 | binary2 | none
    bitmap: str = ""  # binary | hex
    binary_fields: str = ""  # F52, F64, F128: raw | hex
    numerics: str = ""  # ascii | bcd
    request_mac: str = ""  # required | optional | none (financial requests)
    response_mac: str = ""  # required | optional | none (their responses)
    network_mac: str = ""  # required | optional | none (0800/0810)
    mac_field: str = ""  # 128 | 64 (F64 when no field above 64)
    mac_padding: str = ""  # method1 | method2 (ISO 9797-1)
    field7: str = ""  # gmt | local
    repeat: str = ""  # keep | new: a repeated reversal's F11 and F7
    omit_fields: tuple[str, ...] = ()  # optional savings-debit fields the bank does not want
    saf_backoff_initial_s: float = 5.0  # wait after a reversal's first failed attempt; doubling
    saf_backoff_max_s: float = 300.0  # the longest wait between attempts
    saf_attempts_max: int = 50  # then the reversal goes to review
    saf_age_max_s: float = 86_400.0  # a reversal not acknowledged this long goes to review
    saf_in_flight_max: int = 8  # reversals sent at once (each on its own schedule)
    saf_ordered: bool = False  # the bank requires order: one at a time, oldest first
    ready_when: str = "any"  # /readyz: any | all of the outbound links signed on, or ignore
    # More banks, each a [[bank.links]] table with these settings (its own port, peers, keys).
    links: tuple[BankConfig, ...] = ()
    connections_max: int = 64
    frame_bytes_max: int = 8192
    idle_timeout_s: float = 600.0  # the bank echoes well within this
    read_timeout_s: float = 30.0  # a frame not complete this long after its first byte: closed
    connections_per_address_max: int = 64
    in_flight_max: int = 64
    write_buffer_bytes_max: int = 262_144
    drain_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class DayendConfig:
    """Day-end (ledger.dayend): the business date closes at `cutover` (HH:MM) in `timezone`
    (empty: the centre's); files go under `out_dir` (empty: $home/dayend)."""

    cutover: str = "23:00"  # before 12:00 it closes the next calendar day's morning
    timezone: str = ""
    out_dir: str = ""
    settle_s: int = 60  # day-end refuses to run sooner after the cut-over (commits in flight)
    file_key_alias: str = "bank/{bank}/FILE"  # each bank's file key, {bank} its id


@dataclass(frozen=True, slots=True)
class HisConfig:
    """The HIS interface's abuse limits (specs/his-api.yaml): the plausibility of a bill
    (`ledger.medical.limits`), how long a bill holds a person's year, login throttling
    (`switch.his_throttle`). The defaults are those classes' own."""

    lines_max: int = 300
    quantity_max: int = 10_000
    unit_price_max_fen: int = 10_000_000
    ceiling_multiple_max: int = 10  # unit price at most this many times the ceiling; 0: off
    level1_total_max_fen: int = 2_000_000  # the bill's total: community clinics, pharmacies
    level2_total_max_fen: int = 20_000_000
    level3_total_max_fen: int = 100_000_000
    open_bills_max: int = 50  # one institution's open bills for one card
    open_bill_ttl_s: float = 7200.0  # an open bill's hold; the POS must settle it within
    bill_ttl_s: float = 86_400.0  # an approved bill's hold, from its submission
    expiry_sweep_s: float = 60.0  # expired bills are released this often; 0: never
    login_id_failures_max: int = 5
    login_address_failures_max: int = 20
    login_window_s: float = 300.0  # this long without a failure forgets the failures
    login_delay_s: float = 1.0  # the first lock, doubled by each further failure
    login_delay_max_s: float = 300.0
    rate_per_s: float = 50.0  # requests a second per institution (switch.his_rate); 0: no limit
    rate_burst: int = 100
    idempotency_retention_s: float = 86_400.0  # Idempotency-Key answers kept this long
    port: int | None = None  # the HIS API's own port (0: any free); unset: on the [http] port
    tls_cert: str = ""  # PEM files: with both, the HIS port speaks HTTPS only
    tls_key: str = ""

    def __post_init__(self) -> None:
        try:
            self.bill_limits(), self.throttle_settings(), self.rate_settings()
            IdempotencySettings(retention_s=self.idempotency_retention_s)
        except ValueError as error:
            raise ConfigError(f"his: {error}") from None
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ConfigError("his.port is from 0 to 65535")
        if bool(self.tls_cert) != bool(self.tls_key) or (self.tls_cert and self.port is None):
            raise ConfigError("his: tls_cert and tls_key go together, with his.port")
        if not 0 < self.open_bill_ttl_s <= self.bill_ttl_s or self.expiry_sweep_s < 0:
            raise ConfigError("his: 0 < open_bill_ttl_s <= bill_ttl_s, expiry_sweep_s >= 0")

    def bill_limits(self) -> BillLimits:
        return BillLimits(
            lines_max=self.lines_max,
            quantity_max=self.quantity_max,
            unit_price_max_fen=self.unit_price_max_fen,
            ceiling_multiple_max=self.ceiling_multiple_max,
            total_max_fen_by_level=(
                self.level1_total_max_fen,
                self.level2_total_max_fen,
                self.level3_total_max_fen,
            ),
            open_bills_max=self.open_bills_max,
        )

    def ttls(self) -> tuple[dt.timedelta, dt.timedelta]:
        """(open bills' hold, approved bills' hold)."""
        seconds = dt.timedelta(seconds=1)
        return self.open_bill_ttl_s * seconds, self.bill_ttl_s * seconds

    def rate_settings(self) -> RateSettings:
        return RateSettings(per_s=self.rate_per_s, burst=self.rate_burst)

    def throttle_settings(self) -> ThrottleSettings:
        return ThrottleSettings(
            id_failures_max=self.login_id_failures_max,
            address_failures_max=self.login_address_failures_max,
            window_s=self.login_window_s,
            delay_s=self.login_delay_s,
            delay_max_s=self.login_delay_max_s,
        )


@dataclass(frozen=True, slots=True)
class Config:
    home: str = DEFAULT_HOME
    database_url: str = ""  # [database] url; empty: sqlite:///$home/medswitch.db
    timezone: str = "Asia/Shanghai"
    terminal: ListenConfig = field(default_factory=ListenConfig)
    sign_on: SignOnConfig = field(default_factory=SignOnConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    hsm: HsmConfig = field(default_factory=HsmConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    dayend: DayendConfig = field(default_factory=DayendConfig)
    his: HisConfig = field(default_factory=HisConfig)
    workers: int = 1  # processes on SO_REUSEPORT (PostgreSQL only)
    log_level: str = "info"  # the daemon's JSON log lines at this level and above
    #: Every terminal and bank frame in and out, masked (`switch.trace`), appended to this file;
    #: empty: none. `medswitch messages decode --trace FILE` reads it back.
    trace_file: str = ""
    #: SQLite: the ledger's writer in a process of its own (`ledger.writer.process`), so that
    #: the event loop has an interpreter lock to itself, when the daemon may use more than one
    #: CPU; false: a thread of the daemon.
    writer_process: bool = True
    response_timeout_s: float = 20.0  # a handler that takes longer is answered 96

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.home_path / 'medswitch.db'}"

    @property
    def postgres(self) -> bool:
        return self.database.startswith(("postgresql://", "postgres://"))

    @property
    def sqlite_path(self) -> Path:
        """The embedded database's file (a SQLite deployment)."""
        return Path(self.database.removeprefix("sqlite:///"))


class Loaded(NamedTuple):
    """A configuration and where each of its settings came from."""

    config: Config
    file: Path | None  # the TOML file read; None: there was none
    sources: Mapping[str, str]  # setting path -> "file PATH" | "env NAME" (absent: default)


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The configuration from ``path`` (if it exists) and ``environ`` overrides."""
    return load_sourced(path, environ).config


def load_sourced(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Loaded:
    """:func:`load`, with the source of every setting that is not its default."""
    environ = os.environ if environ is None else environ
    _unknown_variables(environ)
    home = environ.get("MEDSWITCH_HOME", DEFAULT_HOME)
    path = path or Path(home) / "medswitch.toml"
    data: dict[str, Any] = {"home": home}
    sources: dict[str, str] = {}
    if "MEDSWITCH_HOME" in environ:
        sources["home"] = "env MEDSWITCH_HOME"
    read = path.exists()
    if read:
        try:
            from_file = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: {err}") from None
        except OSError as err:
            raise ConfigError(f"{path}: {err.strerror}") from None
        data.update(from_file)
        for leaf in config_rules.leaves(from_file):
            sources["database_url" if leaf == "database.url" else leaf] = f"file {path}"
    try:
        _database_section(data)
        built = _build(Config, data, "")
    except ConfigError as err:  # the file's (MEDSWITCH_HOME is only a path)
        raise ConfigError(f"{err} (file {path})" if read else str(err)) from None
    config = _override(built, environ, "MEDSWITCH_", sources)
    check(config, sources)
    return Loaded(config, path if read else None, sources)


def check(config: Config, sources: Mapping[str, str] | None = None) -> None:
    """Every setting within its range (`switch.config_rules`), then what no single setting can
    say wrong on its own."""
    for fault in config_rules.faults(config, sources):
        raise ConfigError(fault)
    if config.workers > 1 and not config.postgres:
        raise ConfigError("workers > 1 needs PostgreSQL (database.url): SQLite has one writer")
    links = {f"bank.links[{i}]": link for i, link in enumerate(config.bank.links)}
    for where, section in {"bank": config.bank, **links}.items():
        try:
            dialect_of(section, where)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if section.saf_backoff_initial_s > section.saf_backoff_max_s:
            raise ConfigError(f"{where}: saf_backoff_initial_s <= saf_backoff_max_s")
    if not config.sign_on.per_minute <= config.sign_on.pending_max:
        raise ConfigError(
            "sign_on: per_minute <= pending_max (a set a sign-on issued must outlive the next"
            " minute's sign-ons)"
        )


def _unknown_variables(environ: Mapping[str, str]) -> None:
    """A MEDSWITCH_* variable no setting or command knows is a mistake: refused, with the
    closest valid name."""
    known = set(config_rules.OTHER_VARIABLES)
    for setting in config_rules.settings(Config()):
        known.add(config_rules.env_name(setting.path) or "")
    fault = config_rules.unknown_variable(environ, known)
    if fault:
        raise ConfigError(fault)


def _database_section(data: dict[str, Any]) -> None:
    """``[database] url = ...`` is the setting ``database_url`` (env MEDSWITCH_DATABASE_URL)."""
    section = data.pop("database", None)
    if section is None:
        return
    if not isinstance(section, Mapping):
        raise ConfigError("database must be a table")
    unknown = set(section) - {"url"}
    if unknown:
        raise ConfigError(f"unknown setting database.{sorted(unknown)[0]}")
    if "url" in section:
        data["database_url"] = section["url"]


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        name = sorted(unknown)[0]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f" (did you mean {where}{close[0]}?)" if close else ""
        raise ConfigError(f"unknown setting {where}{name}{hint}")
    values: dict[str, Any] = {}
    for name, raw in data.items():
        values[name] = _convert(hints[name], raw, f"{where}{name}")
    return cls(**values)


def _convert(hint: Any, raw: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a table")
        return _build(hint, raw, f"{where}.")  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin is tuple and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        if not isinstance(raw, list | tuple) or not all(isinstance(r, Mapping) for r in raw):
            raise ConfigError(f"{where} must be a list of tables")
        item = typing.get_args(hint)[0]
        return tuple(_build(item, entry, f"{where}[{i}].") for i, entry in enumerate(raw))
    if origin is tuple:
        if isinstance(raw, str):
            raw = [part for part in raw.split(",") if part]
        if not isinstance(raw, list | tuple) or not all(isinstance(r, str) for r in raw):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(raw)
    if origin in (typing.Union, types.UnionType):
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    value = config_rules.parse(hint, raw)
    if value is None:
        raise ConfigError(f"{where} must be {config_rules.KINDS[hint]}, not {raw!r}")
    return value


def _override(
    config: T, environ: Mapping[str, str], prefix: str, sources: dict[str, str], path: str = ""
) -> T:
    changes: dict[str, Any] = {}
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):  # type: ignore[arg-type]
        key = prefix + item.name.upper()
        current = getattr(config, item.name)
        if dataclasses.is_dataclass(current):
            where = f"{path}{item.name}."
            changes[item.name] = _override(current, environ, key + "_", sources, where)
        elif key in environ:
            changes[item.name] = _convert(hints[item.name], environ[key], key)
            sources[path + item.name] = f"env {key}"
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]
