"""Files the gateway creates once and then only reads (its key files)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_once(path: Path, text: str, mode: int = 0o600) -> bool:
    """Write ``text`` to ``path`` unless a file is there already; whether this call's text is
    the one in place.

    Written aside, synced, then hard-linked into place: a crash leaves no empty or half file
    (which every later start would refuse), and of two creators at once (two gateways on one
    data directory, or two starts in one process) one wins for both.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            return False
        return True
    finally:
        aside.unlink(missing_ok=True)


def replace_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace ``path``'s contents with ``text`` all at once: written aside, synced, renamed
    over it, and the rename synced. A crash leaves the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(aside, path)
    finally:
        aside.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
