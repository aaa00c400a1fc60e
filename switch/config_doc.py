"""The configuration for people: ``medswitch config show`` (each effective value and where it
came from, secrets redacted) and ``specs/configuration.md`` (every setting, its default, range
and variable), both made from the configuration classes themselves, so neither can drift from
the code: a setting's meaning is the comment beside it (or the ``#:`` lines above it) in
`switch.config`, its range the rule `switch.config_rules` finds for it.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import tokenize
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from switch import config_rules
from switch.config import Config, Loaded
from switch.config_rules import OTHER_VARIABLES

#: Meanings of settings that have no comment in `switch.config` (kept here rather than there so
#: that the classes other work adds settings to change as little as possible).
MEANINGS: Mapping[str, str] = {
    "home": "the deployment's directory: medswitch.toml, keys.jsonl, the SQLite database",
    "timezone": "the centre's time zone (business dates, statements, people's times)",
    "terminal.host": "the address the POS terminal listener binds",
    "terminal.port": "the POS terminal listener's TCP port",
    "terminal.connections_max": "connections open at once; more are refused",
    "terminal.frame_bytes_max": "a longer frame closes the connection",
    "sign_on.per_minute": "sign-ons one terminal may make in any 60 s (more are answered 65)",
    "sign_on.pending_max": "key sets kept per terminal; at least per_minute",
    "http.host": "the address the HTTP port binds",
    "http.connections_max": "connections open at once; more are refused",
    "http.connections_per_address_max": "from one IP address",
    "hsm.host": "the network HSM's address (backend network)",
    "hsm.port": "the network HSM's TCP port",
    "hsm.timeout_s": "an HSM command unanswered this long fails",
    "bank.enabled": "serve the bank's inbound link",
    "bank.host": "the address the inbound bank link binds",
    "bank.port": "the inbound bank link's TCP port",
    "bank.outbound_port": "the bank's port for the outbound link",
    "bank.outbound_zak_alias": "the outbound link's MAC key",
    "bank.outbound_zpk_alias": "the outbound link's PIN key",
    "bank.connections_max": "connections open at once; more are refused",
    "bank.frame_bytes_max": "a longer frame closes the connection",
    "bank.connections_per_address_max": "from one IP address",
    "bank.in_flight_max": "requests handled at once for one connection; then reading pauses",
    "bank.write_buffer_bytes_max": "replies not yet taken by the peer; then reading pauses",
    "bank.drain_timeout_s": "at SIGTERM: the longest wait for accepted requests' replies",
    "dayend.timezone": "the business date's time zone; empty: `timezone`",
    "dayend.out_dir": "where day-end files go; empty: $home/dayend",
    "his.lines_max": "lines in one bill",
    "his.quantity_max": "one line's quantity",
    "his.unit_price_max_fen": "one line's unit price, in fen",
    "his.level2_total_max_fen": "a bill's total at district hospitals, in fen",
    "his.level3_total_max_fen": "a bill's total at city hospitals, in fen",
    "his.login_id_failures_max": "failed logins for one id before it is locked",
    "his.login_address_failures_max": "failed logins from one address before it is locked",
    "his.login_delay_max_s": "the longest lock",
    "his.rate_burst": "requests one institution may send at once beyond rate_per_s",
    "his.tls_key": "the HIS port's PEM private key (with tls_cert)",
}


def descriptions() -> dict[type, dict[str, str]]:
    """Each configuration class's fields' comments, by class and field name."""
    found: dict[type, dict[str, str]] = {}
    for cls in _classes(Config):
        found[cls] = _field_comments(inspect.getsource(cls))
    return found


def _classes(cls: type) -> Iterator[type]:
    yield cls
    for hint in typing.get_type_hints(cls).values():
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
        if dataclasses.is_dataclass(inner) and inner is not cls and isinstance(inner, type):
            yield from _classes(inner)


def _field_comments(source: str) -> dict[str, str]:
    """``name: type = default  # comment`` and ``#:`` / ``#`` lines just above a field."""
    comments: dict[str, str] = {}
    above: list[str] = []
    line_tokens: list[tokenize.TokenInfo] = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and not line_tokens:
            above.append(token.string.lstrip("#:").strip())
            continue
        if token.type in (tokenize.NL, tokenize.NEWLINE):
            _field_line(line_tokens, above, comments)
            if line_tokens:
                above = []
            line_tokens = []
            continue
        if token.type not in (tokenize.INDENT, tokenize.DEDENT):
            line_tokens.append(token)
    return comments


