"""Throwaway certificate authority, server and client certificates (openssl CLI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_DAYS = "30"
# EC keys are generated in milliseconds, RSA keys can take a second each.
_KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class TLSFiles:
    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


class CertificateError(RuntimeError):
    """openssl is missing or refused to produce a certificate."""


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise CertificateError("the openssl command is not installed (apt-get install openssl)")
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise CertificateError(f"openssl {args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def _leaf(directory: Path, name: str, common_name: str, extensions: str) -> None:
    ext_file = directory / f"{name}.ext"
    ext_file.write_text(extensions)
    _openssl(
        "req", *_KEY_ARGS, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name}", cwd=directory
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-days", _DAYS, "-sha256", "-extfile", ext_file.name, cwd=directory,
    )  # fmt: skip
    os.chmod(directory / f"{name}.key", 0o600)


def generate(directory: str | os.PathLike[str]) -> TLSFiles:
    """Create ca.pem, server.pem/key (CN=localhost, SAN localhost + 127.0.0.1) and client.pem/key."""
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", *_KEY_ARGS, "-keyout", "ca.key", "-out", "ca.pem", "-days", _DAYS, "-sha256",
        "-subj", "/CN=fastrpc test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=path,
    )  # fmt: skip
    common = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    common += "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    _leaf(
        path, "server", "localhost", common + "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    _leaf(path, "client", "fastrpc-client", common + "extendedKeyUsage=clientAuth\n")
    return TLSFiles(
        ca_file=str(path / "ca.pem"),
        server_cert=str(path / "server.pem"),
        server_key=str(path / "server.key"),
        client_cert=str(path / "client.pem"),
        client_key=str(path / "client.key"),
    )
