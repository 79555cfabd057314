"""Identity documents and phone numbers: validation, normalisation and display masks (pure)."""

from __future__ import annotations

import contextlib
import re
import unicodedata
from datetime import date
from enum import StrEnum
from typing import Final, NoReturn, assert_never

from stdnum.iso7064 import mod_11_2

__all__ = [
    "INVALID_BIRTH_DATE",
    "INVALID_CHECKSUM",
    "INVALID_FORMAT",
    "INVALID_MOBILE",
    "INVALID_PHONE",
    "INVALID_REGION",
    "DocumentType",
    "IdentityDocumentError",
    "mask_document",
    "mask_name",
    "mask_phone",
    "normalise",
    "uscc_check_char",
    "validate_document",
    "validate_mobile",
    "validate_phone",
]

# Stable error codes (they travel to API clients in problem+json bodies).
INVALID_FORMAT: Final = "invalid_format"
INVALID_CHECKSUM: Final = "invalid_checksum"
INVALID_BIRTH_DATE: Final = "invalid_birth_date"
INVALID_REGION: Final = "invalid_region"
INVALID_MOBILE: Final = "invalid_mobile"
INVALID_PHONE: Final = "invalid_phone"


class DocumentType(StrEnum):
    """Documents a sender may show for real-name registration (实名收寄)."""

    resident_id = "resident_id"  # 居民身份证, GB 11643-1999
    residence_permit = "residence_permit"  # 港澳台居民居住证
    foreign_permanent_residence = "foreign_permanent_residence"  # 外国人永久居留身份证
    hk_macao_travel_permit = "hk_macao_travel_permit"  # 港澳居民来往内地通行证
    taiwan_travel_permit = "taiwan_travel_permit"  # 台湾居民来往大陆通行证
    passport = "passport"  # PRC or foreign passport
    military_id = "military_id"  # 军官证/士兵证/文职干部证 and armed-police equivalents
    uscc = "uscc"  # 统一社会信用代码, GB 32100-2015 (organisations)


class IdentityDocumentError(ValueError):
    """A document or phone number failed validation.

    `code` is stable and machine-readable; `message` is for humans. Neither ever contains the
    number itself, so the error can be logged and returned to a client as is.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# GB/T 2260 province-level codes (first two digits of an address code). 71 (Taiwan), 81 (Hong
# Kong), 82 (Macao) and 83 (Taiwan residents' permits) are not used by mainland resident IDs.
# fmt: off
_MAINLAND_PROVINCES: Final = frozenset(
    {
        "11", "12", "13", "14", "15",  # 北京 天津 河北 山西 内蒙古
        "21", "22", "23",  # 辽宁 吉林 黑龙江
        "31", "32", "33", "34", "35", "36", "37",  # 上海 江苏 浙江 安徽 福建 江西 山东
        "41", "42", "43", "44", "45", "46",  # 河南 湖北 湖南 广东 广西 海南
        "50", "51", "52", "53", "54",  # 重庆 四川 贵州 云南 西藏
        "61", "62", "63", "64", "65",  # 陕西 甘肃 青海 宁夏 新疆
    }
)
# fmt: on
# 港澳台居民居住证 address codes: 810000 Hong Kong, 820000 Macao, 830000 Taiwan.
_RESIDENCE_PERMIT_PREFIXES: Final = frozenset({"810000", "820000", "830000"})

# Birth years before this are typos: nobody born earlier is alive to register a parcel.
_EARLIEST_BIRTH_YEAR: Final = 1900

_GB11643: Final = re.compile(r"[0-9]{17}[0-9X]")
# 2017-version permanent-residence card: ISO 3166 alpha-3 nationality + 12 digits.
_FOREIGN_PR_OLD: Final = re.compile(r"[A-Z]{3}[0-9]{12}")
_HK_MACAO_PERMIT: Final = re.compile(
    r"[HM][0-9]{8}"  # card, 2013 onwards
    r"|[HM][0-9]{10}"  # older booklet
    r"|[HM]A[0-9]{7}"  # permit for non-Chinese-national permanent residents
)
_TAIWAN_PERMIT: Final = re.compile(
    r"[0-9]{8}"  # card, 2015 onwards
    r"|[0-9]{10}"  # older booklet
    r"|[A-Z][0-9]{9}"  # one-off short-term permit
)
# PRC passports (all 8-9 characters, so the foreign rule below admits them too; kept explicit
# so that narrowing the foreign rule can never reject a Chinese passport):
# ordinary e-passport E + 8 digits or E + letter + 7 digits; older ordinary G + 8 digits;
# diplomatic / service / public affairs D, S, P + 7-8 digits or DE, SE, PE + 7 digits.
_PRC_PASSPORT: Final = re.compile(r"E[0-9]{8}|E[A-Z][0-9]{7}|G[0-9]{8}|[DSP]E?[0-9]{7,8}")
# Foreign passports: 5 to 17 letters and digits (the research notes' rule). ICAO Doc 9303's
# machine-readable zone has 9 characters for the number but carries longer ones on into its
# optional field, so a longer number is genuine and refusing it would leave a sender with no way
# to be registered. Every issuer we know puts at least one digit in it: a number without one is
# most likely a name typed into the wrong field.
_ICAO_PASSPORT: Final = re.compile(r"(?=[A-Z]*[0-9])[A-Z0-9]{5,17}")
# Military and armed-police IDs have no published check scheme; we accept either the printed
# form "<1-3 CJK unit characters>字第<6-8 digits>[号]" (e.g. 南字第1234567号, 军字第12345678号) or
# the bare number as typed into other systems: up to 2 letters then 6-10 digits.
_MILITARY_ID: Final = re.compile(r"[\u4e00-\u9fff]{1,3}字第[0-9]{6,8}号?|[A-Z]{0,2}[0-9]{6,10}")

# GB 32100-2015: the code alphabet is 0-9 and A-Z without I, O, S, V, Z.
_USCC_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
# Weight of position i (1-based) is 3^(i-1) mod 31 (GB 32100-2015 §5.2 table 2).
_USCC_WEIGHTS: Final = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# Pos 1 registration authority, pos 2 entity type, pos 3-8 GB/T 2260 admin division (digits),
# pos 9-17 organisation code (GB 11714), pos 18 check. Pos 1 may be a letter: python-stdnum's
# cn.uscc demands digits there and so rejects genuine Y (其他登记管理部门), A and N codes.
_USCC: Final = re.compile(r"[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}")

_MOBILE: Final = re.compile(r"(?:\+86|0086|86)?(1[3-9][0-9]{9})")
_SEPARATORS: Final = re.compile(r"[\s\-]+")
# A mainland landline: 0, an area code (10, 2x, or three digits from 3xx to 9xx), a 7- or
# 8-digit number (027 1234 5678). No area code starts 01 other than 010: "0138..." is a
# mobile number typed with a 0, not a landline.
_LANDLINE: Final = re.compile(r"0(?:10|2[0-9]|[3-9][0-9]{2})[0-9]{7,8}")
# International (E.164: a country code and the number, at most 15 digits), after + or 00.
_INTERNATIONAL: Final = re.compile(r"(?:\+|00)([1-9][0-9]{6,14})")


def normalise(number: str) -> str:
    """Canonical form of a typed number: NFKC (full-width digits and letters from Chinese input
    methods become ASCII), whitespace and dashes removed, letters upper-cased."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", number)).upper()


