"""The test suite keeps its own rules (read from the source, with `ast`): no fixed sleep used to wait for
something, and no duration asserted as a pass/fail. Both make a suite flaky on a loaded machine, and
speeds are measured by `gateway bench`, not asserted in tests.

- A **fixed sleep** is `time.sleep(x)` / `asyncio.sleep(x)` with `x` other than a literal 0, outside
  a polling loop. Allowed without a word: `sleep(0)` (yields one turn of the event loop, no time) and
  a sleep inside a loop that ends on a condition (`while not ...:`, or a loop with `break`, `return`
  or `raise`/`pytest.fail`): that is waiting for the condition, as `tests.conftest.wait_until` and
  `wait_for` do. Wait on a condition or an event, or make the code report readiness
  (`LiveRuntime.watching`, `LiveRuntime.retired()`, the live tail's `following`).
- A **timing assert** is an `assert` that orders (`<`, `<=`, `>`, `>=`) a clock reading
  (`time.monotonic()`, `perf_counter()`, `time.time()`, `loop.time()`), a name computed from one (or
  from `wait_until`, which returns the seconds it waited), or a value named like a duration
  (`elapsed`, `took`, `seconds`, `duration`).

The allowlists below are the exceptions, each with its reason: simulated latency of a fake, time as
the subject (a TTL, a circuit breaker's cooldown), and deadline tests whose subject is the deadline,
with a margin of at least 3x the configured value. An entry that no longer matches fails too, so the
lists stay short and true.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent

#: (file under tests/, function) → why its fixed sleep is not synchronisation.
ALLOWED_SLEEPS: dict[tuple[str, str], str] = {
    (
        "backends/test_http_backends.py",
        "answer",
    ): "a fake upstream's simulated latency before its first event",
    ("audit/test_writer.py", "slow_open"): "a simulated slow connect; the test awaits the `opening` event",
    ("e2e/test_serve.py", "test_sigterm_while_workers_are_still_starting_is_a_clean_stop"): (
        "the delay is the input: SIGTERM at three moments of the workers' start, each after the workers "
        "were seen starting"
    ),
    ("e2e/test_cache.py", "test_an_expired_entry_misses"): (
        "time is the subject: the entry's TTL (1 s) passes, measured from when it was stored"
    ),
    ("e2e/test_failover.py", "test_circuit_opens_after_threshold_and_closes_after_a_good_probe"): (
        "time is the subject: the breaker's cooldown_seconds (1) passes before the probe"
    ),
    ("e2e/test_failover.py", "test_failed_probe_reopens_the_circuit"): (
        "time is the subject: the breaker's cooldown_seconds (1) passes before the probe"
    ),
}

#: (file under tests/, function) → the deadline under test and the margin of the bound.
ALLOWED_TIMING: dict[tuple[str, str], str] = {
    ("e2e/test_timeouts.py", "test_non_stream_past_the_deadline_is_504"): (
        "the chat deadline (1.5 s): not before it, and within 3x of it"
    ),
    ("e2e/test_failover.py", "test_primary_hanging_past_first_byte_limit_fails_over"): (
        "first_byte (1 s): not before it, and within 10x of it"
    ),
    ("audit/test_writer.py", "test_stop_with_database_down_spills_and_next_writer_replays"): (
        "stop_timeout (1 s), bound 3.5x"
    ),
    ("audit/test_writer.py", "test_stop_is_bounded_when_the_database_stops_answering"): (
        "stop_timeout (1 s), bound 3.5x"
    ),
    ("audit/test_store.py", "test_open_fails_fast_when_unreachable"): "the store's timeout (2 s), bound 3x",
    ("audit/test_store.py", "test_stuck_database_raises_instead_of_hanging"): (
        "the store's timeout (1 s), bound 4x"
    ),
    (
        "e2e/test_connections.py",
        "test_during_the_drain_an_idle_connection_is_closed_after_drain_idle_seconds",
    ): ("drain_idle_seconds (0.5 s): not before it, within 3x of it (and below the 2 s default)"),
    ("cache/test_stores.py", "test_a_redis_that_is_down_is_a_miss_at_once"): (
        "the Redis cache's timeout_ms (200 ms), bound 25x"
    ),
    ("e2e/test_sdk_openai.py", "test_stream_is_relayed_as_it_is_generated"): (
        "a lower bound from the fake's simulated token delay (half of it): the stream is not buffered"
    ),
    ("e2e/test_sdk_anthropic.py", "test_stream_is_relayed_as_it_is_generated"): (
        "a lower bound from the fake's simulated token delay (half of it): the stream is not buffered"
    ),
    ("testing/test_fake_openai.py", "test_latency_and_token_delay"): (
        "the fake's simulated latency is the subject: a lower bound (a sleep never ends early)"
    ),
}

CLOCKS = {"monotonic", "perf_counter", "time", "monotonic_ns", "perf_counter_ns", "time_ns"}
DURATION_WORDS = ("elapsed", "took", "seconds", "duration")
SLEEPERS = {"time", "asyncio", "anyio", "trio"}


@dataclass(frozen=True)
class Finding:
    path: str
    function: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"tests/{self.path}:{self.line} in {self.function}: {self.what}"


def _is_sleep(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "sleep":
        return isinstance(func.value, ast.Name) and func.value.id in SLEEPERS
    return isinstance(func, ast.Name) and func.id == "sleep"


def _is_zero(call: ast.Call) -> bool:
    if not call.args:
        return False
    arg = call.args[0]
    return isinstance(arg, ast.Constant) and arg.value == 0


def _is_clock(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in CLOCKS or name == "wait_until"


def _ends_on_a_condition(loop: ast.While | ast.For | ast.AsyncFor) -> bool:
    if isinstance(loop, ast.While) and not (isinstance(loop.test, ast.Constant) and loop.test.value):
        return True

    def exits(node: ast.AST) -> bool:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Return | ast.Raise):
                return True
            if isinstance(child, ast.Break):
                return True
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr == "fail"
            ):
                return True
            # A `break` in a nested loop ends that loop, not this one.
            nested = isinstance(child, ast.While | ast.For | ast.AsyncFor)
            if nested and _returns_or_fails(child):
                return True
            if not nested and exits(child):
                return True
        return False

    return exits(loop)


def _returns_or_fails(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Return | ast.Raise):
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "fail":
            return True
    return False


def _durationish(node: ast.AST, clock_names: set[str]) -> bool:
    for sub in ast.walk(node):
        if _is_clock(sub):
            return True
        if isinstance(sub, ast.Name) and (sub.id in clock_names or any(w in sub.id for w in DURATION_WORDS)):
            return True
        if isinstance(sub, ast.Attribute) and any(w in sub.attr for w in DURATION_WORDS):
            return True
    return False


def _polling_timeout(node: ast.Assert, ancestors: list[ast.AST]) -> bool:
    """`assert time.monotonic() < deadline` inside a loop that ends on a condition: the timeout of a
    wait for that condition (as in `wait_until`), not a duration asserted."""
    loops = [a for a in ancestors if isinstance(a, ast.While | ast.For | ast.AsyncFor)]
    names = {sub.id for sub in ast.walk(node.test) if isinstance(sub, ast.Name)}
    return bool(loops) and _ends_on_a_condition(loops[-1]) and "deadline" in names


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _own_nodes(function: ast.AST) -> Iterator[tuple[ast.AST, list[ast.AST]]]:
    """The nodes of `function` (not of functions nested in it), each with its ancestors."""

    def visit(node: ast.AST, ancestors: list[ast.AST]) -> Iterator[tuple[ast.AST, list[ast.AST]]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            yield child, ancestors
            yield from visit(child, [*ancestors, child])

    yield from visit(function, [function])


def scan(source: str, path: str) -> tuple[list[Finding], list[Finding]]:
    """(fixed sleeps, timing asserts) in one test file's source."""
    sleeps: list[Finding] = []
    timings: list[Finding] = []
    for function in _functions(ast.parse(source)):
        nodes = list(_own_nodes(function))
        clock_names = {
            target.id
            for node, _ in nodes
            if isinstance(node, ast.Assign | ast.AnnAssign)
            and node.value is not None
            and _durationish_value(node)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        # `arrivals.append(time.monotonic())`: a list of clock readings.
        clock_names |= {
            node.func.value.id
            for node, _ in nodes
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "append"
            and isinstance(node.func.value, ast.Name)
            and any(_is_clock(sub) for arg in node.args for sub in ast.walk(arg))
        }
        for node, ancestors in nodes:
            if isinstance(node, ast.Call) and _is_sleep(node) and not _is_zero(node):
                loops = [a for a in ancestors if isinstance(a, ast.While | ast.For | ast.AsyncFor)]
                if not (loops and _ends_on_a_condition(loops[-1])):
                    sleeps.append(Finding(path, function.name, node.lineno, ast.unparse(node)))
            if isinstance(node, ast.Assert) and not _polling_timeout(node, ancestors):
                for compare in ast.walk(node.test):
                    if not isinstance(compare, ast.Compare):
                        continue
                    if not any(isinstance(op, ast.Lt | ast.LtE | ast.Gt | ast.GtE) for op in compare.ops):
                        continue
                    if _durationish(compare, clock_names):
                        timings.append(Finding(path, function.name, node.lineno, ast.unparse(node.test)))
                        break
    return sleeps, timings


def _durationish_value(node: ast.Assign | ast.AnnAssign) -> bool:
    """An assignment of a clock-derived value: `took = time.monotonic() - started`, `waited =
    wait_until(...)`; not the bare reading `started = time.monotonic()` (ordering two readings of the
    clock is what makes it a duration, and that comparison contains a clock call itself)."""
    value = node.value
    assert value is not None
    return (isinstance(value, ast.BinOp) and any(_is_clock(sub) for sub in ast.walk(value))) or (
        isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "wait_until"
    )


@functools.cache
def _suite() -> tuple[list[Finding], list[Finding]]:
    sleeps: list[Finding] = []
    timings: list[Finding] = []
    for file in sorted(TESTS.rglob("*.py")):
        found = scan(file.read_text(), file.relative_to(TESTS).as_posix())
        sleeps += found[0]
        timings += found[1]
    return sleeps, timings


def test_no_fixed_sleep_waits_for_something() -> None:
    sleeps, _ = _suite()
    unexplained = [str(f) for f in sleeps if (f.path, f.function) not in ALLOWED_SLEEPS]
    assert not unexplained, (
        "fixed sleeps in tests (wait on a condition with tests.conftest.wait_until / wait_for, or an "
        "event the code exposes; or allowlist it in tests/test_suite_hygiene.py with the reason it is "
        "not synchronisation):\n" + "\n".join(unexplained)
    )
    stale = set(ALLOWED_SLEEPS) - {(f.path, f.function) for f in sleeps}
    assert not stale, f"allowlisted sleeps that are gone (remove the entries): {sorted(stale)}"


def test_no_duration_is_asserted_as_pass_or_fail() -> None:
    _, timings = _suite()
    unexplained = [str(f) for f in timings if (f.path, f.function) not in ALLOWED_TIMING]
    assert not unexplained, (
        "durations asserted in tests (assert the behaviour instead; speeds belong in `gateway bench`; "
        "a deadline test whose subject is the deadline goes in ALLOWED_TIMING, bound >= 3x the "
        "deadline):\n" + "\n".join(unexplained)
    )
    stale = set(ALLOWED_TIMING) - {(f.path, f.function) for f in timings}
    assert not stale, f"allowlisted timing asserts that are gone (remove the entries): {sorted(stale)}"


def test_the_scan_catches_what_it_is_for() -> None:
    """The rules themselves, on a sample whose lines to flag end with `# sleep!` or `# timing!`: so a
    change to the scan cannot quietly pass everything."""
    source = """
import asyncio, time

async def test_a():
    await asyncio.sleep(0.3)  # sleep!
    await asyncio.sleep(0)

def test_b():
    started = time.monotonic()
    work()
    assert time.monotonic() - started < 0.5  # timing!
    took = time.perf_counter() - started
    assert took < 1  # timing!
    assert result.seconds < 30  # timing!
    assert result.count < 30
    arrivals = []
    arrivals.append(time.monotonic())
    assert arrivals[-1] - arrivals[0] >= 0.1  # timing!

def test_c():
    while True:
        if ready():
            return
        time.sleep(0.05)

def test_d():
    for _ in range(10):
        send()
        time.sleep(0.01)  # sleep!

def test_e():
    for delay in (0.1, 0.2):
        for line in output:
            if line:
                break
        time.sleep(delay)  # sleep!
    deadline = time.monotonic() + 5
    while not ready():
        assert time.monotonic() < deadline
        time.sleep(0.1)
"""
    lines = source.splitlines()
    sleeps, timings = scan(source, "sample.py")
    assert [f.line for f in sleeps] == [n for n, line in enumerate(lines, 1) if line.endswith("# sleep!")]
    assert [f.line for f in timings] == [n for n, line in enumerate(lines, 1) if line.endswith("# timing!")]
