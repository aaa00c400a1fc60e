"""HSM exceptions. Messages name keys by alias/version/usage only, never by value.

A failed verification (MAC, MAC1, TAC ...) is a value, not an exception: these classes are for
misuse (wrong key usage, malformed input) and for an untrustworthy key store (tampering).
"""

from __future__ import annotations


class HsmError(Exception):
    """Base class of every error raised by hsm/ (safe to log: no key material)."""

    code = "15"  # payShield-style error code used on the network form


class InvalidInputError(HsmError, ValueError):
    """Input data of the wrong length or format."""

    code = "15"


class KeyNotFoundError(HsmError, LookupError):
    """No key with that alias and version in the key store."""

    code = "A3"


class KeyExistsError(HsmError):
    """A key with that alias and version is already stored (keys are immutable)."""

    code = "A4"


class KeyUsageError(HsmError):
    """The key's usage does not allow this operation (e.g. a load key asked for a purchase)."""

    code = "A7"


class KeyTamperedError(HsmError):
    """A stored key block failed its integrity check or disagrees with its index record."""

    code = "A8"


class KcvMismatchError(HsmError):
    """A key or component did not match the check value it came with."""

    code = "E2"


class CardNotAuthenticatedError(HsmError):
    """A MAC2 was asked for a card whose MAC1 does not verify."""

    code = "E1"


class LmkError(HsmError):
    """The local master key could not be formed or is not loaded."""

    code = "13"


class PinBlockError(HsmError):
    """A PIN block did not decode to a valid ISO 9564 format 0 block (wrong key or PAN)."""

    code = "20"


class NotSupportedError(HsmError):
    """The backend does not implement this operation."""

    code = "68"


ERRORS_BY_CODE: dict[str, type[HsmError]] = {
    cls.code: cls
    for cls in (
        InvalidInputError,
        KeyNotFoundError,
        KeyExistsError,
        KeyUsageError,
        KeyTamperedError,
        KcvMismatchError,
        CardNotAuthenticatedError,
        LmkError,
        PinBlockError,
        NotSupportedError,
    )
}
