"""The files docs/deploy.md installs: systemd units, proxy sites, example settings, Dockerfile and compose file.

Checked statically here (units with systemd-analyze where it is installed); the image itself is built
where a Docker daemon runs, and that test is skipped with the reason elsewhere.
"""
from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
PORTAL = Path(sys.executable).with_name("portal")


def config_keys() -> set[str]:
    import portal.config as defaults

    # TRUSTED_PROXIES is read with a default of 0 where it is not a default yet (portal.ops.deploycheck).
    return {k for k in vars(defaults) if k.isupper()} | {"TRUSTED_PROXIES"}


def unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return parser


def test_every_service_runs_as_the_portal_user_with_an_existing_command():
    assert {u.name for u in UNITS} >= {"portal-web.service", "portal-scheduler.service", "portal-worker.service"}
    for path in UNITS:
        service = unit(path)["Service"]
        assert service["User"] == "portal" and service["Environment"] == "PORTAL_INSTANCE_PATH=/var/lib/portal", path.name
        assert service["ProtectSystem"] == "strict"
        if path.name != "portal-backup.service":  # the backup only reads the ledger
            assert "/var/lib/portal-ledger" in service["ReadWritePaths"].split(), path.name
    assert unit(DEPLOY / "systemd" / "portal-web.service")["Service"]["ExecStart"] == "/opt/portal/venv/bin/portal serve"
    assert unit(DEPLOY / "systemd" / "portal-web.service")["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit(DEPLOY / "systemd" / "portal-scheduler.service")["Service"]["ExecStart"] == "/opt/portal/venv/bin/portal scheduler"
    # The commands the units start exist in this version.
    for args in (["serve", "--help"], ["scheduler", "--help"]):
        result = subprocess.run([str(PORTAL), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed: unit files checked by the parser only")
def test_systemd_accepts_every_unit(tmp_path):
    for path in [*UNITS, DEPLOY / "systemd" / "portal-backup.timer"]:
        # The real paths and user exist only on a deployed machine: point them at this checkout's.
        text = (path.read_text().replace("/opt/portal/venv/bin/", f"{PORTAL.parent}/")
                .replace("User=portal", "User=root").replace("Group=portal", "Group=root"))
        (tmp_path / path.name).write_text(text)
    for path in sorted(tmp_path.iterdir()):
        result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "Unknown" not in result.stderr and "not executable" not in result.stderr, (path.name, result.stderr)


def test_the_example_settings_name_only_real_settings_and_the_proxy_sites_point_at_serve():
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+) = ", (DEPLOY / "portal.cfg.example").read_text(), re.M))
    assert names and names <= config_keys(), names - config_keys()
    env_names = {line.split("=", 1)[0].removeprefix("PORTAL_").split("__")[0]
                 for line in (DEPLOY / "docker" / "portal.env.example").read_text().splitlines() if line.startswith("PORTAL_")}
    assert env_names <= config_keys(), env_names - config_keys()
    example = {}
    exec(compile((DEPLOY / "portal.cfg.example").read_text(), "portal.cfg.example", "exec"), {}, example)  # noqa: S102 (our own file)
    nginx = (DEPLOY / "nginx" / "portal.conf").read_text()
    caddy = (DEPLOY / "caddy" / "Caddyfile").read_text()
    assert f"server {example['SERVE_BIND']};" in nginx and f"reverse_proxy {example['SERVE_BIND']}" in caddy
    for text in (nginx, caddy, (DEPLOY / "nginx" / "portal-proxy.conf").read_text()):
        assert text.count("{") == text.count("}")
    assert "X-Forwarded-For" in (DEPLOY / "nginx" / "portal-proxy.conf").read_text() and example["TRUSTED_PROXIES"] == 1
    assert "return 301 https://" in nginx and "$uri" in nginx and "$request_uri $server_protocol" not in nginx


def test_portalctl_is_valid_shell():
    assert subprocess.run(["sh", "-n", str(DEPLOY / "portalctl")]).returncode == 0


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_runs_one_non_root_process_and_copies_only_what_exists():
    instructions = dockerfile()
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for op, arg in instructions:
        if op in ("COPY", "ADD"):
            assert op == "COPY" and "http" not in arg
            for source in arg.split()[:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), source
        if op in ("CMD", "ENTRYPOINT"):
            assert isinstance(json.loads(arg), list)  # exec form: the process gets the signals
    assert [json.loads(a) for op, a in instructions if op == "ENTRYPOINT"] == [["portal"]]
    assert any(op == "HEALTHCHECK" and "/healthz" in arg for op, arg in instructions)
    extras = re.search(r'pip install -e "\.\[([a-z,]+)\]"', (ROOT / "Dockerfile").read_text()).group(1).split(",")
    assert all(f"\n{extra} =" in (ROOT / "setup.cfg").read_text() for extra in extras)


def test_compose_runs_web_scheduler_worker_postgresql_and_redis_read_only_and_non_root():
    compose = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"web", "scheduler", "worker", "db", "redis"} <= set(services)
    commands = {}
    for name in ("web", "scheduler", "worker", "upgrade"):
        svc = services[name]
        assert svc["read_only"] is True and svc["user"] == "10001:10001" and svc["cap_drop"] == ["ALL"], name
        assert (DEPLOY / "docker" / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()
        assert "/tmp" in svc["tmpfs"]
        commands[name] = svc.get("entrypoint") or ["portal", *svc["command"]]
    assert commands["web"] == ["portal", "serve"] and commands["scheduler"] == ["portal", "scheduler"]
    assert commands["worker"][:4] == ["celery", "-A", "portal.tasks", "worker"]
    assert services["web"]["ports"] == ["127.0.0.1:8000:8000"]  # TLS and the outside world go through the host's proxy


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
def test_the_image_builds_and_runs_as_non_root():
    if not _docker_works():
        pytest.skip("no Docker daemon runs on this machine: the image build is checked where one does "
                    "(the Dockerfile and compose file are checked statically above)")
    tag = "mis-portal:test"
    build = subprocess.run(["docker", "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stderr[-3000:]
    whoami = subprocess.run(["docker", "run", "--rm", "--read-only", "--entrypoint", "id", tag, "-u"], capture_output=True, text=True, timeout=120)
    assert whoami.stdout.strip() == "10001"


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (.ci/run installs nginx-light): the site was checked by the parser only")
def test_nginx_accepts_the_site(tmp_path):
    from tests.test_ops_check_deploy import _self_signed_localhost

    cert, key = _self_signed_localhost(tmp_path)
    (tmp_path / "portal-proxy.conf").write_text((DEPLOY / "nginx" / "portal-proxy.conf").read_text())
    site = ((DEPLOY / "nginx" / "portal.conf").read_text()
            .replace("/etc/letsencrypt/live/portal.example.org/fullchain.pem", str(cert))
            .replace("/etc/letsencrypt/live/portal.example.org/privkey.pem", str(key))
            .replace("/etc/nginx/portal-proxy.conf", str(tmp_path / "portal-proxy.conf"))
            .replace("/var/log/nginx/", f"{tmp_path}/"))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path};\n  include {tmp_path}/site.conf;\n}}\n")
    result = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "[warn]" not in result.stderr, result.stderr
