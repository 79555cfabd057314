"""The bridge's exceptions, one class per real condition.

::

    BridgeError
    ├── ProtocolError             the scanner link protocol (sans-IO core)
    │   ├── FrameError            bytes that are not one well-formed frame
    │   │   ├── CrcError          frame CRC-32 does not match
    │   │   └── UnsupportedVersionError
    │   ├── MessageError          a well-framed payload that does not decode
    │   └── LocalProtocolError    we were asked to send something the protocol cannot carry
    ├── LinkError                 the transport to the scanner (socket / serial port)
    ├── AssemblyError             line stream inconsistent with the scanner's HELLO
    ├── SpoolError
    │   └── SpoolFullError        the spool is at its bound; the caller must stop the belt
    ├── UploadError
    │   ├── TransientUploadError  retry later (5xx, 503 + Retry-After, connection errors)
    │   └── PermanentUploadError  4xx / 409: a bug or a rejected scan, kept as dead + alarm
    ├── VideoSourceError          a capture device or video file that cannot be read
    └── FileImportError           an image or DICOM file that cannot be imported
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error raised by firmware_bridge."""


class ProtocolError(BridgeError):
    """The scanner link protocol was violated."""


class FrameError(ProtocolError):
    """Bytes that are not one well-formed frame."""


class CrcError(FrameError):
    """The frame's CRC-32 does not match its header and payload."""


class UnsupportedVersionError(FrameError):
    """The frame carries a protocol version this bridge does not speak."""


class MessageError(ProtocolError):
    """A correctly framed payload that does not decode as its message type."""


class LocalProtocolError(ProtocolError):
    """We were asked to encode something the protocol cannot carry (a bug on our side)."""


class LinkError(BridgeError):
    """The transport to the scanner failed or cannot be opened."""


class AssemblyError(BridgeError):
    """The line stream is inconsistent with the scanner's declared geometry."""


class SpoolError(BridgeError):
    """The durable spool failed."""


class SpoolFullError(SpoolError):
    """The spool reached its bound. Nothing is dropped: the caller stops the belt and alarms."""


class UploadError(BridgeError):
    """Sending a scan to the gateway failed."""


class TransientUploadError(UploadError):
    """Retry later; ``retry_after`` (seconds) when the gateway said so."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class KeyRefusedError(TransientUploadError):
    """401/403: the gateway refuses the station key. The key is wrong, rotated or revoked, not
    the scan: keep every scan pending (and alarm) until the bridge runs with a good key."""


class PermanentUploadError(UploadError):
    """The gateway rejected the scan for good (4xx, 409 conflict): keep it dead and alarm."""

    def __init__(self, message: str, *, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class VideoSourceError(BridgeError):
    """A capture device or video file that cannot be opened or read."""


class FileImportError(BridgeError):
    """An image pair or DICOM file that cannot be imported."""
