"""Errors of the web console; the gateway's problem middleware maps them like any other.

ScreeningError
└── PdfUnavailableError             501  pdf_unavailable (no Chromium binary on this host)
    └── PdfRenderError              502  pdf_failed (Chromium ran but made no PDF)
"""

from __future__ import annotations

from screening.errors import ScreeningError


class PdfUnavailableError(ScreeningError):
    status = 501
    default_code = "pdf_unavailable"
    title = "PDF rendering unavailable"


class PdfRenderError(PdfUnavailableError):
    status = 502
    default_code = "pdf_failed"
    title = "PDF rendering failed"
