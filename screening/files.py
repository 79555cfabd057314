"""The gateway's key files: created once (``create_once``), replaced whole when an operator
rotates keys (``replace_file``, under ``locked``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def _written_aside(
    target: Path, text: str, mode: int, like: os.stat_result | None = None
) -> Iterator[Path]:
    """``text`` in a new file beside ``target``, synced, with ``mode`` (or ``like``'s owner,
    group and permissions); removed on the way out unless it was linked or renamed."""
    aside = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if like is not None and (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fh.fileno(), like.st_uid, like.st_gid)
            os.fchmod(fh.fileno(), stat.S_IMODE(like.st_mode) if like is not None else mode)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        yield aside
    finally:
        aside.unlink(missing_ok=True)


def create_once(path: Path, text: str, mode: int = 0o600) -> bool:
    """Write ``text`` to ``path`` unless a file is there already; whether this call's text is
    the one in place.

    Written aside, synced, then hard-linked into place: a crash leaves no empty or half file
    (which every later start would refuse), and of two creators at once (two gateways on one
    data directory, or two starts in one process) one wins for both.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _written_aside(path, text, mode) as aside:
        try:
            os.link(aside, path)
        except FileExistsError:
            return False
        return True


def replace_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace ``path``'s contents with ``text`` all at once: written aside, synced, renamed
    over it, and the rename synced. A crash leaves the old file or the new one, never a mix.

    The file keeps its owner, group and permissions (an operator running the command as root
    must not leave the gateway a key file it cannot read; ``PermissionError`` where they
    cannot be kept), and a link to it stays a link: the file it names is replaced. A new file
    gets ``mode``.
    """
    target = path.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        before: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        before = None
    with _written_aside(target, text, mode, like=before) as aside:
        os.replace(aside, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock for a read, change and write of ``path``: two key commands at once
    would otherwise each write their change over the other's. The lock is taken on the
    directory that holds it (opened read-only): nothing is created, so nothing is left owned by
    whoever ran first, and a directory that is not there is an error, not made."""
    fd = os.open(path.resolve().parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
