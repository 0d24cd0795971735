"""Outgoing mail: one plain-text message to one address, over SMTP (stdlib ``smtplib``).

Configured in the site hgrc by ``[hosting] smtp = HOST:PORT`` (a relay that takes
mail without a login, e.g. the local MTA) and ``[hosting] mail-from``; links in
mails start with ``[web] baseurl`` (Mercurial's own key for the site's public
URL; never the request's ``Host`` header,
which a client chooses: a reset link must not point elsewhere).  Mail is off
unless all three are set (:func:`configured`).

:func:`send` blocks (it talks to the server); the daemon calls it off the
reactor thread (:func:`daemon.account_pages.mail_later` with ``deferToThread``)
and never lets its outcome change an answer.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from .errors import UserError

#: Seconds the SMTP conversation may take before it is abandoned.
SMTP_TIMEOUT = 30


@dataclass(frozen=True)
class MailSettings:
    host: str
    port: int
    sender: str
    base_url: str


def settings(ui) -> MailSettings | None:
    """The site's mail settings, or None when mail is off; UserError for a malformed ``smtp``."""
    smtp = ui.config(b"hosting", b"smtp").decode("utf-8", "replace").strip()
    sender = ui.config(b"hosting", b"mail-from").decode("utf-8", "replace").strip()
    base_url = (ui.config(b"web", b"baseurl") or b"").decode("utf-8", "replace").strip().rstrip("/")
    if not (smtp and sender and base_url):
        return None
    host, sep, port = smtp.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"[hosting] smtp must be HOST:PORT, not {smtp!r}")
    return MailSettings(host.strip("[]"), int(port), sender, base_url)


def configured(ui) -> bool:
    """Is outgoing mail set up (``[hosting] smtp``, ``mail-from`` and ``[web] baseurl``)?"""
    return settings(ui) is not None


def message(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg.set_content(body)
    return msg


def send(site, to: str, subject: str, body: str) -> None:
    """Send one plain-text mail with ``site``'s settings (blocking); UserError when mail is off."""
    conf = settings(site.ui)
    if conf is None:
        raise UserError("mail is not configured ([hosting] smtp and mail-from, [web] baseurl)")
    with smtplib.SMTP(conf.host, conf.port, timeout=SMTP_TIMEOUT) as smtp:
        smtp.send_message(message(conf.sender, to, subject, body))
