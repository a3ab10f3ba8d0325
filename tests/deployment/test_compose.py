"""The compose stack (examples/compose): valid against the Compose Specification's schema, every service
checked for health and started after what it needs is healthy, every mounted file in the repository,
and the pieces (gateway config, Prometheus, Grafana) pointing at each other."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import yaml

from gateway.auth import exposure_issue
from gateway.config.load import load_config
from gateway.testing.process import start_gateway
from gateway.testing.redis_server import RedisServer
from tests.audit.conftest import PG_HOST, PG_PORT, PG_SKIP, pg_execute, postgres_available, query, run_sync
from tests.conftest import service_missing, wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "examples" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
SPEC = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"
#: Services that may go without a healthcheck (nothing depends on the dashboards).
NO_HEALTHCHECK_NEEDED = {"grafana"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, Any]:
    return compose()["services"]


def mounts(service: str) -> dict[str, Path]:
    """Bind mounts of `service`: the target in the container → the source on the host (resolved)."""
    found = {}
    for volume in services()[service].get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = (COMPOSE_DIR / source).resolve()
    return found


def env_example() -> dict[str, str]:
    lines = (COMPOSE_DIR / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SPEC.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=lambda e: e.path)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_specification_rejects_what_it_should() -> None:
    """The vendored schema is the real one: it refuses an unknown service key and a bad condition."""
    validator = jsonschema.Draft7Validator(json.loads(SPEC.read_text()))
    broken = compose()
    broken["services"]["redis"]["helthcheck"] = {}
    assert not validator.is_valid(broken)
    broken = compose()
    broken["services"]["gateway"]["depends_on"]["redis"]["condition"] = "service_happy"
    assert not validator.is_valid(broken)


def test_the_stack_has_its_five_services() -> None:
    assert set(services()) == {"gateway", "postgres", "redis", "prometheus", "grafana"}


def test_every_service_but_the_dashboards_has_a_healthcheck() -> None:
    for name, service in services().items():
        healthcheck = service.get("healthcheck")
        if healthcheck is None:
            assert name in NO_HEALTHCHECK_NEEDED, f"{name} has no healthcheck"
            continue
        assert not healthcheck.get("disable"), name
        assert healthcheck["test"][0] in ("CMD", "CMD-SHELL"), name


def test_every_dependency_waits_for_a_healthy_service() -> None:
    for name, service in services().items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: use depends_on's long form with a condition"
        for dependency, spec in depends_on.items():
            assert spec == {"condition": "service_healthy"}, f"{name} → {dependency}"
            assert "healthcheck" in services()[dependency], f"{name} waits for {dependency}, which has none"
    assert set(services()["gateway"]["depends_on"]) == {"postgres", "redis"}
    assert set(services()["prometheus"]["depends_on"]) == {"gateway"}


def test_images_are_pinned() -> None:
    for name, service in services().items():
        image = service["image"]
        assert re.search(r":[0-9v][\w.-]*$", image), f"{name}: pin a version, not {image!r}"
        assert "latest" not in image


def test_mounted_files_and_the_build_exist_in_the_repository() -> None:
    for name in services():
        for target, source in mounts(name).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is not in the repository"
            assert ROOT in source.parents, source
    build = services()["gateway"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).is_file()


def test_the_gateway_config_directory_is_mounted_read_write_with_the_read_only_variant_shown() -> None:
    volumes = services()["gateway"]["volumes"]
    assert "./gateway:/etc/gateway" in volumes  # write-back renames a file in this directory
    text = COMPOSE_FILE.read_text()
    assert "./gateway:/etc/gateway:ro" in text and "write_back: false" in text
    config = yaml.safe_load((COMPOSE_DIR / "gateway" / "gateway.yaml").read_text())
    assert config["admin"]["write_back"] is True


def test_the_stop_grace_period_is_longer_than_the_gateway_drain() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "gateway" / "gateway.yaml").read_text())
    grace = services()["gateway"]["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > config["server"]["graceful_shutdown_seconds"]


def test_the_gateway_config_is_valid_and_uses_the_stack() -> None:
    env = {name: value or "x" for name, value in env_example().items()}
    env["GATEWAY_CLIENT_KEY_SHA256"], env["GATEWAY_ADMIN_KEY_SHA256"] = "ab" * 32, "cd" * 32
    env["OPENAI_API_KEY"] = env["ANTHROPIC_API_KEY"] = ""
    config = load_config(COMPOSE_DIR / "gateway" / "gateway.yaml", env=env)
    assert exposure_issue(config, "0.0.0.0") is None
    assert re.fullmatch(r"postgres://gateway:x@postgres:5432/gateway", config.audit.database_url)
    assert config.limits.store == config.cache.store == "redis://redis:6379/0"
    state = Path("/var/lib/gateway")
    assert state in config.audit.spill_path.parents  # the volume, not the mounted config directory
    assert state in Path(config.backend("local").path).parents


def test_the_gateway_config_serves_with_a_real_postgres_and_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The stack's gateway.yaml with only the service names pointed at this machine's PostgreSQL and a
    private Redis: a keyed request is served, audited in PostgreSQL, and counted in Redis."""
    if not postgres_available():
        service_missing(PG_SKIP)
    database = f"gateway_compose_{os.getpid()}"
    run_sync(pg_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    run_sync(pg_execute(f'CREATE DATABASE "{database}"'))
    text = (COMPOSE_DIR / "gateway" / "gateway.yaml").read_text()
    url = f"postgres://postgres@{PG_HOST}:{PG_PORT}/{database}"
    text = text.replace("postgres://gateway:${AUDIT_DATABASE_PASSWORD}@postgres:5432/gateway", url)
    text = text.replace("redis://redis:6379/0", redis_server.url())
    text = text.replace("/var/lib/gateway", str(tmp_path / "state"))
    assert "postgres:5432" not in text and "redis:6379" not in text
    (tmp_path / "state").mkdir()
    config = tmp_path / "gateway" / "gateway.yaml"
    config.parent.mkdir()
    config.write_text(text)
    client_key, admin_key = "compose-client-key", "compose-admin-key"
    env = {
        "GATEWAY_CLIENT_KEY_SHA256": hashlib.sha256(client_key.encode()).hexdigest(),
        "GATEWAY_ADMIN_KEY_SHA256": hashlib.sha256(admin_key.encode()).hexdigest(),
        "OPENAI_API_KEY": "",
        "ANTHROPIC_API_KEY": "",
    }
    gateway = start_gateway(config, env=env, ready_path="/health", timeout=90)
    try:

        def checks() -> dict[str, Any]:
            return requests.get(gateway.url("/ready"), timeout=10).json()["checks"]

        # The audit writer connects in the background after start.
        wait_until(lambda: checks()["audit"]["db_up"] is True, timeout=30)
        assert checks()["limits"]["ok"] is True
        answer = requests.post(
            gateway.url("/v1/chat/completions"),
            headers={"authorization": f"Bearer {client_key}"},
            json={"model": "local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        request_id = answer.headers["x-request-id"]

        def audited() -> bool:
            rows = run_sync(query(url, 'SELECT "client_key" FROM "audit_records"'))
            return rows == [{"client_key": "default"}]

        wait_until(audited, timeout=30)
        keys = subprocess.run(
            ["redis-cli", "-p", str(redis_server.port), "--scan", "--pattern", "gateway:*"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert keys, "the limits store wrote nothing to Redis"
        logs = requests.get(
            gateway.url("/admin/api/logs"), headers={"authorization": f"Bearer {admin_key}"}, timeout=10
        ).json()
        assert [r["request_id"] for r in logs["records"]] == [request_id]
    finally:
        gateway.stop()
        run_sync(pg_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def test_every_variable_the_stack_needs_is_in_env_example() -> None:
    example = env_example()
    texts = [COMPOSE_FILE.read_text(), (COMPOSE_DIR / "gateway" / "gateway.yaml").read_text()]
    needed = {name for text in texts for name in re.findall(r"\$\{([A-Z0-9_]+)", text)}
    assert needed <= set(example), sorted(needed - set(example))
    assert not any(value for name, value in example.items() if re.search(r"KEY|SECRET|PASSWORD", name))


def test_prometheus_scrapes_the_gateway_and_loads_the_alert_rules() -> None:
    mounted = mounts("prometheus")
    config = yaml.safe_load(mounted["/etc/prometheus/prometheus.yml"].read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert mounted["/etc/prometheus/alerts.yml"] == ROOT / "examples" / "observability" / "alerts.yml"
    [job] = config["scrape_configs"]
    gateway = yaml.safe_load((COMPOSE_DIR / "gateway" / "gateway.yaml").read_text())
    assert job["metrics_path"] == gateway["telemetry"]["prometheus"]["path"]
    assert job["static_configs"] == [{"targets": [f"gateway:{gateway['server']['port']}"]}]


def test_grafana_provisions_the_prometheus_source_and_the_dashboard() -> None:
    mounted = mounts("grafana")
    provisioning = mounted["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    [provider] = yaml.safe_load((provisioning / "dashboards" / "gateway.yml").read_text())["providers"]
    dashboards = [target for target in mounted if target.startswith(provider["options"]["path"] + "/")]
    assert dashboards == ["/var/lib/grafana/dashboards/gateway.json"]
    dashboard = json.loads(mounted[dashboards[0]].read_text())
    # Provisioned from a file, `${DS_PROMETHEUS}` resolves through the dashboard's data source variable.
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"


def compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not compose_plugin(), reason="`docker compose version` fails: no compose plugin here")
def test_docker_compose_config_accepts_the_stack() -> None:
    env = {**os.environ, **{name: value or "x" for name, value in env_example().items()}}
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=COMPOSE_DIR,
    )
    assert result.returncode == 0, result.stderr
