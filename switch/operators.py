"""Operators: who acts in back-office, estate and key commands, with roles, a memory-hard
password hash and short-lived login tokens (issue 19).

Roles: ``maker`` proposes and changes (day-end runs, adjustments, estate changes), ``checker``
approves what another operator made, ``auditor`` reads, ``key_custodian`` holds key components
at ceremonies, ``admin`` enrols operators. Passwords are hashed with scrypt (hashlib; N=2^14,
r=8, p=1: 16 MiB and about 50 ms a check) under a random salt; ``operators login`` checks one
and issues a random token, of which the database keeps only the SHA-256, valid for hours. A
command authenticates by that token (a file: `switch.cli.auth`) and maker-checker compares the
operators so authenticated — never a name typed on the command line.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ledger import schema
from switch.estate.common import audit, changing, now_us

OPS = schema.operators
TOKENS = schema.operator_tokens
ROLES = ("admin", "maker", "checker", "auditor", "key_custodian")
PASSWORD_CHARS_MIN = 8
TOKEN_TTL_S_MAX = 12 * 3600
VALID_NAME = re.compile(r"[a-z][a-z0-9_.-]{1,39}")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AuthError(PermissionError):
    """Not authenticated, or not allowed: one line naming what is missing (never a secret)."""


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    roles: tuple[str, ...]
    status: str

    def has(self, role: str) -> bool:
        return role in self.roles

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "roles": list(self.roles), "status": self.status}


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (hex)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT, dklen=32)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(stored: str, password: str) -> bool:
    """Whether `password` is the one `stored` was made from (scrypt, constant-time compare).

    >>> verify_password(hash_password("correct horse"), "correct horse")
    True
    """
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        found = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                               p=int(p), dklen=len(digest) // 2, maxmem=2**26)
    except ValueError:
        return False
    return hmac.compare_digest(found.hex(), digest)


def check_roles(roles: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        raise AuthError(f"roles are one or more of {', '.join(ROLES)}")
    return tuple(sorted(set(roles)))


def check_password_rule(password: str) -> None:
    if len(password) < PASSWORD_CHARS_MIN:
        raise AuthError(f"a password has at least {PASSWORD_CHARS_MIN} characters")


def _operator(row: Any) -> Operator:
    return Operator(row[0], tuple(role for role in row[1].split(",") if role), row[2])


def _get(connection: Any, name: str) -> Operator | None:
    row = connection.execute(
        sa.select(OPS.c.name, OPS.c.roles, OPS.c.status).where(OPS.c.name == name)
    ).first()
    return None if row is None else _operator(row)


def has_operators(engine: Any) -> bool:
    with engine.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(OPS)).scalar_one()
    return int(count) > 0


def add_operator(
    engine: Any, actor: Operator | None, name: str, roles: tuple[str, ...], password: str
) -> Operator:
    """A new operator; ``actor`` an ``admin`` — or None for the very first operator (who must
    then be an admin): the deployment's bootstrap."""
    if not VALID_NAME.fullmatch(name):
        raise AuthError("an operator's name is 2 to 40 of a-z 0-9 _ . - (a letter first)")
    roles = check_roles(roles)
    check_password_rule(password)
    with changing(engine) as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(OPS)).scalar_one()
        if actor is None and count:
            raise AuthError("operators exist: an admin adds operators (operators login)")
        if actor is None and "admin" not in roles:
            raise AuthError("the first operator is an admin (--role admin)")
        if actor is not None:
            require(actor, "admin")
        if _get(connection, name) is not None:
            raise AuthError(f"operator {name} exists")
        at = now_us()
        connection.execute(sa.insert(OPS).values(
            name=name, roles=",".join(roles), password_hash=hash_password(password),
            status="active", created_at_us=at, created_by=actor.name if actor else name,
            password_changed_at_us=at,
        ))
        audit(connection, actor.name if actor else name, "operators.add", name,
              {"roles": list(roles), "bootstrap": actor is None})
        return Operator(name, roles, "active")


def list_operators(engine: Any) -> list[Operator]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(OPS.c.name, OPS.c.roles, OPS.c.status).order_by(OPS.c.name)
        )
        return [_operator(row) for row in rows]


