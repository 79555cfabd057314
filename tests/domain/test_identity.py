"""Identity documents: every document type, check characters, mobile numbers and display masks.

All ID numbers here are synthetic: bodies are made up and check characters computed below.
"""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import ric as stdnum_ric
from stdnum.cn import uscc as stdnum_uscc
from stdnum.exceptions import ValidationError
from stdnum.iso7064 import mod_11_2

from screening.domain.identity import (
    DocumentType,
    IdentityDocumentError,
    mask_document,
    mask_name,
    mask_phone,
    uscc_check_char,
    validate_document,
    validate_mobile,
    validate_phone,
)

# GB 11643-1999 §7.2, written out independently of the module under test: Wi = 2^(18-i) mod 11,
# check = "10X98765432"[Σ ai·Wi mod 11].
_GB11643_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "0123456789X"


def gb11643_check(body: str) -> str:
    total = sum(int(d) * w for d, w in zip(body, _GB11643_WEIGHTS, strict=True))
    return "10X98765432"[total % 11]


def with_check(body: str) -> str:
    return body + gb11643_check(body)


def with_wrong_check(body: str) -> str:
    right = gb11643_check(body)
    return body + ("0" if right != "0" else "1")


def assert_rejected(doc_type: DocumentType, number: str, code: str) -> None:
    with pytest.raises(IdentityDocumentError) as info:
        validate_document(doc_type, number)
    assert info.value.code == code
    # errors are logged and returned to clients: they must never carry the number
    if len(number) >= 6:
        assert number not in str(info.value)


RESIDENT_ID = with_check("42010219900101123")  # 湖北 武汉 江岸区, born 1990-01-01


# --- GB 11643 check digit itself ---------------------------------------------------------


def test_gb11643_standard_example_has_check_x() -> None:
    # the worked example of GB 11643-1999: body 11010519491231002 -> check X
    assert gb11643_check("11010519491231002") == "X"
    assert mod_11_2.calc_check_digit("11010519491231002") == "X"


@settings(max_examples=200)
@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_test_helper_agrees_with_stdnum_mod_11_2(body: str) -> None:
    assert gb11643_check(body) == mod_11_2.calc_check_digit(body)


# --- resident ID -------------------------------------------------------------------------


def test_resident_id_with_computed_check_digit_is_valid() -> None:
    assert validate_document(DocumentType.resident_id, RESIDENT_ID) == RESIDENT_ID


def test_resident_id_with_wrong_check_digit_is_rejected() -> None:
    assert_rejected(
        DocumentType.resident_id, with_wrong_check("42010219900101123"), "invalid_checksum"
    )


def test_resident_id_lower_case_x_and_spaces_are_normalised() -> None:
    assert validate_document(DocumentType.resident_id, " 110105 19491231 002x ") == (
        "11010519491231002X"
    )


def test_resident_id_in_full_width_digits_is_normalised() -> None:
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in RESIDENT_ID)  # '０'..'９' from an IME
    assert validate_document(DocumentType.resident_id, full_width) == RESIDENT_ID


@pytest.mark.parametrize(
    "number",
    [
        RESIDENT_ID[:-1],  # 17 characters
        RESIDENT_ID + "1",  # 19 characters
        "42010219900101123A",  # letter other than X in the check position
        "4201021990010112X3",  # X before the end
        "",
    ],
)
def test_resident_id_of_wrong_shape_is_rejected_as_format(number: str) -> None:
    assert_rejected(DocumentType.resident_id, number, "invalid_format")


@pytest.mark.parametrize(
    "body",
    [
        "42010219900230123",  # 30 February
        "42010219901301123",  # month 13
        "42010218990101123",  # born 1899
        "42010200000000123",
    ],
)
def test_resident_id_with_impossible_birth_date_is_rejected(body: str) -> None:
    assert_rejected(DocumentType.resident_id, with_check(body), "invalid_birth_date")


def test_resident_id_born_after_today_is_rejected_when_today_is_given() -> None:
    number = with_check("42010220300101123")
    with pytest.raises(IdentityDocumentError) as info:
        validate_document(DocumentType.resident_id, number, today=date(2025, 6, 1))
    assert info.value.code == "invalid_birth_date"
    assert validate_document(DocumentType.resident_id, number, today=date(2030, 1, 1)) == number


