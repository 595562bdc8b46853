"""Outgoing email: SMTP when MAIL_SERVER is set, otherwise files in instance/mail/ (development).

Messages carry ids, counts and links only, never pupil data (R65).
"""
from __future__ import annotations

import email.policy
import smtplib
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from flask import current_app

from portal.models.base import utcnow


def send(to: str | list[str], subject: str, body: str, headers: dict[str, str] | None = None) -> EmailMessage:
    """Send one plain-text message (with any extra headers, e.g. List-Unsubscribe) and return it."""
    cfg = current_app.config
    # Headers such as List-Unsubscribe hold one long URL that must not be folded into encoded words.
    msg = EmailMessage(policy=email.policy.default.clone(max_line_length=998)) if headers else EmailMessage()
    msg["From"] = cfg["MAIL_FROM"]
    msg["To"] = ", ".join([to] if isinstance(to, str) else to)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="portal")
    for name, value in (headers or {}).items():
        msg[name] = value
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
