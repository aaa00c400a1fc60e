r"""Which key may travel under which, in what form: THE key distribution policy (the same table,
row for row, is in specs/key-ceremony.md §Policy; a test compares the two).

A key leaves (or enters) the HSM only by a rule of `POLICY`: its usage is one of the rule's
keys, the key-encryption key it travels under has the rule's KEK usage (none for clear
components), the form is the rule's, and — for rules marked so — the key was generated or
formed *exportable* (TR-31 exportability "E", fixed in its block under the LMK when it was
made). Anything else is refused with a message naming the rule that governs the key.

>>> check(KeyUsage.MK_LOAD, KeyUsage.BUREAU_KEK, Form.TR31).name
'card-masters-to-bureau'
>>> try:
...     check(KeyUsage.MK_LOAD, KeyUsage.ZMK, Form.ECB)
... except PolicyError as refused:
...     print(str(refused).replace("; ", ";\n"))
policy: a MK_LOAD does not travel under a ZMK as ecb;
it travels only by rule card-masters-to-bureau (under a BUREAU_KEK as tr31)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hsm.errors import KeyUsageError
from hsm.keys import KeyUsage

U = KeyUsage


class Form(enum.StrEnum):
    ECB = "ecb"  # 3DES-ECB under the KEK, with its KCV (bank key exchange, sign-on keys)
    TR31 = "tr31"  # a TR-31 version B key block under the KEK (specs/key-ceremony.md)
    COMPONENTS = "components"  # 2-3 clear components with KCVs, one per custodian; no KEK
    NEVER = "never"  # the key never leaves the HSM


class PolicyError(KeyUsageError):
    """A key asked to travel by a path no rule allows (the message names the governing rule)."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    keys: tuple[KeyUsage, ...]
    kek: KeyUsage | None  # None: clear components, or never
    form: Form
    exportable: bool  # the key must have been generated/formed exportable

    def row(self) -> tuple[str, str, str, str, str]:
        """The rule as the spec's table shows it."""
        if self.form is Form.NEVER:
            return (self.name, ", ".join(k.value for k in self.keys), "—", "never", "—")
        return (
            self.name,
            ", ".join(k.value for k in self.keys),
            self.kek.value if self.kek is not None else "—",
            self.form.value,
            "yes" if self.exportable else "no",
        )

    def describe(self) -> str:
        if self.form is Form.NEVER:
            return f"rule {self.name} (never leaves the HSM)"
        if self.kek is None:
            return f"rule {self.name} (as {self.form.value})"
        return f"rule {self.name} (under a {self.kek.value} as {self.form.value})"


CARD_MASTERS = (
    U.MK_LOAD, U.MK_PURCHASE, U.MK_TAC, U.MK_UNLOAD, U.MK_PIN_RELOAD, U.MK_PIN_UNBLOCK,
    U.MK_APP_MAINT, U.MK_RECORD, U.MK_CONTROL, U.DATA_CHECK,
)

POLICY: tuple[Rule, ...] = (
    Rule("zone-keys", (U.ZPK, U.ZAK, U.FILE), U.ZMK, Form.ECB, False),
    Rule("working-keys", (U.PIK, U.MAK, U.TDK), U.TMK, Form.ECB, False),
    Rule("tmk-to-kif", (U.TMK,), U.KIF_KEK, Form.TR31, True),
    Rule("tmk-components", (U.TMK,), None, Form.COMPONENTS, True),
    Rule("card-masters-to-bureau", CARD_MASTERS, U.BUREAU_KEK, Form.TR31, True),
    Rule("batch-key-to-bureau", (U.FILE,), U.BUREAU_KEK, Form.TR31, True),
    Rule("psam-keys-to-issuer", (U.MK_PURCHASE, U.PSAM_TRANSPORT), U.PSAM_KEK, Form.TR31, True),
    Rule(
        "stays-in-hsm",
        (
            U.ZMK, U.KIF_KEK, U.BUREAU_KEK, U.PSAM_KEK, U.PERSONAL_DATA, U.PERSONAL_INDEX,
            U.CARD_SIGN,
        ),
        None,
        Form.NEVER,
        False,
    ),
)

COMPONENTS_MIN, COMPONENTS_MAX = 2, 3


def rules_for(usage: KeyUsage) -> list[Rule]:
    return [rule for rule in POLICY if usage in rule.keys]


def check(usage: KeyUsage, kek: KeyUsage | None, form: Form) -> Rule:
    """The rule letting a key of `usage` travel under a key of usage `kek` (None for
    components) as `form`; PolicyError, naming the governing rules, when there is none."""
    governing = rules_for(usage)
    for rule in governing:
        if rule.form is form and rule.kek is kek and form is not Form.NEVER:
            return rule
    path = f"under a {kek.value} as {form.value}" if kek is not None else f"as {form.value}"
    named = ", ".join(rule.describe() for rule in governing) or "no rule"
    raise PolicyError(f"policy: a {usage.value} does not travel {path}; it travels only by {named}")


def require_exportable(rule: Rule, alias: str, version: int, exportable: bool) -> None:
    if rule.exportable and not exportable:
        raise PolicyError(
            f"policy rule {rule.name}: {alias} v{version} was not generated exportable"
        )