def test_resident_id_leap_day_birth_date_is_valid() -> None:
    number = with_check("42010220000229123")
    assert validate_document(DocumentType.resident_id, number) == number


@pytest.mark.parametrize(
    "body",
    [
        "99010219900101123",  # no province 99
        "81000019900101123",  # Hong Kong code: a residence permit, not a resident ID
        "71000019900101123",  # Taiwan province code is not issued on resident IDs
        "00010219900101123",
    ],
)
def test_resident_id_outside_a_mainland_province_is_rejected_as_region(body: str) -> None:
    assert_rejected(DocumentType.resident_id, with_check(body), "invalid_region")


def test_chongqing_resident_id_born_before_1997_is_valid_although_stdnum_rejects_it() -> None:
    # 500101 (万州区) dates from 1997; people born earlier who registered later carry it.
    # stdnum.cn.ric demands the county existed in the birth year, a false rejection.
    number = with_check("50010119900101123")
    with pytest.raises(ValidationError):
        stdnum_ric.validate(number)
    assert validate_document(DocumentType.resident_id, number) == number


def test_error_is_a_value_error_with_code_and_message() -> None:
    with pytest.raises(ValueError, match="invalid_checksum") as info:
        validate_document(DocumentType.resident_id, with_wrong_check("42010219900101123"))
    assert isinstance(info.value, IdentityDocumentError)
    assert info.value.message


def test_document_type_given_as_plain_string_is_accepted() -> None:
    assert validate_document("resident_id", RESIDENT_ID) == RESIDENT_ID  # type: ignore[arg-type]


def test_unknown_document_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="driver_licence"):
        validate_document("driver_licence", RESIDENT_ID)  # type: ignore[arg-type]


# Property: for random bodies laid out like a real number, the computed check char validates
# and each of the 10 other characters is rejected as a checksum error.
_plausible_bodies = st.builds(
    lambda province, county, born, seq: f"{province}{county:04d}{born:%Y%m%d}{seq:03d}",
    st.sampled_from(["11", "31", "42", "44", "50", "65"]),
    st.integers(0, 9999),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31)),
    st.integers(0, 999),
)


@settings(max_examples=150)
@given(_plausible_bodies)
def test_any_body_with_computed_check_char_validates_and_others_are_rejected(body: str) -> None:
    right = gb11643_check(body)
    assert validate_document(DocumentType.resident_id, body + right) == body + right
    for wrong in _CHECK_CHARS.replace(right, ""):
        assert_rejected(DocumentType.resident_id, body + wrong, "invalid_checksum")


@settings(max_examples=150)
@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_any_17_digit_body_fails_only_on_check_char_when_it_is_wrong(body: str) -> None:
    right = gb11643_check(body)
    codes = set()
    try:
        validate_document(DocumentType.resident_id, body + right)
    except IdentityDocumentError as error:
        codes.add(error.code)
    assert codes <= {"invalid_birth_date", "invalid_region"}
    for wrong in _CHECK_CHARS.replace(right, ""):
        assert_rejected(DocumentType.resident_id, body + wrong, "invalid_checksum")


# --- HK/Macao/Taiwan residence permit ----------------------------------------------------


@pytest.mark.parametrize("prefix", ["810000", "820000", "830000"])
def test_residence_permit_with_computed_check_digit_is_valid(prefix: str) -> None:
    number = with_check(prefix + "19850615001")
    assert validate_document(DocumentType.residence_permit, number) == number


def test_hong_kong_permit_born_before_1997_is_valid_although_stdnum_rejects_it() -> None:
    number = with_check("81000019850615001")
    with pytest.raises(ValidationError):
        stdnum_ric.validate(number)  # 810000 "exists" only from 1997 in stdnum's table
    assert validate_document(DocumentType.residence_permit, number) == number


def test_residence_permit_with_wrong_check_digit_is_rejected() -> None:
    assert_rejected(
        DocumentType.residence_permit, with_wrong_check("82000019850615001"), "invalid_checksum"
    )


def test_residence_permit_with_mainland_address_code_is_rejected_as_region() -> None:
    assert_rejected(DocumentType.residence_permit, RESIDENT_ID, "invalid_region")


def test_residence_permit_with_impossible_birth_date_is_rejected() -> None:
    assert_rejected(
        DocumentType.residence_permit, with_check("83000019851315001"), "invalid_birth_date"
    )


# --- foreign permanent residence card ----------------------------------------------------

