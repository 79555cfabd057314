"""HTML -> PDF with headless Chromium, when a Chromium binary is installed on the host."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path

from screening.web.errors import PdfRenderError, PdfUnavailableError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
RENDER_TIMEOUT_S = 60.0  # a month's report renders in 1-3 s; a hung browser must not pile up
_LOCK = asyncio.Semaphore(2)  # Chromium is memory-hungry: at most two renders at once


def find_chromium(configured: str | None = None) -> str | None:
    """The configured binary if it exists, else the first of CANDIDATES on PATH."""
    if configured:
        return shutil.which(configured)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


async def html_to_pdf(html: str, chromium: str | None) -> bytes:
    """Print a self-contained HTML page (inline CSS and SVG, no network) to PDF."""
    if chromium is None:
        raise PdfUnavailableError(
            "no Chromium binary on this host: install chromium to get PDF reports, "
            "or print the HTML report from a browser"
        )
    async with _LOCK:
        with tempfile.TemporaryDirectory(prefix="screening-pdf-") as tmp:
            page = Path(tmp) / "report.html"
            out = Path(tmp) / "report.pdf"
            page.write_text(html, encoding="utf-8")
            proc = await asyncio.create_subprocess_exec(
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-pdf-header-footer",
                f"--user-data-dir={Path(tmp) / 'profile'}",
                f"--print-to-pdf={out}",
                page.as_uri(),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                _, err = await asyncio.wait_for(proc.communicate(), RENDER_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise PdfRenderError("Chromium did not finish the PDF in time") from None
            if proc.returncode != 0 or not out.exists():
                tail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
                raise PdfRenderError(f"Chromium exited with {proc.returncode}: {' '.join(tail)}")
            return out.read_bytes()