def validate_document(doc_type: DocumentType, number: str, *, today: date | None = None) -> str:
    """Return the normalised number, or raise IdentityDocumentError.

    `today`, when given, also rejects birth dates in the future (pure code gets `now` passed in).
    """
    doc_type = DocumentType(doc_type)  # a plain str from an edge must name a known type
    value = normalise(number)
    match doc_type:
        case DocumentType.resident_id:
            _check_gb11643(value, doc_type, today)
            if value[:2] not in _MAINLAND_PROVINCES:
                _fail_region(doc_type, "the address code is not a mainland province")
        case DocumentType.residence_permit:
            _check_gb11643(value, doc_type, today)
            if value[:6] not in _RESIDENCE_PERMIT_PREFIXES:
                _fail_region(doc_type, "the address code must be 810000, 820000 or 830000")
        case DocumentType.foreign_permanent_residence:
            if _FOREIGN_PR_OLD.fullmatch(value):
                return value  # 2017 card: no published check character, format only
            if not value.startswith("9"):
                _fail_format(doc_type, "expected 18 digits starting with 9, or 3 letters + 12")
            _check_gb11643(value, doc_type, today)
            # 2023 card: 9, issuing province (2), nationality (3), birth date (8), sequence (3)
            # and the GB 11643 check character, so the birth date sits where a resident ID's does.
            if value[1:3] not in _MAINLAND_PROVINCES:
                _fail_region(doc_type, "the issuing province code is unknown")
        case DocumentType.hk_macao_travel_permit:
            _check_pattern(_HK_MACAO_PERMIT, value, doc_type, "expected H or M and 8 or 10 digits")
        case DocumentType.taiwan_travel_permit:
            _check_pattern(_TAIWAN_PERMIT, value, doc_type, "expected 8 or 10 digits")
        case DocumentType.passport:
            if not (_PRC_PASSPORT.fullmatch(value) or _ICAO_PASSPORT.fullmatch(value)):
                _fail_format(doc_type, "expected 5-17 letters and digits, at least one a digit")
        case DocumentType.military_id:
            _check_pattern(_MILITARY_ID, value, doc_type, "expected 6-10 digits")
        case DocumentType.uscc:
            _check_pattern(_USCC, value, doc_type, "expected 18 characters of GB 32100")
            if value[17] != uscc_check_char(value[:17]):
                raise IdentityDocumentError(INVALID_CHECKSUM, "uscc: the check character is wrong")
        case _:
            assert_never(doc_type)
    return value


