"""E-mail: builds the receipt message and hands it to SMTP (SMTP_URL), or writes it to a folder
(MAIL_OUTBOX_DIR, the dev stack). Sending blocks, so it runs in a thread."""

from __future__ import annotations

import asyncio
import html
import os
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from email.headerregistry import AddressHeader
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from enum import StrEnum
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from azora_payments.addresses import plain_address
from azora_payments.db.types import utcnow
from azora_payments.domain.receipt_content import MARK_COLOURS, ReceiptContent

__all__ = [
    "Delivery",
    "Mailer",
    "SmtpTarget",
    "StartTlsRequired",
    "envelope_recipient",
    "parse_smtp_url",
    "receipt_message",
]

SMTP_TIMEOUT_SECONDS = 20.0


class Delivery(StrEnum):
    SMTP = "smtp"
    OUTBOX = "outbox"
    NOWHERE = "nowhere"


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None


class StartTlsRequired(smtplib.SMTPException):
    """The server offers no STARTTLS, and credentials are never sent in clear (someone on the
    path may have stripped it): the send fails, and its job tries again later."""


def parse_smtp_url(url: str) -> SmtpTarget:
    """`smtp://user:pass@host:587` (STARTTLS: required with credentials, else used when offered)
    or `smtps://…:465` (TLS from the first byte)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("SMTP_URL must be smtp://[user:pass@]host[:port] or smtps://…")
    implicit = parts.scheme == "smtps"
    return SmtpTarget(
        host=parts.hostname,
        port=parts.port or (465 if implicit else 587),
        implicit_tls=implicit,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


@cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("azora_payments", "templates"),
        autoescape=select_autoescape(("html",)),
        undefined=StrictUndefined,
    )


def _receipt_parts(
    message: EmailMessage, *, content: ReceiptContent, number: str, lang: str, intro: str | None
) -> None:
    """The text and HTML parts: the PDF's rows and words, in the same order."""
    text = content.as_text() + f"\nThe receipt is attached as a PDF ({number}.pdf).\n"
    message.set_content(f"{intro}\n\n{text}" if intro else text)
    fill, ink = MARK_COLOURS[content.mark] if content.mark else ("", "")
    html = (
        _templates()
        .get_template("receipt_email.html")
        .render(c=content, number=number, lang=lang, intro=intro, mark_fill=fill, mark_ink=ink)
    )
    message.add_alternative(html, subtype="html")


def _headers(
    message: EmailMessage, *, subject: str, sender: str, sender_name: str, recipient: str,
    message_id: str,
) -> None:  # fmt: skip
    message["Subject"] = subject
    message["From"] = formataddr((sender_name, sender))
    message["To"] = recipient
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id


def receipt_message(
    *,
    sender: str,
    sender_name: str,
    recipient: str,
    number: str,
    content: ReceiptContent,
    lang: str,
    message_id: str,
    pdf: bytes,
) -> EmailMessage:
    """The receipt e-mail: text and HTML alternatives that say what the PDF says, the PDF
    attached."""
    message = EmailMessage()
    _headers(
        message,
        subject=f"Your receipt {number} from {sender_name}",
        sender=sender,
        sender_name=sender_name,
        recipient=recipient,
        message_id=message_id,
    )
    _receipt_parts(message, content=content, number=number, lang=lang, intro=None)
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"{number}.pdf")
    return message