# 2023 card: 9, issuing province 11, nationality 840, born 1980-07-04, sequence 001
FOREIGN_PR = with_check("91184019800704001")


def test_new_foreign_permanent_residence_card_is_valid() -> None:
    assert validate_document(DocumentType.foreign_permanent_residence, FOREIGN_PR) == FOREIGN_PR


def test_new_foreign_permanent_residence_card_with_wrong_check_digit_is_rejected() -> None:
    assert_rejected(
        DocumentType.foreign_permanent_residence,
        with_wrong_check("91184019800704001"),
        "invalid_checksum",
    )


def test_foreign_permanent_residence_card_not_starting_with_9_is_rejected_as_format() -> None:
    assert_rejected(DocumentType.foreign_permanent_residence, RESIDENT_ID, "invalid_format")


def test_foreign_permanent_residence_card_with_unknown_province_is_rejected_as_region() -> None:
    assert_rejected(
        DocumentType.foreign_permanent_residence,
        with_check("99984019800704001"),
        "invalid_region",
    )


def test_foreign_permanent_residence_card_with_impossible_birth_date_is_rejected() -> None:
    assert_rejected(
        DocumentType.foreign_permanent_residence,
        with_check("91184019800732001"),
        "invalid_birth_date",
    )


def test_old_15_character_foreign_permanent_residence_card_is_valid_by_pattern() -> None:
    assert validate_document(DocumentType.foreign_permanent_residence, "usa 110080070401") == (
        "USA110080070401"
    )


@pytest.mark.parametrize("number", ["US1110080070401", "USA11008007040", "USA1100800704012"])
def test_malformed_old_foreign_permanent_residence_card_is_rejected(number: str) -> None:
    assert_rejected(DocumentType.foreign_permanent_residence, number, "invalid_format")


# --- travel permits ----------------------------------------------------------------------


@pytest.mark.parametrize("number", ["H12345678", "M87654321", "H1234567890", "HA1234567"])
def test_hk_macao_travel_permit_in_known_formats_is_valid(number: str) -> None:
    assert validate_document(DocumentType.hk_macao_travel_permit, number) == number


def test_hk_macao_travel_permit_lower_case_is_normalised() -> None:
    assert validate_document(DocumentType.hk_macao_travel_permit, "h 1234 5678") == "H12345678"


@pytest.mark.parametrize(
    "number", ["H1234567", "H123456789", "X12345678", "12345678", "HB1234567", "H1234567A"]
)
def test_hk_macao_travel_permit_in_other_formats_is_rejected(number: str) -> None:
    assert_rejected(DocumentType.hk_macao_travel_permit, number, "invalid_format")


@pytest.mark.parametrize("number", ["12345678", "1234567890", "F290299977"])
def test_taiwan_travel_permit_in_known_formats_is_valid(number: str) -> None:
    assert validate_document(DocumentType.taiwan_travel_permit, number) == number


@pytest.mark.parametrize("number", ["1234567", "123456789", "AB12345678", "T1234567"])
def test_taiwan_travel_permit_in_other_formats_is_rejected(number: str) -> None:
    assert_rejected(DocumentType.taiwan_travel_permit, number, "invalid_format")


# --- passports ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "E12345678",  # PRC ordinary e-passport
        "EA1234567",  # PRC e-passport, letter series
        "G12345678",  # older PRC ordinary passport
        "DE1234567",  # PRC diplomatic
        "S1234567",  # PRC service
        "123456789",  # US style, digits only
        "C01X00T47",  # German style, mixed
        "AB123456",
        "X1234",  # 5 characters, the shortest admitted
        "A1234567890",  # longer than the 9 of the MRZ's number field: carried on, still real
        "AB123456789012345",  # 17 characters, the longest admitted
    ],
)
def test_passport_in_prc_or_icao_format_is_valid(number: str) -> None:
    assert validate_document(DocumentType.passport, number) == number


@pytest.mark.parametrize(
    "number",
    [
        "ABCDEFGH",  # no digit
        "E123",  # too short
        "AB1234567890123456",  # 18 characters: too long
        "E1234567!",
        "",
    ],
)
def test_passport_in_other_formats_is_rejected(number: str) -> None:
    assert_rejected(DocumentType.passport, number, "invalid_format")


# --- military IDs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number", ["南字第1234567号", "军字第12345678号", "海字第123456", "12345678", "JX1234567"]
)
def test_military_id_in_documented_formats_is_valid(number: str) -> None:
    assert validate_document(DocumentType.military_id, number) == number