def uscc_check_char(body: str) -> str:
    """GB 32100-2015 §5.2 MOD 31 check character for the first 17 characters of a USCC.

    C18 = alphabet[(31 - Σ value(Ci)·Wi mod 31) mod 31]; value() is the index in the alphabet.
    """
    if len(body) != 17 or any(c not in _USCC_ALPHABET for c in body):
        raise IdentityDocumentError(INVALID_FORMAT, "uscc: expected 17 characters of GB 32100")
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(body, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def validate_mobile(number: str) -> str:
    """Return the 11-digit mainland mobile number (1[3-9]xxxxxxxxx) from a typed one.

    Accepts a +86, 0086 or 86 country prefix, spaces and dashes; raises code `invalid_mobile`.
    """
    match = _MOBILE.fullmatch(normalise(number))
    if match is None:
        raise IdentityDocumentError(INVALID_MOBILE, "expected an 11-digit mainland mobile number")
    return match.group(1)


def validate_phone(number: str) -> str:
    """Return a sender's phone number in one form: a mainland mobile as its 11 digits, a
    mainland landline as 0 and its digits, any other country's number as + and its digits.

    The law asks for the sender's phone, not a mainland mobile one: a sender showing a Hong
    Kong or Macao permit or a passport may well have neither. Raises code `invalid_phone`.
    """
    with contextlib.suppress(IdentityDocumentError):
        return validate_mobile(number)
    value = normalise(number)
    if value.startswith("01"):  # a mobile dialled with a trunk 0 (no area code starts 01 but 010)
        with contextlib.suppress(IdentityDocumentError):
            return validate_mobile(value[1:])
    if _LANDLINE.fullmatch(value):
        return value
    international = _INTERNATIONAL.fullmatch(value)
    if international is not None:
        digits = international.group(1)
        if not digits.startswith("86"):
            return "+" + digits
        if _LANDLINE.fullmatch("0" + digits[2:]):  # +86 27 1234 5678: a mainland landline
            return "0" + digits[2:]
    raise IdentityDocumentError(
        INVALID_PHONE,
        "expected a mainland mobile or landline number, or another country's after + or 00",
    )


def mask_document(number: str) -> str:
    """Display mask of a document number: `4201**********1234` for 18 characters or more.

    Shorter numbers keep at most the first 2 and last 2 characters and never reveal more than
    half of the number.
    """
    value = normalise(number)
    keep = 4 if len(value) >= 18 else min(2, len(value) // 4)
    return _mask_middle(value, keep, keep)


def mask_phone(number: str) -> str:
    """Display mask of a phone number: `138****1234` (first 3, last 4) for a mobile number.

    Other numbers keep at most the first 3 and last 4 digits and never reveal more than half.
    """
    try:
        value = validate_mobile(number)
    except IdentityDocumentError:
        value = normalise(number)
    if len(value) >= 11:
        return _mask_middle(value, 3, 4)
    return _mask_middle(value, min(3, len(value) // 4), min(4, len(value) // 4))


def mask_name(name: str) -> str:
    """Display mask of a person's name: first character, then one star per remaining character
    (`张三丰` -> `张**`, `Li Lei` -> `L*****`); a one-character name is fully masked."""
    value = name.strip()
    if len(value) <= 1:
        return "*" * len(value)
    return value[0] + "*" * (len(value) - 1)


def _mask_middle(value: str, head: int, tail: int) -> str:
    hidden = len(value) - head - tail
    return value[:head] + "*" * hidden + value[len(value) - tail :]


def _check_gb11643(value: str, doc_type: DocumentType, today: date | None) -> None:
    """Format, ISO 7064 MOD 11-2 check character and birth date of a GB 11643 layout number.

    We use stdnum's MOD 11-2 but not `stdnum.cn.ric.validate`: besides the checksum it requires
    the county code to have existed in the birth year, which rejects genuine numbers (every
    810000 permit holder born before 1997, Chongqing 50xxxx codes issued to people born before
    1997, late first registrations under recoded counties), and a false rejection stops a
    lawful parcel. MOD 11-2 already catches every single-digit error and adjacent swap.
    """
    if not _GB11643.fullmatch(value):
        _fail_format(doc_type, "expected 17 digits and a check digit or X")
    if mod_11_2.checksum(value) != 1:  # GB 11643-1999 §7: Σ aᵢ·2^(18-i) ≡ 1 (mod 11)
        raise IdentityDocumentError(INVALID_CHECKSUM, f"{doc_type}: the check digit is wrong")
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        born = None
    if born is None or born.year < _EARLIEST_BIRTH_YEAR or (today is not None and born > today):
        raise IdentityDocumentError(INVALID_BIRTH_DATE, f"{doc_type}: the birth date is invalid")


def _check_pattern(pattern: re.Pattern[str], value: str, doc_type: DocumentType, hint: str) -> None:
    if not pattern.fullmatch(value):
        _fail_format(doc_type, hint)


def _fail_format(doc_type: DocumentType, hint: str) -> NoReturn:
    raise IdentityDocumentError(INVALID_FORMAT, f"{doc_type}: {hint}")


def _fail_region(doc_type: DocumentType, hint: str) -> NoReturn:
    raise IdentityDocumentError(INVALID_REGION, f"{doc_type}: {hint}")
