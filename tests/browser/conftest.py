"""Browser fixtures: the portal served by a real werkzeug server on a free port, Debian's Chromium through Playwright, axe-core."""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import pyotp
import pytest
from werkzeug.serving import make_server

from tests import factories

ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (Debian's build, not a downloaded one)."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"service unavailable: no Chromium at {CHROMIUM}")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


class LiveServer:
    """The app served over real HTTP in a thread; ``url`` is its base address."""

    def __init__(self, app) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="portal-live-server", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def serve(make_app):
    """Start a live server for an app built with the given config overrides (CSRF on, as in production)."""
    servers = []

    def start(**overrides):
        app = make_app(WTF_CSRF_ENABLED=True, **overrides)
        server = LiveServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15000)
    # The portal's CSP allows no inline script or style: anything a page still has inline is refused and reported.
    refused: list[str] = []
    page.on("console", lambda m: refused.append(f"{page.url}: {m.text}") if "Content Security Policy" in m.text else None)
    yield page
    context.close()
    assert refused == [], "the content security policy refused:\n" + "\n".join(refused)


def sign_in(page, base_url: str, user, password: str = factories.PASSWORD) -> None:
    """Sign in through the real forms, including the TOTP step for support staff."""
    page.goto(f"{base_url}/login")
    page.get_by_label("Email address").fill(user.email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    if user.needs_totp:
        page.wait_for_url("**/login/totp**")
        page.locator("input[name=code]").fill(pyotp.TOTP(user.totp_secret).now())
        page.locator("form button[type=submit]").click()
    page.wait_for_load_state()


def check_accessibility(page) -> None:
    """Run axe-core in the page and fail on any WCAG 2.2 AA violation, naming rule and elements."""
    # A page reached by a click may still be loading its stylesheet: judged unstyled, its skip link (shown
    # until the CSS moves it off screen) fails target-size. Wait for the load event first.
    page.wait_for_load_state("load")
    # Evaluated through the DevTools protocol: a <script> tag with axe inline would be refused by the portal's CSP.
    page.evaluate(AXE.read_text(encoding="utf-8") + "\n;0")
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})", WCAG_TAGS
    )
    problems = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}" for v in result["violations"]
    ]
    assert problems == [], f"axe found WCAG 2.2 AA problems on {page.url}:\n" + "\n".join(problems)


def screenshot(page, name: str) -> None:
    """Take a full-page screenshot; it replaces docs/screenshots' copy only with UPDATE_SCREENSHOTS=1 (`make screenshots`).

    So a test run leaves the working tree as it found it.
    """
    update = os.environ.get("UPDATE_SCREENSHOTS") == "1"
    folder = SCREENSHOTS if update else Path(tempfile.gettempdir()) / "portal-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def plain(obj, *names: str):
    """Copy a row's attributes into a plain object usable after its app context ends."""
    from types import SimpleNamespace

    names = names or ("id", "name", "email", "needs_totp", "totp_secret")
    return SimpleNamespace(**{n: getattr(obj, n) for n in names if hasattr(obj, n)})
