"""The audit log's signing key: a secret read from a file, and the MAC that signs each record.

Without a key, the chain shows a record altered, removed or reordered, but anyone who can write
the log can append records, or a whole segment, of their own: the chain's hashes need no secret.
With a key, every record carries ``key_id`` and ``mac`` (HMAC-SHA256 of the record's line without
``mac``), so a record made without the key is found by ``verdict audit verify --key-file``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

MIN_KEY_BYTES = 32  # 256 bits: the HMAC-SHA256 key size
MAX_KEY_FILE_BYTES = 4096


class AuditKeyError(ValueError):
    """The key file cannot be used; the message says why (never the key)."""


@dataclass(frozen=True)
class AuditKey:
    """A signing key and the id records name it by (a hash of it: the key stays secret)."""

    secret: bytes = field(repr=False)
    key_id: str

    @classmethod
    def from_secret(cls, secret: bytes) -> AuditKey:
        if len(secret) < MIN_KEY_BYTES:
            raise AuditKeyError(f"holds {len(secret)} bytes; at least {MIN_KEY_BYTES} are needed")
        key_id = hashlib.sha256(b"verdict-audit-key-id\0" + secret).hexdigest()[:16]
        return cls(secret, key_id)

    def mac(self, unsigned_line: str) -> str:
        """The hex HMAC-SHA256 of one record's line without its ``mac``."""
        return hmac.new(self.secret, unsigned_line.encode("utf-8"), hashlib.sha256).hexdigest()

    def signed(self, unsigned_line: str, mac: str) -> bool:
        """Whether ``mac`` is this key's MAC of ``unsigned_line`` (compared in constant time)."""
        # Bytes: compare_digest refuses str with non-ASCII characters (a forged mac "é...").
        expected = self.mac(unsigned_line).encode()
        return hmac.compare_digest(expected, mac.encode("utf-8", "surrogatepass"))


def read_audit_key(path: Path) -> AuditKey:
    """The key in ``path`` (its bytes, without surrounding whitespace); AuditKeyError says why
    it cannot be used: missing, not a regular file, too large or too short."""
    try:
        # Symlinks are followed: Kubernetes mounts each key of a Secret as one.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise AuditKeyError("does not exist") from None
    except OSError as exc:  # no permission, a directory, ...
        raise AuditKeyError(f"cannot be opened ({exc.strerror or type(exc).__name__})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block, a device never end
            raise AuditKeyError("is not a regular file")
        if info.st_size > MAX_KEY_FILE_BYTES:
            raise AuditKeyError(f"is larger than {MAX_KEY_FILE_BYTES} bytes")
        data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    return AuditKey.from_secret(data.strip())
