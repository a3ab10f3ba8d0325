"""The runbooks (docs/runbooks/): one per alert, each naming the alert, real metrics, real log events and
real endpoints; linked from the index, docs/deployment.md and the README, with links that resolve."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from gateway.admin.openapi import load_openapi

from tests.deployment.test_alerts import exposed_names, rules

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
INDEX = RUNBOOKS / "README.md"
_EVENT = re.compile(r'"event": "([a-z_]+)"')


def pages() -> list[Path]:
    return sorted(p for p in RUNBOOKS.glob("*.md") if p != INDEX)


def logged_events() -> set[str]:
    """Every `event` the gateway logs (the `extra={"event": ...}` of its log calls)."""
    return {
        event
        for folder in ("gateway", "admin")
        for source in (ROOT / folder).rglob("*.py")
        for event in _EVENT.findall(source.read_text())
    }


def links(page: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", page.read_text())


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_each_alert_has_a_runbook_that_names_it() -> None:
    for rule in rules():
        page = ROOT / rule["annotations"]["runbook_url"]
        assert f"`{rule['alert']}`" in page.read_text(), f"{page.name} does not name {rule['alert']}"


def test_the_index_lists_every_runbook() -> None:
    listed = {link for link in links(INDEX) if not link.startswith(("http", "../"))}
    assert listed == {page.name for page in pages()}
    assert {p.stem for p in pages()} >= {
        "circuit-open",
        "all-targets-down",
        "audit-database-down",
        "config-reload-rejected",
        "local-queue-full",
        "rate-limit-or-budget",
        "leaked-key",
    }


def test_every_runbook_has_its_sections_and_a_command_to_confirm() -> None:
    for page in pages():
        text = page.read_text()
        if page.stem == "leaked-key":
            assert "Confirm:" in text and "401" in text and "config_applied" in text
            continue
        for heading in ("## What it means", "## What shows it", "## Confirm", "## Fix"):
            assert heading in text, f"{page.name}: {heading}"
        confirm = text.split("## Confirm", 1)[1].split("## Fix", 1)[0]
        assert "```sh" in confirm, page.name


def test_metrics_named_are_metrics_the_gateway_exposes() -> None:
    exposed = exposed_names()
    for page in [*pages(), INDEX]:
        named = set(re.findall(r"\bgateway_[a-z_]*[a-z]\b", page.read_text())) - {"gateway_admin_session"}
        assert not named - exposed, f"{page.name}: {sorted(named - exposed)}"


def test_log_events_named_are_events_the_gateway_logs() -> None:
    events = logged_events()
    assert {"request", "config_rejected", "audit_db_down", "audit_lost"} <= events
    for page in [*pages(), INDEX]:
        text = page.read_text()
        named = set(_EVENT.findall(text))
        named |= set(re.findall(r"`((?:audit|config|admin)_[a-z_]+)`", text))
        named |= set(re.findall(r'event == "([a-z_]+)"', text))
        assert not named - events, f"{page.name} names events nobody logs: {sorted(named - events)}"


def test_urls_in_the_runbooks_are_served_on_port_8080() -> None:
    served = {*load_openapi()["paths"], "/metrics"}
    for page in [*pages(), INDEX, ROOT / "docs" / "deployment.md"]:
        text = page.read_text()
        assert not re.search(r"localhost:(?!8080\b)\d+/(v1|admin|ready|health|metrics)", text), page.name
        for path in re.findall(r"localhost:8080(/[^\s\"'?)`]*)", text):
            assert path in served, f"{page.name}: {path} is not a route of the gateway"


def test_relative_links_resolve() -> None:
    for page in [*pages(), INDEX, ROOT / "docs" / "deployment.md"]:
        for link in links(page):
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            target, _, anchor = link.partition("#")
            resolved = (page.parent / target).resolve() if target else page
            assert resolved.exists(), f"{page.name}: {link}"
            if anchor:
                assert anchor in anchors(resolved), f"{page.name}: {link} (no such heading)"


def test_deployment_doc_and_readme_link_the_runbooks() -> None:
    assert "(runbooks/README.md)" in (ROOT / "docs" / "deployment.md").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "(docs/runbooks/README.md)" in readme
    for link in re.findall(r"\]\((docs/deployment\.md#[^)]+)\)", readme):
        target, _, anchor = link.partition("#")
        assert anchor in anchors(ROOT / target), link


def test_the_confirm_blocks_are_shell_not_yaml() -> None:
    """YAML blocks in runbooks would be read as config examples; the runbooks hold none."""
    for page in pages():
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.S):
            yaml.safe_load(block)