def set_status(engine: Any, actor: Operator, name: str, status: str) -> Operator:
    """``disabled``: every token of the operator stops working at once; or ``active``."""
    require(actor, "admin")
    if name == actor.name and status != "active":
        raise AuthError("an operator does not disable themself")
    with changing(engine) as connection:
        found = _get(connection, name)
        if found is None:
            raise AuthError(f"no operator {name}")
        if found.status == status:
            raise AuthError(f"operator {name} is already {status}")
        connection.execute(sa.update(OPS).where(OPS.c.name == name).values(status=status))
        if status != "active":
            connection.execute(sa.delete(TOKENS).where(TOKENS.c.operator == name))
        audit(connection, actor.name, f"operators.{'enable' if status == 'active' else 'disable'}",
              name, {})
        return Operator(found.name, found.roles, status)


def change_password(
    engine: Any, actor: Operator, name: str, password: str, current: str | None = None
) -> None:
    """One's own password (``current`` checked), or another's by an admin. Tokens issued
    before stop working."""
    check_password_rule(password)
    if name != actor.name:
        require(actor, "admin")
    with changing(engine) as connection:
        row = connection.execute(sa.select(OPS.c.password_hash).where(OPS.c.name == name)).first()
        if row is None:
            raise AuthError(f"no operator {name}")
        if name == actor.name and not verify_password(row[0], current or ""):
            raise AuthError("the current password is wrong")
        connection.execute(sa.update(OPS).where(OPS.c.name == name).values(
            password_hash=hash_password(password), password_changed_at_us=now_us()))
        connection.execute(sa.delete(TOKENS).where(TOKENS.c.operator == name))
        audit(connection, actor.name, "operators.passwd", name, {})


def login(engine: Any, name: str, password: str, ttl_s: int) -> tuple[Operator, str]:
    """The operator and a new token (returned once; the database keeps its SHA-256). A wrong
    name or password is one answer, and audited."""
    if not 60 <= ttl_s <= TOKEN_TTL_S_MAX:
        raise AuthError(f"a login lasts 1 minute to {TOKEN_TTL_S_MAX // 3600} hours")
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(OPS.c.name, OPS.c.roles, OPS.c.status, OPS.c.password_hash)
            .where(OPS.c.name == name)
        ).first()
    if row is None or row[2] != "active" or not verify_password(row[3], password):
        with changing(engine) as connection:  # the refusal is kept
            audit(connection, name[:40], "operators.login-refused", name[:40], {})
        raise AuthError("wrong operator name or password, or the operator is disabled")
    with changing(engine) as connection:
        token = secrets.token_hex(32)
        at = now_us()
        connection.execute(sa.delete(TOKENS).where(TOKENS.c.expires_at_us < at))
        connection.execute(sa.insert(TOKENS).values(
            token_hash=_token_hash(token), operator=name, issued_at_us=at,
            expires_at_us=at + ttl_s * 1_000_000,
        ))
        audit(connection, name, "operators.login", name, {"ttl_s": ttl_s})
        return _operator(row), token


def logout(engine: Any, token: str) -> None:
    with changing(engine) as connection:
        connection.execute(sa.delete(TOKENS).where(TOKENS.c.token_hash == _token_hash(token)))


def operator_of_token(engine: Any, token: str) -> Operator:
    """The active operator the token was issued to, while it is valid."""
    with engine.connect() as connection:
        row = connection.execute(
            sa.select(OPS.c.name, OPS.c.roles, OPS.c.status, TOKENS.c.expires_at_us)
            .select_from(TOKENS.join(OPS, OPS.c.name == TOKENS.c.operator))
            .where(TOKENS.c.token_hash == _token_hash(token))
        ).first()
    if row is None or row[3] < now_us():
        raise AuthError("the login token is unknown or expired: medswitch operators login NAME")
    if row[2] != "active":
        raise AuthError(f"operator {row[0]} is disabled")
    return _operator(row)


def operator_of_bearer(engine: Any, authorization: str, role: str | None) -> Operator:
    """The operator an HTTP request's ``Authorization: Bearer TOKEN`` names (with ``role``,
    when given): the daemon's internal endpoints (the admin API, a bank link's key change)."""
    if not authorization.startswith("Bearer "):
        raise AuthError("an operator's login token is required (Bearer)")
    operator = operator_of_token(engine, authorization.removeprefix("Bearer "))
    return operator if role is None else require(operator, role)


def http_status(error: AuthError) -> int:
    """403 for an operator without the role, else 401."""
    return 403 if "lacks the role" in str(error) else 401


def require(operator: Operator, role: str) -> Operator:
    if not operator.has(role):
        raise AuthError(f"operator {operator.name} lacks the role {role}")
    return operator


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()
