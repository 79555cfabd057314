"""Content-addressed image files under the data directory (name = SHA-256 of the bytes)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from screening.storage.errors import StorageError


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: str, suffix: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / f"{digest}.{suffix}"

    def put(self, data: bytes, suffix: str) -> str:
        """Write ``data`` once (atomic rename; the file and its directory entries fsync'd, so a
        stored image survives a power cut); returns its SHA-256 hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_for(digest, suffix)
        if path.exists():
            return digest
        made = [d for d in (self.root, path.parent.parent, path.parent) if not d.exists()]
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            tmp = None
            _fsync_dir(path.parent)  # the file's name in its directory
            for directory in made:  # each directory made for it, in its parent
                _fsync_dir(directory.parent)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise StorageError(f"cannot store image: {exc}") from exc
        return digest

    def get(self, digest: str, suffix: str) -> bytes:
        path = self.path_for(digest, suffix)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"image {digest} is missing from the store") from exc


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
