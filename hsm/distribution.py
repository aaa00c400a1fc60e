"""Keys leaving and entering the HSM for outside parties (specs/key-ceremony.md), every path
checked against `hsm.policy`: TR-31 blocks under a transport key, and a TMK split into clear
components for a key-loading device. Used by `SoftHsm`; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from hsm import keyblock, policy
from hsm.des import adjust_parity, xor
from hsm.errors import InvalidInputError, KeyUsageError
from hsm.keycache import KeyCache
from hsm.keys import KeyRef
from hsm.lmk import Component
from hsm.policy import Form


async def export_block(keys: KeyCache, key: KeyRef, kek: KeyRef) -> str:
    """KEY as a TR-31 block under the transport key KEK, if the policy lets it travel so."""
    rule = policy.check(key.usage, kek.usage, Form.TR31)
    policy.require_exportable(rule, key.alias, key.version, await keys.exportable(key))
    wrapping = await keys.load(kek)
    loaded = await keys.load(key)
    return keyblock.wrap_transport(wrapping.key, loaded.ref, loaded.key)


async def import_block(
    keys: KeyCache, kek: KeyRef, block: str, now: datetime, alias: str | None = None
) -> KeyRef:
    """A key received as a TR-31 block under KEK, stored under its own alias (or `alias`)
    as the next version. The block's bound usage must travel under KEK by the policy."""
    wrapping = await keys.load(kek)
    received = keyblock.unwrap_transport(wrapping.key, block)
    policy.check(received.ref.usage, kek.usage, Form.TR31)
    return await keys.put(alias or received.ref.alias, received.ref.usage, received.key, now)


async def export_components(
    keys: KeyCache, key: KeyRef, count: int, random_bytes: Callable[[int], bytes]
) -> list[Component]:
    """KEY split into `count` clear components (random, odd parity; the last makes the XOR
    the key) for custodians to carry to a key-loading device, if the policy allows it."""
    rule = policy.check(key.usage, None, Form.COMPONENTS)
    if not policy.COMPONENTS_MIN <= count <= policy.COMPONENTS_MAX:
        raise InvalidInputError(
            f"policy rule {rule.name}: {policy.COMPONENTS_MIN} to {policy.COMPONENTS_MAX}"
            " components"
        )
    policy.require_exportable(rule, key.alias, key.version, await keys.exportable(key))
    loaded = await keys.load(key)
    parts = [adjust_parity(random_bytes(len(loaded.key))) for _ in range(count - 1)]
    last = loaded.key
    for part in parts:
        last = xor(last, part)
    # Every component odd parity, as key-loading devices expect: the XOR of all then differs
    # from the key in parity bits only, which forming (`hsm.lmk.combine`) sets odd again.
    components = [Component(p) for p in parts] + [Component(adjust_parity(last))]
    if len({c.kcv for c in components}) != count:
        raise KeyUsageError("components repeat: generate again")
    return components
