"""The wheel: built from a copy of the source (what git would check out, plus new files not yet
added), offline (`pip wheel --no-build-isolation --no-index`), then read. One top-level package,
`gateway`, with the repository's admin/ and bench/ inside it, the files the panel, the schema check
and `gateway serve`'s first run read at run time, and nothing of the repository's own (tests,
benchmark results, LiteLLM's virtualenv). Then the unpacked wheel is imported the way an install is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Repository folder -> where the wheel puts it (pyproject.toml's package-dir).
MAPPED = {"gateway": "gateway", "admin": "gateway/admin", "bench": "gateway/bench"}
#: Read at run time, so an install without them is broken.
RUNTIME_FILES = (
    "gateway/py.typed",
    "gateway/config/gateway.schema.json",
    "gateway/openapi.yaml",
    "gateway/defaults/gateway.yaml",
    "gateway/pricing/prices.json",
    "gateway/admin/static/index.html",
    "gateway/admin/static/panel.css",
    "gateway/admin/static/favicon.svg",
    "gateway/admin/static/js/main.js",
)


def _source_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if tuple(int(p) for p in metadata.version("setuptools").split(".")[:2]) < (77, 0):
        pytest.fail("building the wheel offline needs setuptools>=77 here: pip install -e '.[dev]'")
    source = tmp_path_factory.mktemp("source")
    for name in _source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    # What a working checkout holds and the wheel must not ship.
    for planted in (
        "bench/results/overhead.json",
        "bench/.venvs/litellm/lib/site-packages/litellm/__init__.py",
    ):
        (source / planted).parent.mkdir(parents=True, exist_ok=True)
        (source / planted).write_text("{}\n")
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    built = subprocess.run(
        [*command, "--quiet", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    [found] = out.glob("gateway-*.whl")
    return found


@pytest.fixture(scope="module")
def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


@pytest.mark.timeout(300)
def test_one_top_level_package(wheel: Path, names: set[str]) -> None:
    top = {name.split("/", 1)[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and top - dist_info == {"gateway"}, sorted(top)
    [info] = dist_info
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "[console_scripts]\ngateway = gateway.cli:main" in entry_points


@pytest.mark.timeout(300)
def test_every_source_module_and_panel_file_is_in_it(names: set[str]) -> None:
    expected = set(RUNTIME_FILES)
    for name in _source_files():
        folder, _, rest = name.partition("/")
        if folder in MAPPED and (name.endswith(".py") or name.startswith("admin/static/")):
            expected.add(f"{MAPPED[folder]}/{rest}")
    assert not expected - names, sorted(expected - names)


@pytest.mark.timeout(300)
def test_nothing_of_the_repository_s_own(names: set[str]) -> None:
    unwanted = [
        n
        for n in names
        if n.startswith(("tests/", "admin/", "bench/", "gateway/bench/results/"))
        or "/.venvs/" in n
        or "__pycache__" in n
        or n.endswith((".pyc", ".sqlite3", ".log"))
    ]
    assert not unwanted, unwanted


def test_the_embedded_defaults_are_the_repository_s_gateway_yaml() -> None:
    """`gateway serve` writes the embedded defaults where there is no gateway.yaml: the same file."""
    assert (ROOT / "gateway" / "defaults" / "gateway.yaml").read_bytes() == (
        ROOT / "gateway.yaml"
    ).read_bytes()


@pytest.mark.timeout(300)
def test_the_unpacked_wheel_runs_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    """Its own files, not the checkout's: the panel's files, the defaults, benchmark results in the
    current directory, and `gateway bench --help` through the console entry point's function."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    probe = """
import gateway, gateway.admin.panel as panel, gateway.starter as starter
from gateway.config.schema import SCHEMA_PATH
from gateway.bench.harness import paths
print(gateway.__file__)
print(panel.STATIC_DIR.joinpath("index.html").is_file(), starter.EMBEDDED_DEFAULTS.is_file(),
      SCHEMA_PATH.is_file())
print(paths.CHECKOUT, paths.RESULTS_DIR.absolute())
"""
    # PYTHONPATH comes before site-packages and the editable install's finder (appended to meta_path).
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    where, files, results = done.stdout.splitlines()
    assert Path(where).is_relative_to(site)
    assert files == "True True True"
    assert results == f"None {work / 'bench-results'}"
    bench = subprocess.run(
        [sys.executable, "-c", "import sys, gateway.cli; sys.exit(gateway.cli.main(['bench', '--help']))"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bench.returncode == 0 and "overhead" in bench.stdout, bench.stderr
