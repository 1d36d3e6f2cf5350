"""Server TLS credentials that pick up rotated certificate and key files without a restart."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from verdict.errors import ConfigError, Diagnostic
from verdict.files import FileReadError, read_bytes
from verdict.telemetry.metrics import CONFIG_RELOADS

log = structlog.get_logger(__name__)
_Stamp = tuple[tuple[int, int, int, int], ...]
# A certificate chain, key or CA bundle; large public CA bundles are ~250 KiB.
MAX_TLS_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class TlsFiles:
    """Where the server's certificate chain, key and (for mutual TLS) client CA live."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def paths(self) -> tuple[Path, ...]:
        """Every file, in a fixed order."""
        return tuple(p for p in (self.cert, self.key, self.client_ca) if p is not None)


class ReloadingCredentials:
    """grpc dynamic SSL credentials whose fetcher re-reads the files when they change.

    grpc core calls the fetcher at every new connection's handshake; it costs three stat()
    calls while nothing changed. Established connections keep their session, so no call is
    dropped. A half-written rotation (a key that does not match the certificate) is refused
    and the last good configuration stays in use until the files are whole again.
    """

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._stamp = self._stat()
        self._failed: _Stamp | None = None
        self._initial = self._load()  # ConfigError at start is fatal
        self.reloads = 0

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials for ``add_secure_port``; client certificates required with a client CA."""
        # grpc's stub says the fetcher never returns None; grpc documents None as "unchanged".
        fetch: Any = self._fetch
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            fetch,
            require_client_authentication=self._files.client_ca is not None,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        stamp: _Stamp | None = None
        try:
            stamp = self._stat()
            if stamp in (self._stamp, self._failed):
                return None
            config = self._load()
        except (OSError, ConfigError) as exc:
            # Keep serving with the last good files; try again once they change again. The stamp
            # is the one taken before reading: a file completed since then is read next time.
            self._failed = stamp
            CONFIG_RELOADS.labels(file="tls", result="error").inc()
            log.error("tls_reload_failed", error=str(exc))
            return None
        except Exception as exc:  # never let an exception escape into grpc core
            CONFIG_RELOADS.labels(file="tls", result="error").inc()
            log.error("tls_reload_failed", error_type=type(exc).__name__)
            return None
        self._stamp, self._failed = stamp, None
        self.reloads += 1
        CONFIG_RELOADS.labels(file="tls", result="ok").inc()
        log.info("tls_reloaded", cert=str(self._files.cert))
        return config

    def _stat(self) -> _Stamp:
        stats = [os.stat(p) for p in self._files.paths()]
        return tuple((s.st_ino, s.st_dev, s.st_size, s.st_mtime_ns) for s in stats)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert, key = _read(self._files.cert), _read(self._files.key)
        check_pair(self._files.cert, cert, self._files.key, key)
        client_ca = None
        if self._files.client_ca is not None:
            client_ca = _read(self._files.client_ca)
            _certificates(self._files.client_ca, client_ca)
        return grpc.ssl_server_certificate_configuration([(key, cert)], client_ca)


def _read(path: Path) -> bytes:
    """A regular file of at most MAX_TLS_FILE_BYTES: grpc core calls the fetcher on its own
    thread at each handshake, so a FIFO or /dev/zero there would hang or fill the process."""
    try:
        return read_bytes(path, MAX_TLS_FILE_BYTES)
    except FileReadError as exc:
        raise _error(path, str(exc)) from None


def check_pair(cert_path: Path, cert: bytes, key_path: Path, key: bytes) -> None:
    """Raise ConfigError unless ``key`` is the private key of the first certificate in ``cert``."""
    leaf = _certificates(cert_path, cert)[0]
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise _error(key_path, "not an unencrypted PEM private key") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise _error(key_path, f"the key does not match the certificate in {cert_path}")


def _certificates(path: Path, pem: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise _error(path, "not a PEM certificate file") from None
    return certificates


def _error(path: Path, message: str) -> ConfigError:
    return ConfigError([Diagnostic(str(path), 0, message)])
