"""SMTP credentials only ever travel over TLS (API.md, Operations): `smtps://`, or STARTTLS,
which is then required: a server that does not offer it (someone on the path stripped it) gets
neither the password nor the receipt, and the job tries again later. Tested against a real
aiosmtpd with TLS, its certificate made here; the client verifies it like any other."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select, update

from azora_payments.config import Settings
from azora_payments.db.models import Job, Receipt
from azora_payments.db.types import utcnow
from azora_payments.domain import receipts
from azora_payments.domain.receipt_content import content_of
from azora_payments.mail import Delivery, Mailer, receipt_message
from tests.conftest import make_settings, open_services
from tests.receipts.conftest import SmtpServer, run_receipt_jobs, seed_succeeded
from tests.receipts.sample import SAMPLE

PASSWORD = "s3cret-smtp-pass"


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A private CA and a certificate for 127.0.0.1 / localhost that it signed."""
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Azora test CA"))
        .issuer_name(_name("Azora test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = Certificates(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    files.ca_file.write_bytes(ca.public_bytes(pem))
    files.cert_file.write_bytes(leaf.public_bytes(pem))
    files.key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


@pytest.fixture
def trust_ca(certificates: Certificates, monkeypatch: pytest.MonkeyPatch) -> None:
    # How an operator trusts a private CA: OpenSSL's own variable, read by the default context.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))


class AuthServer(SmtpServer):
    """aiosmtpd that accepts any log-in and notes whether it came over TLS."""

    def __init__(self) -> None:
        super().__init__()
        self.logins: list[tuple[bytes, bytes, bool]] = []

    def _authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth: Any
    ) -> AuthResult:
        encrypted = server.transport.get_extra_info("ssl_object") is not None
        self.logins.append((auth.login, auth.password, encrypted))
        return AuthResult(success=True)

    def start(
        self, *, starttls: ssl.SSLContext | None = None, implicit: ssl.SSLContext | None = None
    ) -> None:
        self.controller = Controller(
            self.inbox,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=implicit,
            tls_context=starttls,
            require_starttls=starttls is not None,
            authenticator=self._authenticator,
            # The attacker's server: it would take a password in clear.
            auth_require_tls=False,
        )
        self.controller.start()


@pytest.fixture
def server() -> Iterator[AuthServer]:
    smtp = AuthServer()
    yield smtp
    smtp.stop()


def message(recipient: str = "buyer@shop.example") -> Any:
    return receipt_message(
        sender="r@shop.example",
        sender_name="Shop",
        recipient=recipient,
        number="R-2026-000001",
        content=content_of(SAMPLE),
        lang="en",
        message_id="<rcpt_x.issued@shop.example>",
        pdf=b"%PDF-1.3",
    )


# ---------------------------------------------------------------- the connection


async def test_credentials_are_never_sent_without_starttls(server: AuthServer) -> None:
    server.start()  # offers AUTH in clear, no STARTTLS: what a stripping attacker shows
    from azora_payments.mail import StartTlsRequired

    mailer = Mailer(smtp_url=f"smtp://shop:{PASSWORD}@127.0.0.1:{server.port}", outbox_dir=None)
    with pytest.raises(StartTlsRequired):
        await mailer.send(message())
    assert server.logins == []
    assert server.inbox.messages == []


async def test_credentials_go_over_starttls(
    server: AuthServer, certificates: Certificates, trust_ca: None
) -> None:
    server.start(starttls=certificates.server_context())
    mailer = Mailer(smtp_url=f"smtp://shop:{PASSWORD}@127.0.0.1:{server.port}", outbox_dir=None)
    assert await mailer.send(message()) is Delivery.SMTP
    assert server.logins == [(b"shop", PASSWORD.encode(), True)]
    assert len(server.inbox.messages) == 1


async def test_credentials_go_over_smtps(
    server: AuthServer, certificates: Certificates, trust_ca: None
) -> None:
    server.start(implicit=certificates.server_context())
    mailer = Mailer(smtp_url=f"smtps://shop:{PASSWORD}@127.0.0.1:{server.port}", outbox_dir=None)
    assert await mailer.send(message()) is Delivery.SMTP
    assert server.logins == [(b"shop", PASSWORD.encode(), True)]
    assert len(server.inbox.messages) == 1


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
async def test_an_untrusted_certificate_is_refused(
    server: AuthServer, certificates: Certificates, scheme: str
) -> None:
    # No SSL_CERT_FILE: our CA is nobody's, as a man in the middle's would be.
    context = certificates.server_context()
    server.start(**({"starttls": context} if scheme == "smtp" else {"implicit": context}))
    mailer = Mailer(smtp_url=f"{scheme}://shop:{PASSWORD}@127.0.0.1:{server.port}", outbox_dir=None)
    with pytest.raises(ssl.SSLError):
        await mailer.send(message())
    assert server.logins == []
    assert server.inbox.messages == []


async def test_without_credentials_starttls_is_used_when_offered(
    server: AuthServer, certificates: Certificates, trust_ca: None
) -> None:
    server.start(starttls=certificates.server_context())
    mailer = Mailer(smtp_url=f"smtp://127.0.0.1:{server.port}", outbox_dir=None)
    assert await mailer.send(message()) is Delivery.SMTP
    assert len(server.inbox.messages) == 1


async def test_the_tls_context_is_built_once_per_mailer(
    server: AuthServer,
    certificates: Certificates,
    trust_ca: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Building it reads the whole CA store: once per message was a fifth of a receipt
    worker's CPU (py-spy, bench/receipts_bench.py)."""
    built: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    server.start(starttls=certificates.server_context())
    mailer = Mailer(smtp_url=f"smtp://127.0.0.1:{server.port}", outbox_dir=None)
    for _ in range(3):
        assert await mailer.send(message()) is Delivery.SMTP
    assert len(server.inbox.messages) == 3
    assert len(built) == 1


# ---------------------------------------------------------------- recipients


@pytest.mark.parametrize("to", ["a@shop.example, root", "a@shop.example; b@shop.example", "root"])
def test_a_message_has_one_plain_recipient(to: str) -> None:
    from azora_payments.mail import envelope_recipient

    mail = message()
    del mail["To"]
    mail["To"] = to
    with pytest.raises(ValueError, match=r"recipient|plain address"):
        envelope_recipient(mail)
    cc = message()
    cc["Cc"] = "b@shop.example"
    with pytest.raises(ValueError, match="Cc"):
        envelope_recipient(cc)
    assert envelope_recipient(message()) == "buyer@shop.example"


async def test_the_envelope_names_only_the_recipient(server: AuthServer) -> None:
    server.start()
    mail = message()
    mail["Bcc"] = "b@shop.example"  # were it ever there, smtplib would send to it
    mailer = Mailer(smtp_url=f"smtp://127.0.0.1:{server.port}", outbox_dir=None)
    with pytest.raises(ValueError, match="Bcc"):
        await mailer.send(mail)
    assert await mailer.send(message("one@shop.example")) is Delivery.SMTP
    assert server.inbox.recipients == [["one@shop.example"]]


# ---------------------------------------------------------------- the job


async def test_a_stripped_starttls_fails_the_job_and_it_is_sent_later(
    sqlite_database_url: str,
    tmp_path: Path,
    server: AuthServer,
    certificates: Certificates,
    trust_ca: None,
) -> None:
    settings: Settings = make_settings(
        sqlite_database_url,
        receipt_storage=str(tmp_path / "receipts"),
        smtp_url=f"smtp://shop:{PASSWORD}@127.0.0.1:{server.port}",
    )
    server.start()
    async with open_services(settings) as services:
        payment_id = await seed_succeeded(services)
        await run_receipt_jobs(services)
        async with services.db.read() as session:
            job = await session.scalar(select(Job).where(Job.kind == receipts.EMAIL))
            receipt = await session.scalar(select(Receipt).where(Receipt.payment_id == payment_id))
        assert job is not None
        assert receipt is not None
        assert (job.status, job.attempts) == ("ready", 1)
        assert job.run_at > utcnow()  # backed off, tried again later
        assert "STARTTLS" in (job.last_error or "")
        assert PASSWORD not in (job.last_error or "")
        assert receipt.emailed_at is None
        assert server.logins == []

        server.stop()
        server.start(starttls=certificates.server_context())  # the path is clean again
        async with services.db.transaction() as session:
            await session.execute(
                update(Job).where(Job.kind == receipts.EMAIL).values(run_at=utcnow())
            )
        await run_receipt_jobs(services, receipts.EMAIL)
        async with services.db.read() as session:
            receipt = await session.scalar(select(Receipt).where(Receipt.payment_id == payment_id))
        assert receipt is not None
        assert receipt.emailed_at is not None
    assert server.logins == [(b"shop", PASSWORD.encode(), True)]
    assert server.inbox.recipients == [["buyer@shop.example"]]
