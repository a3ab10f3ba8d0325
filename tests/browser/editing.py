"""What the browser tests of the config-editing pages share: signing in, the diff a page shows, and
real `git apply` of a shown diff or patch onto the original file."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import overload

from playwright.sync_api import Page, expect

from gateway.testing.process import GatewayProcess


def sign_in(page: Page, gateway: GatewayProcess, path: str, key: str, ready: str = ".topbar") -> None:
    """Open `path`, sign in with the admin `key`, and wait until `ready` shows."""
    page.goto(gateway.url(path))
    page.fill("#admin-key", key)
    page.click("form button[type=submit]")
    expect(page.locator(ready).first).to_be_visible()


def shown_diff(page: Page, selector: str = "#review pre.diff") -> str:
    """The unified diff a page shows in `selector` (one line per span of the pre)."""
    return "\n".join(page.locator(f"{selector} span").all_inner_texts()) + "\n"


@overload
def git_apply(original: bytes, patch: str, directory: Path) -> bytes: ...
@overload
def git_apply(original: str, patch: str, directory: Path) -> str: ...
def git_apply(original: bytes | str, patch: str, directory: Path) -> bytes | str:
    """`original` as gateway.yaml with `patch` applied by real `git apply`, in a fresh directory
    under `directory`; the result, as bytes or text like `original`. Fails the test, naming git's
    complaint, when git refuses the patch."""
    directory.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=directory, prefix="apply-"))
    target = work / "gateway.yaml"
    target.write_bytes(original.encode() if isinstance(original, str) else original)
    (work / "change.patch").write_text(patch if patch.endswith("\n") else patch + "\n")
    result = subprocess.run(["git", "apply", "change.patch"], cwd=work, capture_output=True, text=True)
    assert result.returncode == 0, f"git apply refused the patch: {result.stderr}\n{patch}"
    return target.read_text() if isinstance(original, str) else target.read_bytes()
