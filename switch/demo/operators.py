"""The demo's operators, TEST ONLY: one per role, each password its name followed by
``-password`` (README, "Operators"). Enrolled when a demo deployment is made (`medswitch run`,
`medswitch demo init`) and only when the database has no operators yet — a deployment enrols
its own (`medswitch operators add`)."""

from __future__ import annotations

from typing import Any

from switch.operators import Operator, add_operator, has_operators

#: name → roles
DEMO_OPERATORS: dict[str, tuple[str, ...]] = {
    "demo-admin": ("admin",),
    "demo-maker": ("maker",),
    "demo-checker": ("checker",),
    "demo-auditor": ("auditor",),
    "demo-custodian": ("key_custodian",),
}


def demo_password(name: str) -> str:
    """TEST ONLY: published in the README."""
    return f"{name}-password"


def enrol_demo_operators(engine: Any) -> list[str]:
    """The demo operators' names, when enrolled now; none when the database has operators."""
    if has_operators(engine):
        return []
    admin: Operator | None = None
    for name, roles in DEMO_OPERATORS.items():
        added = add_operator(engine, admin, name, roles, demo_password(name))
        admin = admin or added
    return list(DEMO_OPERATORS)