def refund_message(
    *,
    sender: str,
    sender_name: str,
    recipient: str,
    amount_text: str,
    description: str | None,
    receipt_number: str | None,
    content: ReceiptContent | None,
    lang: str,
    message_id: str,
    pdf: bytes | None,
) -> EmailMessage:
    """The e-mail telling the customer a refund succeeded, with the receipt as it now stands
    (its refunds listed) in the body and attached."""
    message = EmailMessage()
    _headers(
        message,
        subject=f"Your refund of {amount_text} from {sender_name}",
        sender=sender,
        sender_name=sender_name,
        recipient=recipient,
        message_id=message_id,
    )
    line = description or "your payment"
    reference = f" (receipt {receipt_number})" if receipt_number else ""
    intro = (
        f"{sender_name} has refunded {amount_text} for {line}{reference}. "
        "It can take 5 to 10 business days to appear on your statement."
    )
    if content is None or receipt_number is None or pdf is None:
        message.set_content(intro + "\n")
        message.add_alternative(
            f"<!doctype html><html><body><p>{html.escape(intro)}</p></body></html>",
            subtype="html",
        )
        return message
    _receipt_parts(message, content=content, number=receipt_number, lang=lang, intro=intro)
    message.add_attachment(
        pdf, maintype="application", subtype="pdf", filename=f"{receipt_number}.pdf"
    )
    return message


def envelope_recipient(message: EmailMessage) -> str:
    """The message's one recipient: a `To` of exactly one plain address, no `Cc` or `Bcc`."""
    if message.get_all("Cc") or message.get_all("Bcc"):
        raise ValueError("a receipt e-mail has one recipient, no Cc or Bcc")
    headers = message.get_all("To", [])
    # The header as the e-mail package parsed it: a defect means it read something else than
    # what was written (`a@x.example; b@y.example` reads as one address).
    header = headers[0] if len(headers) == 1 else None
    defects = getattr(header, "defects", None)  # on the parsed header class, not AddressHeader
    if not isinstance(header, AddressHeader) or defects or len(header.addresses) != 1:
        raise ValueError("a receipt e-mail has exactly one recipient")
    return plain_address(header.addresses[0].addr_spec)


class Mailer:
    """Sends over SMTP when `smtp_url` is set, else writes `.eml` files to `outbox_dir`, else
    has nowhere to send (the caller decides what that means)."""

    def __init__(self, *, smtp_url: str | None, outbox_dir: str | None) -> None:
        self.smtp = parse_smtp_url(smtp_url) if smtp_url else None
        self.outbox = Path(outbox_dir) if outbox_dir else None
        self._tls: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext:
        # Built once: building reads the whole CA store, a fifth of a receipt's CPU when done
        # per message. A changed CA store is read at the next start, as by any long-running
        # process. Two first sends at once may both build one; either serves.
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    @property
    def delivery(self) -> Delivery:
        if self.smtp is not None:
            return Delivery.SMTP
        return Delivery.OUTBOX if self.outbox is not None else Delivery.NOWHERE

    async def send(self, message: EmailMessage) -> Delivery:
        delivery = self.delivery
        if delivery is Delivery.SMTP:
            await asyncio.to_thread(self._smtp_send, message)
        elif delivery is Delivery.OUTBOX:
            await asyncio.to_thread(self._write_outbox, message)
        return delivery

    def _smtp_send(self, message: EmailMessage) -> None:
        target = self.smtp
        assert target is not None
        recipient = envelope_recipient(message)
        context = self._tls_context()
        client: smtplib.SMTP
        if target.implicit_tls:
            client = smtplib.SMTP_SSL(
                target.host, target.port, timeout=SMTP_TIMEOUT_SECONDS, context=context
            )
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=SMTP_TIMEOUT_SECONDS)
        with client:
            client.ehlo()
            if not target.implicit_tls:
                if client.has_extn("starttls"):
                    client.starttls(context=context)
                    client.ehlo()
                elif target.username:
                    raise StartTlsRequired("the SMTP server does not offer STARTTLS")
            if target.username:
                client.login(target.username, target.password or "")
            # The envelope names the one recipient: never what smtplib would read from headers.
            client.send_message(message, to_addrs=[recipient])

    def _write_outbox(self, message: EmailMessage) -> None:
        assert self.outbox is not None
        self.outbox.mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() or c in "-._" else "_" for c in message["Message-ID"])
        fd, tmp = tempfile.mkstemp(dir=self.outbox, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(message.as_bytes())
        os.replace(tmp, self.outbox / f"{name.strip('_')}.eml")
