"""Personal-data protection: authenticated encryption for storage, keyed digests for matching.

An ID number is sensitive personal information (PIPL Art 28) and must never be stored or logged
in the clear. Each value is kept in two forms, for two different needs:

- `PersonalDataVault.seal` encrypts it with AES-256-GCM so that an audited read (a police
  request) can recover it; the associated data binds the ciphertext to its row and column
  (`field_associated_data`), so a blob copied into another row, or moved into another column of
  its own row, does not open there.
- `PersonalDataVault.digest` gives a keyed HMAC-SHA256 so that equal values can be matched (a
  watchlist, one ID behind many senders) without decrypting anything.

Key material never appears in `repr()` or in an exception message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_BYTES",
    "MIN_HMAC_KEY_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "KeyMaterialError",
    "PersonalDataError",
    "PersonalDataVault",
    "SealedValue",
    "associated_data",
    "field_associated_data",
]

KEY_BYTES: Final = 32  # AES-256
NONCE_BYTES: Final = 12  # 96-bit GCM nonce, NIST SP 800-38D §8.2.2 (random construction)
TAG_BYTES: Final = 16  # full 128-bit GCM tag
MIN_HMAC_KEY_BYTES: Final = 32  # RFC 2104 §3: not shorter than the SHA-256 output


class PersonalDataError(Exception):
    """A sealed value cannot be opened: unknown key id, tampered or truncated blob, or associated
    data that differs from the row it was sealed for."""


class KeyMaterialError(ValueError):
    """Key material is malformed: wrong key length, missing active key, bad serialised form."""


@dataclass(frozen=True, slots=True)
class SealedValue:
    """A ciphertext and the id of the key that sealed it.

    `blob` = 12-byte random nonce || AES-GCM ciphertext || 16-byte tag.
    """

    key_id: str
    blob: bytes


def associated_data(*parts: str) -> bytes:
    """Unambiguous associated data from row identifiers, e.g. `associated_data(site_id, event_id)`.

    Each part is length-prefixed (4-byte big-endian) so that ("ab", "c") and ("a", "bc") differ.
    """
    out = bytearray()
    for part in parts:
        encoded = part.encode("utf-8")
        out += struct.pack(">I", len(encoded))
        out += encoded
    return bytes(out)


def field_associated_data(site_id: str, record_id: str, field: str) -> bytes:
    """The associated data of one sealed field of one record (``field``: the column's name).

    Binding the field as well as the row means that someone with write access to the table
    cannot swap a row's sealed values between columns (a name into the ID-number column) and
    have them open as the other field.
    """
    return associated_data(site_id, record_id, field)


class PersonalDataVault:
    """Seals, opens and digests personal data with a keyring.

    Keys are looked up by id, so values sealed before a rotation keep opening after it; only the
    active key seals. Rotate the active key well before 2^32 seals under one key: with random
    96-bit nonces that is the NIST SP 800-38D §8.3 limit for AES-GCM.
    """

    __slots__ = ("_active_key_id", "_ciphers", "_hmac", "_hmac_key", "_keys")

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str, hmac_key: bytes) -> None:
        if not keys:
            raise KeyMaterialError("the keyring is empty")
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not key_id:
                raise KeyMaterialError("key ids must be non-empty strings")
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise KeyMaterialError(f"key {key_id!r} must be {KEY_BYTES} bytes (AES-256)")
        if active_key_id not in keys:
            raise KeyMaterialError(f"the active key {active_key_id!r} is not in the keyring")
        if not isinstance(hmac_key, bytes) or len(hmac_key) < MIN_HMAC_KEY_BYTES:
            raise KeyMaterialError(f"the HMAC key must be at least {MIN_HMAC_KEY_BYTES} bytes")
        self._keys: dict[str, bytes] = dict(keys)
        self._ciphers: dict[str, AESGCM] = {k: AESGCM(v) for k, v in self._keys.items()}
        self._active_key_id = active_key_id
        self._hmac_key = hmac_key
        # Keyed once: each digest continues a copy of it, which spares hashing the key's two
        # padded blocks again (a third of a digest's cost on every ingested event).
        self._hmac = hmac.new(hmac_key, digestmod="sha256")

    @classmethod
    def generate(cls, key_id: str = "k1") -> Self:
        """A vault with fresh random key material (for development and tests)."""
        return cls(
            keys={key_id: AESGCM.generate_key(bit_length=KEY_BYTES * 8)},
            active_key_id=key_id,
            hmac_key=os.urandom(MIN_HMAC_KEY_BYTES),
        )

    def rotated(self, key_id: str, key: bytes | None = None) -> Self:
        """A copy whose active key is `key_id` (a fresh random key unless given).

        Old keys stay, so everything sealed so far still opens; the HMAC key is unchanged, so
        digests still match.
        """
        if key_id in self._keys:
            raise KeyMaterialError(f"key {key_id!r} is already in the keyring")
        new_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8) if key is None else key
        return type(self)({**self._keys, key_id: new_key}, key_id, self._hmac_key)

    def without(self, key_id: str) -> Self:
        """A copy without ``key_id`` (retired: nothing sealed under it is to open any more)."""
        if key_id == self._active_key_id:
            raise KeyMaterialError(f"key {key_id!r} is the active key")
        if key_id not in self._keys:
            raise KeyMaterialError(f"key {key_id!r} is not in the keyring")
        keys = {k: v for k, v in self._keys.items() if k != key_id}
        return type(self)(keys, self._active_key_id, self._hmac_key)

    @property
    def active_key_id(self) -> str:
        return self._active_key_id

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def seal(self, plaintext: str, *, aad: bytes) -> SealedValue:
        """Encrypt `plaintext` under the active key, bound to `aad` (see `associated_data`)."""
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._ciphers[self._active_key_id].encrypt(
            nonce, plaintext.encode("utf-8"), aad
        )
        return SealedValue(key_id=self._active_key_id, blob=nonce + ciphertext)

    def open(self, sealed: SealedValue, *, aad: bytes) -> str:
        """Decrypt a value sealed by this keyring with the same `aad`; else PersonalDataError."""
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise PersonalDataError(f"unknown key id {sealed.key_id!r}")
        if len(sealed.blob) < NONCE_BYTES + TAG_BYTES:
            raise PersonalDataError("sealed blob is truncated")
        nonce, ciphertext = sealed.blob[:NONCE_BYTES], sealed.blob[NONCE_BYTES:]
        try:
            plaintext = cipher.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise PersonalDataError(
                "sealed value failed authentication (tampered, or sealed for another row)"
            ) from None
        return plaintext.decode("utf-8")

    def reseal(self, sealed: SealedValue, *, aad: bytes) -> SealedValue:
        """Re-encrypt under the active key (after a rotation); unchanged if already under it."""
        if sealed.key_id == self._active_key_id:
            return sealed
        return self.seal(self.open(sealed, aad=aad), aad=aad)

    def digest(self, kind: str, value: str) -> bytes:
        """HMAC-SHA256(hmac_key, kind || 0x00 || value): a 32-byte token to match equal values.

        A plain SHA-256 would not protect anything: an 18-character resident ID has only about
        1.3e11 plausible values (~3,500 county codes x ~36,500 birth dates x 1,000 sequence
        numbers; the check digit adds nothing), which a single GPU hashes through in minutes, so
        anyone with a copy of the table could reverse every digest. With a secret key the
        enumeration is useless without the key. `kind` (e.g. the document type) separates
        namespaces so equal strings of different kinds never match; the 0x00 separator makes the
        split unambiguous. Pass normalised values (`identity.validate_document`'s result).
        """
        if "\x00" in kind:
            raise ValueError("digest kind must not contain NUL")
        mac = self._hmac.copy()
        mac.update(kind.encode("utf-8") + b"\x00" + value.encode("utf-8"))
        return mac.digest()

    def to_json_dict(self) -> dict[str, object]:
        """`{"active_key_id": ..., "keys": {id: base64}, "hmac_key": base64}` (secret: store with
        owner-only permissions)."""
        return {
            "active_key_id": self._active_key_id,
            "keys": {k: base64.b64encode(v).decode("ascii") for k, v in self._keys.items()},
            "hmac_key": base64.b64encode(self._hmac_key).decode("ascii"),
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, object]) -> Self:
        """Inverse of `to_json_dict`; raises KeyMaterialError on any malformed field."""
        if not isinstance(data, Mapping):
            raise KeyMaterialError("the key set must be a JSON object")
        active = data.get("active_key_id")
        keys = data.get("keys")
        hmac_key = data.get("hmac_key")
        if not isinstance(active, str):
            raise KeyMaterialError("'active_key_id' must be a string")
        if not isinstance(keys, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in keys.items()
        ):
            raise KeyMaterialError("'keys' must map key ids to base64 strings")
        if not isinstance(hmac_key, str):
            raise KeyMaterialError("'hmac_key' must be a base64 string")
        return cls(
            keys={k: _b64decode(v, f"keys.{k}") for k, v in keys.items()},
            active_key_id=active,
            hmac_key=_b64decode(hmac_key, "hmac_key"),
        )

    def __repr__(self) -> str:
        ids = ", ".join(sorted(self._keys))
        return f"PersonalDataVault(active_key_id={self._active_key_id!r}, key_ids=[{ids}])"


def _b64decode(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KeyMaterialError(f"{field!r} is not valid base64") from None
