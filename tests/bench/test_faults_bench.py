"""`gateway bench faults --quick` with a few phases: the result's structure, the counts adding up,
every answered request found in the audit log once, and the fuzz hook called (no timing asserted)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.bench.conftest import BenchRun, check_envelope

CALLS: list[tuple[str, int, list[str]]] = []


@dataclass
class StandInReport:
    cases: int
    failed: int = 0


def fuzz_stand_in(base_url: str, cases: int, *, models: list[str], admin_key: str) -> StandInReport:
    """What the fuzz phase calls when pointed here (`--fuzz-function`), with fuzz_gateway's signature."""
    CALLS.append((base_url, cases, list(models)))
    return StandInReport(cases)


def test_faults_quick(run_bench: Callable[..., BenchRun]) -> None:
    run = run_bench(
        "faults",
        "--phases",
        "baseline,upstream-reset,config-edits,fuzz,proxy",
        "--edits",
        "7",
        "--fuzz-function",
        f"{__name__}:fuzz_stand_in",
    )
    result = run.result
    check_envelope(result, "faults")
    assert [row["phase"] for row in result["phases"]] == [
        "baseline",
        "upstream-reset",
        "config-edits",
        "fuzz",
        "proxy",
    ]
    for row in result["phases"]:
        assert row["sent"] == sum(row["outcomes"].values()), row
        answered = (
            row["sent"]
            - row["outcomes"]["conn_error"]
            - row["outcomes"]["reset"]
            - row["outcomes"]["timeout"]
        )
        assert row["answered"] == answered, row
        assert row["outcomes"]["5xx"] == 0 and row["duplicated"] == 0, row
        assert row["lost"] == 0 and row["unexpected_outcomes"] == 0, row
    assert (
        result["phases"][0]["sent"] > 0
        and result["phases"][0]["outcomes"]["2xx"] == result["phases"][0]["sent"]
    )
    edits = result["phases"][2]["notes"]
    assert edits["edits"] == 7 and edits["last_edit_live_after_s"] is not None
    assert CALLS and CALLS[-1][0].startswith("http://127.0.0.1:") and CALLS[-1][2] == ["chat", "claude"]
    assert result["phases"][3]["notes"]["passed"] is True
    exposure = result["phases"][4]["notes"]
    refused = {str(status): n for status, n in exposure["admin_by_status"].items()}
    assert exposure["admin_calls"] == 2 * 10 * 3 and refused == {"401": 60}
    assert exposure["admin_served"] == exposure["model_served"] == 0
    assert exposure["model_calls_showing_a_proxy"] > 0
    assert exposure["config_unchanged"] and exposure["token_works"]
    assert result["violations"] == [] and run.exit_code == 0
    assert "| upstream-reset |" in run.stdout and "| **total** |" in run.stdout
