"""A `Des` reuses one CBC encryptor (CBC-MAC and CBC encryption) and one CBC decryptor for the
life of its key, cancelling their chaining state per call: any sequence of calls with any IV
gives what a fresh context per call gives."""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm.des import Des, expand_key

calls = st.lists(
    st.tuples(
        st.sampled_from(["encrypt", "decrypt", "mac"]),
        st.integers(0, 8)
        .map(lambda blocks: blocks * 8)
        .flatmap(lambda n: st.binary(min_size=n, max_size=n)),
        st.one_of(st.just(bytes(8)), st.binary(min_size=8, max_size=8)),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(key=st.binary(min_size=16, max_size=16) | st.binary(min_size=8, max_size=8), seq=calls)
def test_reused_cbc_contexts_match_a_fresh_context_per_call(
    key: bytes, seq: list[tuple[str, bytes, bytes]]
) -> None:
    des = Des(key)
    algorithm = TripleDES(expand_key(key))
    for op, data, iv in seq:
        if op == "decrypt":
            fresh = Cipher(algorithm, modes.CBC(iv)).decryptor().update(data)
            assert des.decrypt_cbc(data, iv) == fresh
            continue
        fresh = Cipher(algorithm, modes.CBC(iv)).encryptor().update(data)
        if op == "encrypt":
            assert des.encrypt_cbc(data, iv) == fresh
        elif data:
            assert des.cbc_last(data, iv) == fresh[-8:]
