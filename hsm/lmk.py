"""The local master key and key components (DESIGN §4).

A key is the XOR of 2–9 components held by different custodians; the XOR of an even number of
odd-parity components is even, so the formed key's parity is forced odd. Components and keys are
shown by KCV only; `Component.reveal()` is the one deliberate way out (printed once at a
ceremony).

>>> a = Component(bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
>>> b = Component(bytes.fromhex("10101010101010102323232323232323"))
>>> a
Component(kcv='08D7B4')
>>> combine([a, b]).hex().upper()
'1032547698BADCFEDCFE98BA54761032'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hsm.des import adjust_parity, kcv, xor
from hsm.errors import InvalidInputError, KcvMismatchError, LmkError

COMPONENTS_MIN, COMPONENTS_MAX = 2, 9


class Component:
    """One clear key component. repr/str show the KCV only."""

    __slots__ = ("_value", "kcv")

    def __init__(self, value: bytes) -> None:
        if len(value) not in (8, 16, 24):
            raise InvalidInputError("a component is 8, 16 or 24 bytes")
        self._value = bytes(value)
        self.kcv = kcv(value)

    @classmethod
    def parse(cls, text: str, expected_kcv: str | None = None) -> Component:
        """From hex as a custodian types it (spaces allowed), checked against its KCV."""
        try:
            value = bytes.fromhex("".join(text.split()))
        except ValueError:
            raise InvalidInputError("component is not hex") from None
        component = cls(value)
        if expected_kcv is not None and expected_kcv.strip().upper() != component.kcv:
            raise KcvMismatchError("component does not match its check value")
        return component

    def reveal(self) -> str:
        """The component as hex in groups of 4: only for printing to its custodian."""
        text = self._value.hex().upper()
        return " ".join(text[i : i + 4] for i in range(0, len(text), 4))

    def __repr__(self) -> str:
        return f"Component(kcv={self.kcv!r})"

    __str__ = __repr__


def generate_component(random_bytes: Callable[[int], bytes], length: int = 16) -> Component:
    return Component(adjust_parity(random_bytes(length)))


def combine(components: Sequence[Component], *, minimum: int = 1) -> bytes:
    """XOR the components and force odd parity."""
    if not minimum <= len(components) <= COMPONENTS_MAX:
        raise InvalidInputError(f"need {minimum} to {COMPONENTS_MAX} components")
    if len({len(c._value) for c in components}) != 1:
        raise InvalidInputError("components differ in length")
    value = components[0]._value
    for component in components[1:]:
        value = xor(value, component._value)
    return adjust_parity(value)


# Published components for the demo deployment and tests (DESIGN §4), so simulators and outside
# tools can interoperate with it. TEST ONLY: an LMK formed with `production=True` refuses them.
TEST_ONLY_COMPONENTS = (
    "0123456789ABCDEFFEDCBA9876543210",
    "10101010101010102323232323232323",
)
# The other published TEST ONLY keys (specs/dayend-files.md, "Worked examples"): the demo banks'
# ZMKs and the examples' file key. An HSM whose LMK is not TEST ONLY refuses to form a key from
# any of these components or to store any of these keys (`SoftHsm.form_key`, `KeyCache.put`).
TEST_ONLY_KEY_COMPONENTS = {
    "zmk b1": ("4A7C1F3D5B2F6D089E3B7A5D1C6E2F4A", "B5E3C1A7F8D3E5C7837A5B9D1F2F4C6B"),
    "zmk b2": ("2C4F6B8AADCEE0F13B5D7F9EA1C2E5F7", "D3B0F7E5C8A8E6F4C2A1E5D6B9F1A2C4"),
    "file key": ("5D8F2A4C6E1A3E7968E5C2A1B3D5F7E9", "9B2C4F6E8A1C3E5B7C9E2A4C6E8A1C3E"),
}
_PUBLISHED = (TEST_ONLY_COMPONENTS, *TEST_ONLY_KEY_COMPONENTS.values())
TEST_ONLY_KCVS = frozenset(kcv(bytes.fromhex(c)) for parts in _PUBLISHED for c in parts)
TEST_ONLY_KEYS = frozenset(
    adjust_parity(xor(*(bytes.fromhex(c) for c in parts))) for parts in _PUBLISHED
)
TEST_ONLY_LMK_KCV = kcv(
    adjust_parity(xor(*(bytes.fromhex(c) for c in TEST_ONLY_COMPONENTS)))
)


def is_test_only(components: Sequence[Component]) -> bool:
    """True when any component is a published test component.

    >>> is_test_only([Component.parse(TEST_ONLY_KEY_COMPONENTS["zmk b1"][0])])
    True
    """
    return any(c.kcv in TEST_ONLY_KCVS for c in components)


def refuse_test_only_key(lmk: Lmk, alias: str, key: bytes) -> None:
    """A published TEST ONLY key is stored only under the TEST ONLY LMK (the demo's): under any
    other LMK — a production estate's — it protects nothing and is refused."""
    if not lmk.test_only and adjust_parity(key) in TEST_ONLY_KEYS:
        raise InvalidInputError(
            f"{alias}: a published TEST ONLY key (KCV {kcv(key)}) is refused: this HSM's LMK "
            "is not TEST ONLY"
        )


class Lmk:
    """The local master key, in memory only. Formed from components; shown by KCV."""

    __slots__ = ("_key", "kcv", "test_only")

    def __init__(
        self, components: Sequence[Component], expected_kcv: str, *, production: bool = False
    ) -> None:
        self.test_only = is_test_only(components)
        if production and self.test_only:
            raise LmkError("TEST ONLY components are refused in production")
        if not COMPONENTS_MIN <= len(components) <= COMPONENTS_MAX:
            raise LmkError(f"the LMK needs {COMPONENTS_MIN} to {COMPONENTS_MAX} components")
        key = combine(components, minimum=COMPONENTS_MIN)
        if len(key) != 16:
            raise LmkError("the LMK is a double-length (16-byte) key")
        if kcv(key) != expected_kcv.strip().upper():
            raise LmkError("formed LMK does not match the configured check value")
        self._key = bytearray(key)
        self.kcv = kcv(key)

    def key_bytes(self) -> bytes:
        if not any(self._key):
            raise LmkError("the LMK has been erased")
        return bytes(self._key)

    def erase(self) -> None:
        for i in range(len(self._key)):
            self._key[i] = 0

    def __repr__(self) -> str:
        return f"Lmk(kcv={self.kcv!r}{', TEST ONLY' if self.test_only else ''})"

    __str__ = __repr__
