"""The QR code authenticator apps scan at enrolment: an SVG from segno, drawn with attributes (no inline style)."""
from __future__ import annotations

import segno
from markupsafe import Markup


def qr_svg(uri: str) -> Markup:
    """Return an inline SVG of the otpauth:// link, titled for screen readers."""
    qr = segno.make(uri, error="m")
    svg = qr.svg_inline(scale=5, border=2, dark="#0b0c0c", light="#ffffff", title="QR code to scan with an authenticator app")
    return Markup(svg)  # nosec B704: segno escapes the title; the rest is its own markup (no user input)
