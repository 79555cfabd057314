"""Personal-data vault: sealing, key rotation, tamper detection, keyed digests, key material."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screening.app import load_vault
from screening.protection import (
    KeyMaterialError,
    PersonalDataError,
    PersonalDataVault,
    SealedValue,
    associated_data,
)
from screening.settings import Settings

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
HMAC_KEY = bytes(range(100, 140))
ID_NUMBER = "11010519491231002X"  # the GB 11643 worked example, not a person
ROW = associated_data("site-0001", "6f1c2c3e-0000-4000-8000-000000000001")
OTHER_ROW = associated_data("site-0001", "6f1c2c3e-0000-4000-8000-000000000002")


@pytest.fixture
def vault() -> PersonalDataVault:
    return PersonalDataVault(keys={"k1": K1}, active_key_id="k1", hmac_key=HMAC_KEY)


# --- sealing -----------------------------------------------------------------------------


def test_sealed_value_opens_to_the_plaintext(vault: PersonalDataVault) -> None:
    sealed = vault.seal(ID_NUMBER, aad=ROW)
    assert sealed.key_id == "k1"
    assert vault.open(sealed, aad=ROW) == ID_NUMBER


@settings(max_examples=50)
@given(st.text(), st.binary(max_size=64))
def test_any_text_round_trips_with_any_associated_data(text: str, aad: bytes) -> None:
    vault = PersonalDataVault(keys={"k1": K1}, active_key_id="k1", hmac_key=HMAC_KEY)
    assert vault.open(vault.seal(text, aad=aad), aad=aad) == text


def test_blob_is_nonce_then_ciphertext_then_tag(vault: PersonalDataVault) -> None:
    sealed = vault.seal(ID_NUMBER, aad=ROW)
    assert len(sealed.blob) == 12 + len(ID_NUMBER.encode()) + 16
    assert ID_NUMBER.encode() not in sealed.blob


def test_sealing_twice_gives_different_blobs(vault: PersonalDataVault) -> None:
    first, second = vault.seal(ID_NUMBER, aad=ROW), vault.seal(ID_NUMBER, aad=ROW)
    assert first.blob[:12] != second.blob[:12]  # fresh random nonce each time
    assert first.blob != second.blob


def test_sealed_value_is_frozen(vault: PersonalDataVault) -> None:
    sealed = vault.seal(ID_NUMBER, aad=ROW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sealed.key_id = "k2"  # type: ignore[misc]


# --- key rotation ------------------------------------------------------------------------


def test_values_sealed_before_rotation_still_open_after_it() -> None:
    before = PersonalDataVault(keys={"k1": K1}, active_key_id="k1", hmac_key=HMAC_KEY)
    old = before.seal(ID_NUMBER, aad=ROW)
    after = PersonalDataVault(keys={"k1": K1, "k2": K2}, active_key_id="k2", hmac_key=HMAC_KEY)
    new = after.seal("13812341234", aad=ROW)
    assert new.key_id == "k2"
    assert after.open(old, aad=ROW) == ID_NUMBER
    assert after.open(new, aad=ROW) == "13812341234"


def test_rotated_vault_seals_with_a_fresh_key_and_keeps_the_old(vault: PersonalDataVault) -> None:
    old = vault.seal(ID_NUMBER, aad=ROW)
    rotated = vault.rotated("k2")
    assert rotated.active_key_id == "k2"
    assert rotated.key_ids == {"k1", "k2"}
    new = rotated.seal(ID_NUMBER, aad=ROW)
    assert new.key_id == "k2"
    assert rotated.open(old, aad=ROW) == ID_NUMBER
    assert rotated.open(new, aad=ROW) == ID_NUMBER
    with pytest.raises(PersonalDataError):
        vault.open(new, aad=ROW)  # the old keyring has never seen k2


def test_rotation_keeps_digests_stable(vault: PersonalDataVault) -> None:
    assert vault.rotated("k2").digest("resident_id", ID_NUMBER) == vault.digest(
        "resident_id", ID_NUMBER
    )


def test_rotating_to_an_existing_key_id_is_refused(vault: PersonalDataVault) -> None:
    with pytest.raises(KeyMaterialError):
        vault.rotated("k1")


def test_reseal_moves_a_value_to_the_active_key(vault: PersonalDataVault) -> None:
    old = vault.seal(ID_NUMBER, aad=ROW)
    rotated = vault.rotated("k2", K2)
    moved = rotated.reseal(old, aad=ROW)
    assert moved.key_id == "k2"
    assert rotated.open(moved, aad=ROW) == ID_NUMBER
    assert rotated.reseal(moved, aad=ROW) is moved


# --- tamper detection --------------------------------------------------------------------


def test_flipping_any_byte_of_the_blob_is_detected(vault: PersonalDataVault) -> None:
    sealed = vault.seal(ID_NUMBER, aad=ROW)
    for index in range(len(sealed.blob)):  # nonce, ciphertext and tag alike
        blob = bytearray(sealed.blob)
        blob[index] ^= 0x01
        with pytest.raises(PersonalDataError):
            vault.open(SealedValue(sealed.key_id, bytes(blob)), aad=ROW)


def test_blob_moved_to_another_row_does_not_open(vault: PersonalDataVault) -> None:
    sealed = vault.seal(ID_NUMBER, aad=ROW)
    with pytest.raises(PersonalDataError, match="authentication"):
        vault.open(sealed, aad=OTHER_ROW)


def test_unknown_key_id_is_refused(vault: PersonalDataVault) -> None:
    sealed = vault.seal(ID_NUMBER, aad=ROW)
    with pytest.raises(PersonalDataError, match="unknown key id"):
        vault.open(SealedValue("k9", sealed.blob), aad=ROW)


def test_blob_relabelled_with_another_known_key_id_does_not_open() -> None:
    vault = PersonalDataVault(keys={"k1": K1, "k2": K2}, active_key_id="k1", hmac_key=HMAC_KEY)
    sealed = vault.seal(ID_NUMBER, aad=ROW)
    with pytest.raises(PersonalDataError):
        vault.open(SealedValue("k2", sealed.blob), aad=ROW)


@pytest.mark.parametrize("length", [0, 11, 12, 27])
def test_truncated_blob_is_refused(vault: PersonalDataVault, length: int) -> None:
    sealed = vault.seal(ID_NUMBER, aad=ROW)
    with pytest.raises(PersonalDataError):
        vault.open(SealedValue(sealed.key_id, sealed.blob[:length]), aad=ROW)


def test_associated_data_parts_are_unambiguous() -> None:
    assert associated_data("ab", "c") != associated_data("a", "bc")
    assert associated_data("a", "") != associated_data("a")
    assert associated_data("site", "event") == associated_data("site", "event")


# --- keyed digests -----------------------------------------------------------------------


def test_digest_is_hmac_sha256_of_kind_nul_value(vault: PersonalDataVault) -> None:
    expected = hmac.new(HMAC_KEY, b"resident_id\x00" + ID_NUMBER.encode(), hashlib.sha256)
    assert vault.digest("resident_id", ID_NUMBER) == expected.digest()


@pytest.mark.parametrize("key_bytes", [32, 64, 65, 200])  # 65 and up: the key is hashed first
def test_digest_matches_one_shot_hmac_call_after_call(key_bytes: int) -> None:
    key = bytes(range(key_bytes % 256)) + bytes(max(0, key_bytes - 256))
    keyed = PersonalDataVault(keys={"k1": K1}, active_key_id="k1", hmac_key=key)
    for kind, value in [("event", "{}"), ("resident_id", ID_NUMBER), ("event", "{}")]:
        message = kind.encode() + b"\x00" + value.encode()
        assert keyed.digest(kind, value) == hmac.digest(key, message, "sha256")


def test_digest_is_deterministic_and_32_bytes(vault: PersonalDataVault) -> None:
    first = vault.digest("resident_id", ID_NUMBER)
    assert first == vault.digest("resident_id", ID_NUMBER)
    assert len(first) == 32


def test_digest_is_not_the_plain_hash(vault: PersonalDataVault) -> None:
    plain = hashlib.sha256(b"resident_id\x00" + ID_NUMBER.encode()).digest()
    assert vault.digest("resident_id", ID_NUMBER) != plain


def test_digest_depends_on_the_hmac_key(vault: PersonalDataVault) -> None:
    other = PersonalDataVault(keys={"k1": K1}, active_key_id="k1", hmac_key=bytes(40))
    assert other.digest("resident_id", ID_NUMBER) != vault.digest("resident_id", ID_NUMBER)


def test_digest_separates_kinds(vault: PersonalDataVault) -> None:
    assert vault.digest("passport", "E12345678") != vault.digest("military_id", "E12345678")
    # the NUL separator keeps ("ab", "c") apart from ("a", "bc")
    assert vault.digest("ab", "c") != vault.digest("a", "bc")


def test_digest_distinguishes_values(vault: PersonalDataVault) -> None:
    assert vault.digest("mobile", "13812341234") != vault.digest("mobile", "13812341235")


def test_digest_kind_with_nul_is_refused(vault: PersonalDataVault) -> None:
    with pytest.raises(ValueError, match="NUL"):
        vault.digest("a\x00b", "c")


# --- key material ------------------------------------------------------------------------


def test_generated_vaults_have_independent_keys() -> None:
    first, second = PersonalDataVault.generate(), PersonalDataVault.generate()
    assert first.active_key_id == "k1"
    assert first.digest("mobile", "13812341234") != second.digest("mobile", "13812341234")
    with pytest.raises(PersonalDataError):
        second.open(first.seal(ID_NUMBER, aad=ROW), aad=ROW)


def test_key_material_survives_a_json_round_trip() -> None:
    vault = PersonalDataVault.generate("dev-1").rotated("dev-2")
    sealed = vault.seal(ID_NUMBER, aad=ROW)
    data = json.loads(json.dumps(vault.to_json_dict()))
    assert set(data) == {"active_key_id", "keys", "hmac_key"}
    assert data["active_key_id"] == "dev-2"
    assert set(data["keys"]) == {"dev-1", "dev-2"}
    assert all(len(base64.b64decode(key)) == 32 for key in data["keys"].values())
    restored = PersonalDataVault.from_json_dict(data)
    assert restored.open(sealed, aad=ROW) == ID_NUMBER
    assert restored.digest("resident_id", ID_NUMBER) == vault.digest("resident_id", ID_NUMBER)


@pytest.mark.parametrize(
    "mutation",
    [
        {"active_key_id": None},
        {"active_key_id": "missing"},
        {"keys": {}},
        {"keys": "not a mapping"},
        {"keys": {"k1": "!!not base64!!"}},
        {"keys": {"k1": base64.b64encode(bytes(16)).decode()}},  # AES-128 key
        {"keys": {"k1": 12}},
        {"hmac_key": None},
        {"hmac_key": base64.b64encode(bytes(16)).decode()},  # too short
        {"hmac_key": "ü"},
    ],
)
def test_malformed_key_material_is_refused(mutation: dict[str, object]) -> None:
    data = {**PersonalDataVault.generate().to_json_dict(), **mutation}
    with pytest.raises(KeyMaterialError):
        PersonalDataVault.from_json_dict(data)


@pytest.mark.parametrize(
    ("keys", "active", "hmac_key"),
    [
        ({}, "k1", HMAC_KEY),
        ({"k1": bytes(16)}, "k1", HMAC_KEY),
        ({"k1": bytes(33)}, "k1", HMAC_KEY),
        ({"": K1}, "", HMAC_KEY),
        ({"k1": K1}, "k2", HMAC_KEY),
        ({"k1": K1}, "k1", bytes(31)),
    ],
)
def test_invalid_constructor_arguments_are_refused(
    keys: dict[str, bytes], active: str, hmac_key: bytes
) -> None:
    with pytest.raises(KeyMaterialError):
        PersonalDataVault(keys=keys, active_key_id=active, hmac_key=hmac_key)


def test_repr_names_key_ids_but_never_key_bytes(vault: PersonalDataVault) -> None:
    text = repr(vault.rotated("k2", K2))
    assert "k1" in text
    assert "k2" in text
    for secret in (K1, K2, HMAC_KEY):
        assert base64.b64encode(secret).decode() not in text
        assert secret.hex() not in text
        assert repr(secret) not in text


def test_the_development_key_file_is_made_whole_once_and_reused(tmp_path: Path) -> None:
    """Written aside, synced and linked into place: never a half file that every later start
    refuses (and whose replacement could open nothing sealed before), no leftovers."""
    settings = Settings(data_dir=tmp_path)
    first = load_vault(settings)
    again = load_vault(settings)
    sealed = first.seal("110105194912310025", aad=b"row")
    assert again.open(sealed, aad=b"row") == "110105194912310025"
    assert oct(settings.pii_key_file.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in tmp_path.iterdir()) == [settings.pii_key_file.name]