def test_military_id_with_spaces_is_normalised() -> None:
    assert validate_document(DocumentType.military_id, "南字第 1234567 号") == "南字第1234567号"


@pytest.mark.parametrize(
    "number", ["12345", "字第1234567号", "南字第12345号", "ABC1234567", "南字第1234567号号"]
)
def test_military_id_in_other_formats_is_rejected(number: str) -> None:
    assert_rejected(DocumentType.military_id, number, "invalid_format")


# --- unified social credit code ----------------------------------------------------------

_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))  # GB 32100-2015: Wi = 3^(i-1) mod 31

# A Y code (registered by "other" authorities), check computed by hand:
#   body      Y  1  1  1  0  0  0  0  M   A   0  0  0  0  0  0  1
#   value    30  1  1  1  0  0  0  0 21  10   0  0  0  0  0  0  1
#   weight    1  3  9 27 19 26 16 17 20  29  25 13  8 24 10 30 28
#   product  30  3  9 27  0  0  0  0 420 290  0  0  0  0  0  0 28   sum = 807
#   807 mod 31 = 1; (31 - 1) mod 31 = 30 -> alphabet[30] = 'Y'
USCC_Y = "Y1110000MA0000001Y"


def uscc_check(body: str) -> str:
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(body, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def test_uscc_weights_are_powers_of_3_mod_31() -> None:
    assert _USCC_WEIGHTS == (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


@pytest.mark.parametrize("number", ["91110000600037341L", "9144030071526726XG"])
def test_uscc_in_published_examples_is_valid(number: str) -> None:
    assert uscc_check(number[:17]) == number[17]  # computed independently
    assert stdnum_uscc.is_valid(number)
    assert uscc_check_char(number[:17]) == number[17]
    assert validate_document(DocumentType.uscc, number) == number


def test_uscc_starting_with_letter_y_is_valid() -> None:
    assert uscc_check(USCC_Y[:17]) == "Y"
    assert not stdnum_uscc.is_valid(USCC_Y)  # stdnum demands digits in positions 1-8
    assert validate_document(DocumentType.uscc, USCC_Y) == USCC_Y


@pytest.mark.parametrize("first", ["1", "5", "A", "N", "Y"])
def test_uscc_from_any_registration_authority_is_valid(first: str) -> None:
    body = first + "1420100" + "MA4K12345"
    number = body + uscc_check(body)
    assert validate_document(DocumentType.uscc, number) == number


def test_uscc_with_wrong_check_character_is_rejected() -> None:
    wrong = "K" if USCC_Y[17] != "K" else "L"
    assert_rejected(DocumentType.uscc, USCC_Y[:17] + wrong, "invalid_checksum")


@pytest.mark.parametrize(
    "number",
    [
        "91110000600037341",  # 17 characters
        "91110000600037341LL",  # 19 characters
        "9111000060003734IL",  # I is not in the alphabet
        "91110000600O37341L",  # nor is O
        "911A0000600037341L",  # admin division must be digits
        "Z1110000600037341L",  # nor is Z
    ],
)
def test_uscc_of_wrong_shape_is_rejected_as_format(number: str) -> None:
    assert_rejected(DocumentType.uscc, number, "invalid_format")


def test_uscc_lower_case_with_spaces_is_normalised() -> None:
    assert validate_document(DocumentType.uscc, "9111 0000 6000 3734 1l") == "91110000600037341L"


@settings(max_examples=150)
@given(
    st.text(alphabet=_USCC_ALPHABET, min_size=2, max_size=2),
    st.text(alphabet="0123456789", min_size=6, max_size=6),
    st.text(alphabet=_USCC_ALPHABET, min_size=9, max_size=9),
)
def test_any_uscc_body_with_computed_check_validates_and_others_are_rejected(
    head: str, region: str, org: str
) -> None:
    body = head + region + org
    right = uscc_check(body)
    assert validate_document(DocumentType.uscc, body + right) == body + right
    for wrong in _USCC_ALPHABET.replace(right, ""):
        assert_rejected(DocumentType.uscc, body + wrong, "invalid_checksum")


# --- mobile numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "13812341234",
        "138 1234 1234",
        "138-1234-1234",
        "+8613812341234",
        "+86 138 1234 1234",
        "0086-138-1234-1234",
        "8613812341234",
        "１３８１２３４１２３４",  # full width
    ],
)
def test_mobile_number_variants_normalise_to_11_digits(typed: str) -> None:
    assert validate_mobile(typed) == "13812341234"


