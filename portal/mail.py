"""Outgoing email: SMTP when MAIL_SERVER is set, otherwise files in instance/mail/ (development).

Messages carry ids, counts and links only, never pupil data (R65).
"""
from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from flask import current_app

from portal.models.base import utcnow


def send(to: str | list[str], subject: str, body: str) -> EmailMessage:
    """Send one plain-text message and return it."""
    cfg = current_app.config
    msg = EmailMessage()
    msg["From"] = cfg["MAIL_FROM"]
    msg["To"] = ", ".join([to] if isinstance(to, str) else to)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="portal")
    msg.set_content(body)
    if cfg.get("MAIL_SERVER"):
        with smtplib.SMTP(cfg["MAIL_SERVER"], cfg["MAIL_PORT"], timeout=30) as smtp:
            if cfg.get("MAIL_USE_TLS"):
                smtp.starttls()
            if cfg.get("MAIL_USERNAME"):
                smtp.login(cfg["MAIL_USERNAME"], cfg["MAIL_PASSWORD"] or "")
            smtp.send_message(msg)
    else:
        outbox = Path(current_app.instance_path) / "mail"
        outbox.mkdir(parents=True, exist_ok=True)
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
        (outbox / f"{stamp}.eml").write_bytes(bytes(msg))
    return msg


def outbox_dir() -> Path:
    """Return the development outbox folder."""
    return Path(current_app.instance_path) / "mail"
