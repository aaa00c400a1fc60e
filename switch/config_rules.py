"""What each setting may be: one table of rules, checked when the configuration is loaded.

A rule is found for a setting by its path (``terminal.port``; a ``[[bank.links]]`` entry's
settings are ``bank``'s), else by the end of its name — the house's names say what a number is
(``…_port`` a TCP port, ``…_s`` a duration, ``…_max`` a bound), so that a setting added under
such a name is range-checked without a line here — else by its type (text, true/false, lists
take any value). A number without a rule is an error of the table
(``tests/switch/test_config_check.py`` checks every setting has one), and
``specs/configuration.md`` states each setting's rule as :attr:`Rule.text` says it.

The module knows no configuration class: it walks any frozen dataclass (`switch.config`); the
bank dialect settings take their values from `switch.bank.dialect`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from switch.bank import dialect

ENV_PREFIX = "MEDSWITCH_"


class Rule(NamedTuple):
    text: str  # as specs/configuration.md states the range
    fault: Callable[[Any], str | None]  # what is wrong with a value ("must be ..."); None: fine


def between(low: float, high: float, note: str = "") -> Rule:
    def fault(value: float) -> str | None:
        return None if low <= value <= high else f"must be {low}–{high}"

    return Rule(f"{low}–{high}{note}", fault)


def at_least(low: float, note: str = "") -> Rule:
    def fault(value: float) -> str | None:
        return None if value >= low else f"must be at least {low}"

    return Rule(f"≥ {low}{note}", fault)


def above(low: float) -> Rule:
    def fault(value: float) -> str | None:
        return None if value > low and math.isfinite(value) else f"must be above {low}"

    return Rule(f"> {low}", fault)


def one_of(*choices: str, empty: str = "") -> Rule:
    """One of ``choices`` — or also "" when ``empty`` says what "" means; a typo is answered
    with the closest choice."""

    def fault(value: str) -> str | None:
        if value in choices or (empty and value == ""):
            return None
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"must be one of {', '.join(choices)}{hint}"

    text = ", ".join(choices)
    return Rule(f"{text}; empty: {empty}" if empty else text, fault)


def fields_among(numbers: Iterable[int]) -> Rule:
    """A list of ISO 8583 field numbers (``F12`` or ``12``), each one of ``numbers``."""
    allowed = sorted(numbers)
    names = ", ".join(f"F{n}" for n in allowed)

    def fault(values: tuple[str, ...]) -> str | None:
        given = [v.upper().removeprefix("F") for v in values]
        good = all(g.isdigit() and int(g) in allowed for g in given)
        return None if good else f"must each be one of {names}"

    return Rule(f"each one of {names}; empty: none", fault)


def _clock(value: str) -> str | None:
    hours, colon, minutes = value.partition(":")
    good = (
        colon
        and len(hours) == len(minutes) == 2
        and hours.isdigit()
        and minutes.isdigit()
        and int(hours) < 24
        and int(minutes) < 60
    )
    return None if good else "must be HH:MM (00:00–23:59)"


def _zone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return "must be an IANA time zone such as Asia/Shanghai"
    return None


def _database_url(value: str) -> str | None:
    prefixes = ("sqlite:///", "postgresql://", "postgres://")
    return (
        None
        if not value or value.startswith(prefixes)
        else "must be sqlite:///FILE or postgresql://..."
    )


ANY = Rule("any", lambda value: None)
PORT = between(0, 65535, " (0: a free port the system picks)")
ZONE = Rule("an IANA time zone", _zone)
ZONE_OR_EMPTY = Rule("an IANA time zone; empty: `timezone`", lambda v: v and _zone(v))
CLOCK = Rule("HH:MM", _clock)

#: Settings whose rule their name's end does not say (paths as in medswitch.toml).
BY_PATH: Mapping[str, Rule] = {
    "database_url": Rule(
        "sqlite:///FILE or postgresql://...; empty: the home's SQLite file", _database_url
    ),
    "timezone": ZONE,
    "log_level": one_of("debug", "info", "warning", "error"),
    "workers": between(1, 64),
    "sign_on.per_minute": between(1, 100),
    "sign_on.pending_max": between(1, 100),
    "http.worker_metrics_port": between(0, 65535, " (0: none)"),
    "hsm.backend": one_of("soft", "network"),
    "offline.age_max_h": between(1, 24 * 365),
    "bank.outbound_connections": between(1, 64),
    "bank.key_change_interval_s": at_least(0, " (0: never)"),
    "bank.key_overlap_s": at_least(0),
    "bank.ready_when": one_of("any", "all", "ignore"),
    "bank.dialect": one_of(*dialect.PRESETS),
    **{
        f"bank.{name}": one_of(*choices, empty="the preset's")
        for name, choices in dialect.CHOICES.items()
    },
    "bank.omit_fields": fields_among(dialect.OPTIONAL_FIELDS),
    "dayend.cutover": CLOCK,
    "dayend.timezone": ZONE_OR_EMPTY,
    "dayend.settle_s": at_least(0),
    "his.ceiling_multiple_max": at_least(0, " (0: off)"),
    "his.expiry_sweep_s": at_least(0, " (0: never)"),
    "his.rate_per_s": at_least(0, " (0: no limit)"),
    "his.rate_burst": at_least(1),
}

#: By the end of a setting's name, first match wins.
BY_SUFFIX: tuple[tuple[str, Rule], ...] = (
    ("port", PORT),
    ("_max_fen", at_least(1)),
    ("_fen", at_least(0)),
    ("_max", at_least(1)),
    ("_s", above(0)),
)

#: What a name or value must not be printed as (``config show``): the value is redacted.
SECRET_WORDS = ("password", "secret", "token", "passphrase")


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _bool(raw: object) -> bool | None:
    """Strict: a TOML boolean or one of the words above (``ture`` is refused, not false)."""
    if isinstance(raw, bool):
        return raw
    word = raw.strip().lower() if isinstance(raw, str) else None
    return True if word in _TRUE else False if word in _FALSE else None


def _int(raw: object) -> int | None:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip().replace("_", ""))
        except ValueError:
            return None
    return None


def _float(raw: object) -> float | None:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def _str(raw: object) -> str | None:
    return raw if isinstance(raw, str) else None


SCALARS: Mapping[Any, Callable[[object], Any]] = {bool: _bool, int: _int, float: _float, str: _str}
KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def parse(hint: Any, raw: object) -> Any:
    """``raw`` (a TOML value or an environment variable's text) as a ``hint`` (bool, int,
    float, str); ``None``: it is not one."""
    return SCALARS[hint](raw)


#: The MEDSWITCH_* variables that are not settings: commands' options and the tests' own.
OTHER_VARIABLES: Mapping[str, str] = {
    "MEDSWITCH_DB": "a SQLite file instead of the configured database (back-office commands)",
    "MEDSWITCH_OPERATOR": "the operator's name for day-end and reconciliation commands",
    "MEDSWITCH_OPERATOR_TOKEN_FILE": "an operator's login token file (operator logins)",
    "MEDSWITCH_REVIEW_DOUBT_AGE": "`medswitch review sweep --age`: the age for review",
    "MEDSWITCH_HIS_TOKEN": "`medswitch sim his`: an institution's HIS token",
    "MEDSWITCH_PCSC_UNAVAILABLE": "tests: why the PC/SC reader tests may skip",
    "MEDSWITCH_TEST_PG_DSN": "tests: the PostgreSQL server they use",
    "MEDSWITCH_BENCH_PG_DSN": "benchmarks: the PostgreSQL server they use",
}


def unknown_variable(environ: Mapping[str, str], known: set[str]) -> str | None:
    """The first MEDSWITCH_* variable of ``environ`` not in ``known``, said with the closest
    known name; ``None``: there is none."""
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            return f"unknown variable {name}" + (f" (did you mean {close[0]}?)" if close else "")
    return None


def leaves(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The setting paths a TOML document sets (its tables flattened, list entries indexed)."""
    paths = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            paths += leaves(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for index, entry in enumerate(value):
                paths += leaves(entry, f"{prefix}{key}[{index}].")
        else:
            paths.append(prefix + key)
    return paths


class Setting(NamedTuple):
    path: str  # "terminal.port", "bank.links[0].port"
    rule_path: str  # "terminal.port", "bank.port": the table's key
    hint: Any  # the field's type
    value: Any
    default: Any
    description: str  # the field's comment in its class, or ""


def rule_for(setting: Setting) -> Rule | None:
    """The setting's rule; ``None``: a number the table does not cover (unchecked: a test
    fails until the table covers it)."""
    if setting.rule_path in BY_PATH:
        return BY_PATH[setting.rule_path]
    name = setting.rule_path.rpartition(".")[2]
    if plain_type(setting.hint) in (int, float):
        return next((rule for end, rule in BY_SUFFIX if name.endswith(end)), None)
    return ANY


def env_name(path: str) -> str | None:
    """The variable that overrides a setting; ``None`` for a ``[[bank.links]]`` entry's."""
    if "[" in path:
        return None
    return ENV_PREFIX + path.upper().replace(".", "_")


def settings(config: object, descriptions: Mapping[type, Mapping[str, str]] | None = None,
             prefix: str = "", rule_prefix: str = "") -> Iterator[Setting]:  # fmt: skip
    """Every setting of ``config`` (a dataclass), nested sections flattened, in field order."""
    cls = type(config)
    hints = typing.get_type_hints(cls)
    notes = (descriptions or {}).get(cls, {})
    for item in dataclasses.fields(config):  # type: ignore[arg-type]
        value, hint = getattr(config, item.name), hints[item.name]
        path, rule_path = prefix + item.name, rule_prefix + item.name
        if dataclasses.is_dataclass(value):
            yield from settings(value, descriptions, path + ".", rule_path + ".")
            continue
        if _is_table_list(hint):
            for index, entry in enumerate(value):
                yield from settings(entry, descriptions, f"{path}[{index}].", rule_prefix)
            continue
        default = item.default_factory() if callable(item.default_factory) else item.default
        yield Setting(path, rule_path, hint, value, default, notes.get(item.name, ""))


def plain_type(hint: Any) -> Any:
    """``int`` of ``int | None``; any other hint as it is."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if type(None) in typing.get_args(hint) and len(args) == 1:
        return args[0]
    return hint


def _is_table_list(hint: Any) -> bool:
    args = typing.get_args(hint)
    return typing.get_origin(hint) is tuple and bool(args) and dataclasses.is_dataclass(args[0])


def faults(config: object, sources: Mapping[str, str] | None = None) -> Iterator[str]:
    """Each setting that breaks its rule, as a one-line message naming it and where it came
    from (``sources``: path → "file …" | "env …")."""
    for setting in settings(config):
        rule = rule_for(setting)
        if rule is None or setting.value is None:  # None: an optional setting left unset
            continue
        fault = rule.fault(setting.value)
        if fault:
            where = (sources or {}).get(setting.path, "")
            yield (
                f"{setting.path} {fault}, not {setting.value!r}" + (f" ({where})" if where else "")
            )


def redact(path: str, value: Any) -> Any:
    """``value`` as ``config show`` may print it: secrets replaced, a URL's password hidden."""
    if not isinstance(value, str) or not value:
        return value
    name = path.rpartition(".")[2].lower()
    if any(word in name for word in SECRET_WORDS):
        return "***"
    scheme, sep, rest = value.partition("://")
    if sep and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user, colon, _password = credentials.partition(":")
        if colon:
            return f"{scheme}://{user}:***@{host}"
    return value