def _field_line(
    tokens: list[tokenize.TokenInfo], above: list[str], comments: dict[str, str]
) -> None:
    if len(tokens) < 2 or tokens[0].type != tokenize.NAME or tokens[1].string != ":":
        return
    if tokens[0].start[1] != 4:  # a class body's field, not a method's line
        return
    trailing = [t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT]
    text = " ".join([*above, *trailing]).strip()
    if text:
        comments[tokens[0].string] = text


def _value(value: Any) -> str:
    """A value as TOML writes it (strings quoted, lists bracketed, true/false)."""
    if isinstance(value, tuple):
        value = list(value)
    return "unset" if value is None else json.dumps(value, ensure_ascii=False)


def show(loaded: Loaded) -> list[str]:
    """One line per setting: ``path = value  # source`` (default, file PATH, env NAME)."""
    rows = []
    for setting in config_rules.settings(loaded.config):
        value = _value(config_rules.redact(setting.path, setting.value))
        rows.append((f"{setting.path} = {value}", loaded.sources.get(setting.path, "default")))
    width = max(len(left) for left, _ in rows)
    return [f"{left.ljust(width)}  # {source}" for left, source in rows]


def reference() -> str:
    """specs/configuration.md (``medswitch config reference`` prints it)."""
    notes = descriptions()
    out = [
        "# Configuration",
        "",
        "Generated by `medswitch config reference` from the configuration classes"
        " (`switch/config.py`) and their rules (`switch/config_rules.py`);"
        " `tests/switch/test_config_check.py` fails when this file and the code differ.",
        "",
        "The daemon and every command read `$MEDSWITCH_HOME/medswitch.toml` (or `--config FILE`),"
        " then the environment: each setting's variable overrides the file. A value out of its"
        " range, a wrong type (`ture` is not a boolean), an unknown setting in the file and an"
        " unknown `MEDSWITCH_*` variable are refused at start with one line naming the setting"
        " and where it came from. `medswitch config check [FILE]` checks a configuration;"
        " `medswitch config show` prints every effective value with its source, secrets"
        " redacted (a URL's password, settings named *password*, *secret*, *token*).",
        "",
        "A `[[bank.links]]` entry (one more bank) takes the settings of `[bank]`"
        " (except `links`), with the same ranges; those have no variables.",
        "",
    ]
    sections: dict[str, list[str]] = {}  # in the order of their first setting
    for setting in config_rules.settings(Config(), notes):
        head, _, name = setting.path.rpartition(".")
        rule = config_rules.rule_for(setting)
        cells = (
            f"`{name}`",
            f"`{config_rules.env_name(setting.path)}`",
            _type_name(setting.hint),
            f"`{_value(setting.default)}`",
            rule.text if rule else "?",
            (setting.description or MEANINGS.get(setting.path, "")).replace("|", "\\|"),
        )
        sections.setdefault(head, []).append("| " + " | ".join(cells) + " |")
    for head, rows in sections.items():
        out += ["", f"## [{head}]" if head else "## Top level", ""]
        out += [
            "| setting | variable | type | default | range | meaning |",
            "|---|---|---|---|---|---|",
        ]
        out += rows
    out += ["", "## Other variables", "", "| variable | meaning |", "|---|---|"]
    out += [f"| `{name}` | {text} |" for name, text in sorted(OTHER_VARIABLES.items())]
    return "\n".join(out) + "\n"


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "list of strings"
    plain = config_rules.plain_type(hint)
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return names.get(plain, str(plain)) + ("" if plain is hint else ", optional")


def sources_summary(loaded: Loaded) -> str:
    """ "N from FILE, M from the environment"."""
    counts: Mapping[bool, int] = {
        True: sum(1 for s in loaded.sources.values() if s.startswith("env ")),
        False: sum(1 for s in loaded.sources.values() if s.startswith("file ")),
    }
    where = f"{counts[False]} from {loaded.file}" if loaded.file else "no file"
    return f"{where}, {counts[True]} from the environment"