@pytest.mark.parametrize("second", "3456789")
def test_mobile_number_with_second_digit_3_to_9_is_valid(second: str) -> None:
    assert validate_mobile(f"1{second}012345678") == f"1{second}012345678"


@pytest.mark.parametrize(
    "typed",
    [
        "12812341234",  # second digit 2
        "1381234123",  # 10 digits
        "138123412345",  # 12 digits
        "02712345678",  # landline
        "+85213812341234",  # Hong Kong prefix
        "+1 138 1234 1234",
        "1381234123a",
        "",
    ],
)
def test_invalid_mobile_number_is_rejected(typed: str) -> None:
    with pytest.raises(IdentityDocumentError) as info:
        validate_mobile(typed)
    assert info.value.code == "invalid_mobile"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("+86 138 1234 1234", "13812341234"),  # a mainland mobile, as validate_mobile has it
        ("027-1234-5678", "02712345678"),  # a Wuhan landline
        ("0755 1234 5678", "075512345678"),  # a Shenzhen landline
        ("+86 27 1234 5678", "02712345678"),  # the same landline dialled from abroad
        ("0138 1234 1234", "13812341234"),  # a mobile dialled with a trunk 0 (not a landline)
        ("+852 9123 4567", "+85291234567"),  # Hong Kong mobile (a travel-permit holder)
        ("00853 6612 3456", "+85366123456"),  # Macao, 00 for +
        ("+1 (415) 555-0100".replace("(", "").replace(")", ""), "+14155550100"),
    ],
)
def test_a_phone_number_is_a_mainland_mobile_or_landline_or_another_countrys(
    typed: str, stored: str
) -> None:
    assert validate_phone(typed) == stored


@pytest.mark.parametrize(
    "typed",
    [
        "12812341234",
        "2712345678",
        "+86 12",
        "+0123456789",
        "+1234",
        "0086",
        "phone",
        "",
        "+",
        "+86 138 1234 123",  # a mobile a digit short
        "0138 1234 123",  # the same, dialled with a trunk 0
    ],
)
def test_a_number_that_is_no_phone_number_is_rejected(typed: str) -> None:
    with pytest.raises(IdentityDocumentError) as info:
        validate_phone(typed)
    assert info.value.code == "invalid_phone"


# --- masks -------------------------------------------------------------------------------


def test_18_character_document_keeps_first_4_and_last_4() -> None:
    assert mask_document("420102199001011234") == "4201**********1234"


def test_document_mask_normalises_before_masking() -> None:
    assert mask_document(" 110105 19491231 002x") == "1101**********002X"


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("E12345678", "E1*****78"),
        ("12345678", "12****78"),
        ("USA110080070401", "US***********01"),
        ("123456", "1****6"),
        ("123", "***"),
        ("", ""),
    ],
)
def test_shorter_document_keeps_at_most_2_and_2(number: str, masked: str) -> None:
    assert mask_document(number) == masked


@given(st.text(alphabet="0123456789ABCDEFGHJKLMNPQRTUWXY", max_size=30))
def test_document_mask_never_reveals_more_than_half(number: str) -> None:
    masked = mask_document(number)
    assert len(masked) == len(number)
    assert sum(c != "*" for c in masked) <= len(number) / 2


def test_mobile_mask_keeps_first_3_and_last_4() -> None:
    assert mask_phone("13812341234") == "138****1234"


def test_mobile_mask_normalises_country_prefix() -> None:
    assert mask_phone("+86 138-1234-1234") == "138****1234"


def test_landline_mask_keeps_first_3_and_last_4() -> None:
    assert mask_phone("027-12345678") == "027****5678"


def test_short_phone_mask_reveals_at_most_half() -> None:
    assert mask_phone("12345") == "1***5"
    assert mask_phone("110") == "***"


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("张三丰", "张**"),
        ("张三", "张*"),
        ("欧阳娜娜", "欧***"),
        ("Li Lei", "L*****"),
        (" 李四 ", "李*"),
        ("张", "*"),
        ("", ""),
    ],
)
def test_name_mask_keeps_first_character_and_length(name: str, masked: str) -> None:
    assert mask_name(name) == masked
