"""`flask portal check --deploy`: fails on the demo's settings with one line per problem, passes on the guide's example settings."""
from __future__ import annotations

import datetime as dt
import re
import secrets
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from portal.testing.databases import SERVICE_UNAVAILABLE
from tests.celery_support import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "portal.cfg.example"


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the command an operator runs, in its own process with only these settings."""
    return subprocess.run([sys.executable, "-m", "flask", "--app", "portal", "portal", "check", "--deploy"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


def base_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_") or k.startswith("PORTAL_TEST_")}
    env.update({"PORTAL_INSTANCE_PATH": str(tmp_path / "instance"), "PORTAL_DATABASE_URL": database_url})
    return env


def test_check_deploy_fails_on_the_demo_settings_with_one_line_per_problem(database_url, tmp_path):
    env = base_env(tmp_path, database_url)
    # What `make run` (scripts/run-dev.sh) sets, then `flask portal demo`'s users.
    env.update({
        "PORTAL_SESSION_COOKIE_SECURE": "false", "PORTAL_REMEMBER_COOKIE_SECURE": "false",
        "PORTAL_BASE_URL": "http://127.0.0.1:5000", "PORTAL_DATA_LOCATION": "UK",
        "PORTAL_CONNECTORS__wonde__base_url": "http://127.0.0.1:8761", "PORTAL_CONNECTORS__wonde__allow_insecure_http": "true",
    })
    made = subprocess.run([sys.executable, "-c", "from portal import create_app\nfrom portal.demo import build_demo\n"
                           "from portal.extensions import db\napp = create_app()\nwith app.app_context():\n"
                           "    build_demo(); db.session.commit()"], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert made.returncode == 0, made.stderr
    result = run_check(env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert all(re.match(r"^ERROR [\w.]+: .+\. Fix: .+$", line) for line in lines), lines
    settings = {line.split()[1].rstrip(":") for line in lines}
    expected = {"SECRET_KEY", "ENCRYPTION_KEYS", "BASE_URL", "SESSION_COOKIE_SECURE", "REMEMBER_COOKIE_SECURE",
                "RATELIMIT_STORAGE_URI", "MAIL_SERVER", "CONNECTORS.wonde.base_url", "CONNECTORS.wonde.allow_insecure_http",
                "TRUSTED_PROXIES", "users"}
    if database_url.startswith("sqlite"):
        expected.add("DATABASE_URL")
    assert expected <= settings, settings
    assert "demo user(s)" in result.stderr and "demo's published password" in result.stderr
    # Ids only, never an email address or a name.
    assert "@demo.example" not in result.stderr and "Demo" not in result.stderr
    assert re.search(r"^\d+ error\(s\), \d+ warning\(s\)\.$", result.stdout.strip().splitlines()[-1])


def _self_signed_localhost(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "smtp.crt", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def smtp_server(tmp_path):
    """A submission server on localhost with STARTTLS and a login, like the guide's MAIL_* settings expect."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    cert, key = _self_signed_localhost(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    class Accept:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=auth_data.login == b"portal@example.org" and auth_data.password == b"mailbox-password")

    port = free_port()
    controller = Controller(Accept(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=authenticator, auth_require_tls=True, server_hostname="localhost")
    controller.start()
    yield {"port": port, "cafile": cert}
    controller.stop()


@pytest.fixture
def redis_url(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip(f"{SERVICE_UNAVAILABLE} redis-server is not installed")
    server = RedisServer(tmp_path / "redis.log").start()
    yield server.url
    server.stop()


def guide_settings(tmp_path: Path, database_url: str, smtp_port: int, redis_url: str) -> str:
    """The example settings file after the guide's step 5: REPLACE values generated, EDIT lines pointed at this machine."""
    text = EXAMPLE.read_text()
    replacements = {
        'SECRET_KEY = "REPLACE-with-a-generated-secret"': f'SECRET_KEY = "{secrets.token_urlsafe(48)}"',
        'ENCRYPTION_KEYS = "REPLACE-with-a-generated-fernet-key"': f'ENCRYPTION_KEYS = "{Fernet.generate_key().decode()}"',
        'MAIL_PASSWORD = "REPLACE-with-the-mailbox-password"': 'MAIL_PASSWORD = "mailbox-password"',
        'MAIL_SERVER = "smtp.example.org"': 'MAIL_SERVER = "localhost"',
        "MAIL_PORT = 587": f"MAIL_PORT = {smtp_port}",
        'DATABASE_URL = "postgresql+psycopg://portal@/portal?host=/var/run/postgresql"': f'DATABASE_URL = "{database_url}"',
        'RATELIMIT_STORAGE_URI = "redis://127.0.0.1:6379/1"': f'RATELIMIT_STORAGE_URI = "{redis_url}/1"',
        'RETENTION_LEDGER_PATH = "/var/lib/portal-ledger/deletion-ledger.jsonl"':
            f'RETENTION_LEDGER_PATH = "{tmp_path / "ledger" / "deletion-ledger.jsonl"}"',
    }
    for old, new in replacements.items():
        assert old in text, f"the example settings no longer hold {old!r}"
        text = text.replace(old, new)
    assert not [line for line in text.splitlines() if "REPLACE" in line and not line.lstrip().startswith("#")]
    (tmp_path / "ledger").mkdir()
    return text


def test_check_deploy_passes_on_the_guides_example_settings(backend, database_url, tmp_path, smtp_server, redis_url):
    if backend == "sqlite":
        pytest.skip("the guide's settings use PostgreSQL (check --deploy refuses SQLite for several processes)")
    env = base_env(tmp_path, database_url)
    del env["PORTAL_DATABASE_URL"]  # from the settings file, as deployed
    env["SSL_CERT_FILE"] = str(smtp_server["cafile"])  # the machine trusts its mail server's certificate
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "portal.cfg").write_text(guide_settings(tmp_path, database_url, smtp_server["port"], redis_url))
    result = run_check(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr
    # No scheduler runs in this test: said, as a warning.
    assert "WARNING scheduler: no scheduler has beaten recently" in result.stdout


def test_check_deploy_fails_when_the_guides_settings_point_at_a_mail_server_that_is_down(backend, database_url, tmp_path, redis_url):
    if backend == "sqlite":
        pytest.skip("the guide's settings use PostgreSQL")
    env = base_env(tmp_path, database_url)
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "portal.cfg").write_text(guide_settings(tmp_path, database_url, free_port(), redis_url))
    result = run_check(env)
    assert result.returncode == 1
    assert re.search(r"^ERROR MAIL_SERVER: localhost:\d+ is unreachable \(\w+\)\. Fix: ", result.stderr, re.M)


def lines_of(app) -> list[str]:
    from portal.ops.deploycheck import run_checks

    with app.app_context():
        return [f.line() for f in run_checks()]


def test_check_deploy_sees_two_schedulers_and_a_ledger_path_that_differs_between_processes(make_app, tmp_path):
    from portal.extensions import db
    from portal.models import SchedulerHeartbeat
    from portal.models.base import utcnow
    from portal.ops.heartbeat import beat

    app = make_app(RETENTION_LEDGER_PATH=str(tmp_path / "ledger.jsonl"))
    with app.app_context():
        beat()
        db.session.add(SchedulerHeartbeat(owner="other-host:42", started_at=utcnow(), beat_at=utcnow(),
                                          ledger_path="/mnt/elsewhere/ledger.jsonl"))
        db.session.commit()
    found = lines_of(app)
    assert any(line.startswith("WARNING scheduler: 2 schedulers are running") for line in found), found
    assert any(line.startswith("ERROR RETENTION_LEDGER_PATH: a running scheduler uses /mnt/elsewhere/ledger.jsonl") for line in found)


def test_check_deploy_on_proxies_bind_and_metrics(make_app, tmp_path):
    public = lines_of(make_app(SERVE_BIND="0.0.0.0:8000", TRUSTED_PROXIES=1, METRICS_ENABLED=True, METRICS_TOKEN="short",
                               RETENTION_LEDGER_PATH=str(tmp_path / "missing" / "ledger.jsonl")))
    assert any(line.startswith("WARNING TRUSTED_PROXIES: the portal listens on 0.0.0.0:8000 for anyone") for line in public)
    assert any(line.startswith("ERROR METRICS_TOKEN: metrics are on without a token") for line in public)
    assert any(line.startswith(f"ERROR RETENTION_LEDGER_PATH: the folder {tmp_path / 'missing'} does not exist") for line in public)
    behind = lines_of(make_app(SERVE_BIND="127.0.0.1:8000", TRUSTED_PROXIES=1))
    assert not any("TRUSTED_PROXIES" in line for line in behind)
