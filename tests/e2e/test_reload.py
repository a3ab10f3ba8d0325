"""Hot reload against the real server: edits, bad edits, editor renames, Kubernetes symlink swaps,
SIGHUP, the admin API, several workers, and 50 reloads under continuous traffic."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path

import requests

from gateway.config.load import config_version
from gateway.testing.process import start_gateway
from tests.conftest import wait_until, wait_watching


def config_text(tag: str, *, watch: bool = True, extra: str = "") -> str:
    return f"""# test config {tag}
backends:
  up: {{type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}}
models:
  {tag}-a: {{chain: [{{backend: up}}]}}
  {tag}-b: {{chain: [{{backend: up}}]}}
  {tag}-c: {{aliases: [{tag}-alias], chain: [{{backend: up}}]}}
reload:
  watch: {str(watch).lower()}
  debounce_ms: 50
{extra}"""


def model_ids(gateway) -> list[str]:
    response = requests.get(gateway.url("/v1/models"), timeout=5)
    assert response.status_code == 200
    return [m["id"] for m in response.json()["data"]]


def admin_config(gateway) -> dict:
    response = requests.get(gateway.url("/admin/api/config"), headers=gateway.admin_headers, timeout=5)
    assert response.status_code == 200
    return response.json()


def test_valid_edit_is_applied(gateway_server) -> None:
    """A save goes live without a restart (how fast: `gateway bench reload`, not a pass/fail here)."""
    gateway = gateway_server(config_text("v1"))
    assert model_ids(gateway) == ["v1-a", "v1-b", "v1-c", "v1-alias"]
    wait_watching(gateway)
    gateway.config_path.write_text(config_text("v2"))
    wait_until(lambda: model_ids(gateway)[0] == "v2-a", timeout=10)
    status = admin_config(gateway)
    assert status["source"] == "file"
    assert status["version"] == config_version(gateway.config_path.read_bytes())
    assert status["history"][0]["outcome"] == "applied"


def test_invalid_edit_keeps_the_old_config_and_reports_the_error(gateway_server) -> None:
    gateway = gateway_server(config_text("v1"))
    good_version = admin_config(gateway)["version"]
    wait_watching(gateway)
    gateway.config_path.write_text(
        config_text("v2").replace("backend: up}]}\n  v2-c", "backend: upp}]}\n  v2-c")
    )
    wait_until(lambda: admin_config(gateway)["last_error"] is not None, timeout=2)
    status = admin_config(gateway)
    assert status["version"] == good_version
    error = status["last_error"]["errors"][0]
    assert (error["line"], error["column"], error["path"]) == (6, 28, "models.v2-b.chain[0].backend")
    assert "no backend named 'upp'" in error["message"]
    assert model_ids(gateway)[0] == "v1-a"
    assert "config rejected" in gateway.log()
    # Fixing the file applies it and clears the error.
    gateway.config_path.write_text(config_text("v3"))
    wait_until(lambda: model_ids(gateway)[0] == "v3-a", timeout=2)
    assert admin_config(gateway)["last_error"] is None


def test_vim_style_save_by_rename_is_picked_up(gateway_server) -> None:
    gateway = gateway_server(config_text("v1"))
    wait_watching(gateway)
    path = gateway.config_path
    # vim (backupcopy=no): move the original to a backup, write a new file under the old name.
    os.rename(path, path.with_name(path.name + "~"))
    path.write_text(config_text("v2"))
    wait_until(lambda: model_ids(gateway)[0] == "v2-a", timeout=2)
    # Many other editors: write a temp file, rename it over the original.
    temp = path.with_name(".gateway.yaml.swp")
    temp.write_text(config_text("v3"))
    os.replace(temp, path)
    wait_until(lambda: model_ids(gateway)[0] == "v3-a", timeout=2)


def test_kubernetes_configmap_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    # The layout kubelet writes: gateway.yaml -> ..data/gateway.yaml, ..data -> ..<timestamp>/
    mount = tmp_path / "config"
    mount.mkdir()
    first = mount / "..2026_11_23_10_00_00.000000001"
    first.mkdir()
    (first / "gateway.yaml").write_text(config_text("v1"))
    (mount / "..data").symlink_to(first.name)
    (mount / "gateway.yaml").symlink_to("..data/gateway.yaml")
    gateway = start_gateway(mount / "gateway.yaml")
    try:
        assert model_ids(gateway)[0] == "v1-a"
        wait_watching(gateway)
        second = mount / "..2026_11_23_10_05_00.000000002"
        second.mkdir()
        (second / "gateway.yaml").write_text(config_text("v2"))
        (mount / "..data_tmp").symlink_to(second.name)
        os.replace(mount / "..data_tmp", mount / "..data")  # the atomic swap
        for child in first.iterdir():
            child.unlink()
        first.rmdir()
        wait_until(lambda: model_ids(gateway)[0] == "v2-a", timeout=2)
    finally:
        gateway.stop()


def test_sighup_and_admin_api_reload_without_a_watcher(gateway_server) -> None:
    gateway = gateway_server(config_text("v1", watch=False))
    assert admin_config(gateway)["watching"] is False, "reload.watch is false: no watcher"
    gateway.config_path.write_text(config_text("v2", watch=False))
    assert model_ids(gateway)[0] == "v1-a", "reloaded without being asked"
    gateway.process.send_signal(signal.SIGHUP)
    wait_until(lambda: model_ids(gateway)[0] == "v2-a", timeout=2)
    assert admin_config(gateway)["source"] == "signal"
    gateway.config_path.write_text(config_text("v3", watch=False))
    response = requests.post(
        gateway.url("/admin/api/config/reload"), headers=gateway.admin_headers, timeout=5
    )
    assert response.status_code == 200
    assert response.json()["outcome"] == "applied"
    assert model_ids(gateway)[0] == "v3-a"
    assert admin_config(gateway)["source"] == "api"
    # A rejected reload through the API is a 422 problem listing the errors.
    gateway.config_path.write_text(config_text("v4", watch=False) + "server: {port: many}\n")
    response = requests.post(
        gateway.url("/admin/api/config/reload"), headers=gateway.admin_headers, timeout=5
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["errors"][0]["path"] == "server.port"
    assert body["request_id"] == response.headers["x-request-id"]
    assert model_ids(gateway)[0] == "v3-a"


def test_every_worker_applies_the_edit(gateway_server) -> None:
    gateway = gateway_server(config_text("v1"), workers=2)
    watching: set[int] = set()

    def both_workers_watching() -> bool:
        # New connections are spread across the workers by the kernel; sample until both answered.
        status = requests.get(
            gateway.url("/admin/api/config"),
            headers={**gateway.admin_headers, "connection": "close"},
            timeout=5,
        ).json()
        if status["watching"]:
            watching.add(status["worker_pid"])
        return len(watching) == 2

    wait_until(both_workers_watching, timeout=20)
    gateway.config_path.write_text(config_text("v2"))
    new_version = config_version(gateway.config_path.read_bytes())
    seen: dict[int, str] = {}

    def both_workers_on_new_version() -> bool:
        # New connections are spread across the workers by the kernel; sample until both answered.
        status = requests.get(
            gateway.url("/admin/api/config"),
            headers={**gateway.admin_headers, "connection": "close"},
            timeout=5,
        ).json()
        seen[status["worker_pid"]] = status["version"]
        return len(seen) == 2 and set(seen.values()) == {new_version}

    wait_until(both_workers_on_new_version, timeout=10)


def test_fifty_reloads_under_continuous_traffic_lose_nothing(gateway_server) -> None:
    gateway = gateway_server(config_text("v0"))
    versions = {config_version(config_text("v0").encode()): "v0"}
    stop = threading.Event()
    failures: list[str] = []
    answers: Counter[str] = Counter()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.get(gateway.url("/v1/models"), timeout=5)
                except requests.RequestException as error:
                    failures.append(repr(error))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                    continue
                ids = [m["id"] for m in response.json()["data"]]
                tag = ids[0].split("-")[0]
                # One whole config version per answer: every id from the same tag, matching the header.
                if ids != [f"{tag}-a", f"{tag}-b", f"{tag}-c", f"{tag}-alias"]:
                    failures.append(f"mixed answer {ids}")
                if versions.get(response.headers["x-config-version"]) != tag:
                    failures.append(f"header {response.headers['x-config-version']} does not match {tag}")
                answers[tag] += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_watching(gateway)
        wait_until(lambda: answers["v0"] > 0, timeout=10)  # the clients are under way
        for i in range(1, 51):
            text = config_text(f"v{i}")
            versions[config_version(text.encode())] = f"v{i}"
            gateway.config_path.write_text(text)
            wait_until(
                lambda i=i: (
                    admin_config(gateway)["history"][0]["version"]
                    == config_version(config_text(f"v{i}").encode())
                ),
                timeout=5,
            )
            # Traffic meets every version: some client is answered by this one before the next save.
            wait_until(lambda i=i: answers[f"v{i}"] > 0 or bool(failures), timeout=5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not failures, failures[:10]
    applied = [
        e for e in admin_config(gateway)["history"] if e["outcome"] == "applied" and e["source"] == "file"
    ]
    assert len(applied) >= 50
    assert all(answers[f"v{i}"] > 0 for i in range(51)), answers
    print(f"{sum(answers.values())} requests across 50 reloads, {len(answers)} versions answered, 0 failed")
