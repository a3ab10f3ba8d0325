"""Mutation testing (`gateway bench mutation`): small deliberate bugs planted in the critical modules,
one at a time, each run against that module's fast unit tests; a mutant the tests still pass is a
survivor, a place where the tests do not check what the code does. The score is killed mutants over
all mutants not judged equivalent (`EQUIVALENT`: same behaviour, nothing a test could tell apart).

The mutants (our own AST mutator; mutmut 3 copies the project and needs its own layout, which our
`admin/` → `gateway.admin` mapping does not fit): comparison operators (`<`↔`<=`, `>`↔`>=`, `==`↔`!=`,
`in`↔`not in`, `is`↔`is not`), `and`↔`or`, `not x` → `x`, arithmetic (`+`↔`-`, `*`↔`/`), numbers
(n → n + 1), `True`↔`False`, a string compared with (or in a collection compared with) → another,
`min`↔`max`, `break`↔`continue`, `return x` → `return None`, and a call statement or augmented
assignment removed (`pass`). Docstrings, annotations and argument defaults are left alone.

How a mutant runs: one server process per module imports pytest and collects the module's tests
once (the module loaded from its `ast.unparse` form, so a mutant differs from it only where mutated),
then forks a child per mutant. The child swaps the mutated functions' code objects into the live
functions (so every `from … import f` elsewhere runs the mutant too) and module constants into the
module (a module-level dict, list or set of plain data is changed in place, so importers see it
too), then runs the tests (`-x`). A child past `--timeout` is killed and counts as killed (a
mutant that hangs is caught by the suite's own timeout). A mutated module-level constant that
another module imported by value is not seen there: such mutants may survive falsely (listed).

`--module` picks modules of `MODULES` (default: all, one after the other); `--max-mutants` takes
every n-th mutant to keep that many (a smoke run). Each module's tests are listed in `MODULES`, the
one place that maps code to the tests that guard it: fast in-process unit tests only.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.bench.harness.progress import Progress, say

__all__ = ["EQUIVALENT", "MODULES", "Mutant", "add_arguments", "mutants", "run_scenario", "table"]

ROOT = Path(__file__).resolve().parent.parent

#: module → the fast unit tests that guard it (paths relative to the checkout).
MODULES: dict[str, tuple[str, ...]] = {
    "gateway.routing.failover": (
        "tests/routing/test_failover_unit.py",
        "tests/routing/test_failover_concurrency.py",
    ),
    "gateway.routing.groups": (
        "tests/routing/test_groups.py",
        "tests/routing/test_pickers_unit.py",
        "tests/routing/test_failover_unit.py",
    ),
    "gateway.auth": (
        "tests/test_auth.py",
        "tests/test_auth_keys_unit.py",
        "tests/surfaces/test_access_unit.py",
    ),
    "gateway.surfaces.access": ("tests/surfaces/test_access_unit.py",),
    "gateway.config.load": (
        "tests/config/test_load.py",
        "tests/config/test_load_checks_unit.py",
        "tests/config/test_backend_settings.py",
        "tests/config/test_capabilities.py",
        "tests/routing/test_canary.py",
    ),
    "gateway.config.writeback": ("tests/config/test_writeback_unit.py", "tests/config/test_writeback.py"),
    "gateway.protocol.openai_request": (
        "tests/protocol/test_openai_request_unit.py",
        "tests/protocol/test_openai.py",
        "tests/protocol/test_fields.py",
        "tests/protocol/test_reasoning.py",
    ),
    "gateway.protocol.anthropic_request": (
        "tests/protocol/test_anthropic.py",
        "tests/protocol/test_fields.py",
        "tests/protocol/test_anthropic_request_unit.py",
    ),
    "gateway.audit.writer": ("tests/audit/test_writer_unit.py", "tests/audit/test_writer.py"),
    "gateway.backends.streaming": ("tests/backends/test_streaming_unit.py",),
    "gateway.backends.upstream": ("tests/backends/test_upstream_unit.py",),
    "gateway.http1": ("tests/test_http1_unit.py", "tests/test_http1.py"),
}

#: module → {mutant key: why it is equivalent}. A key is `scope: description` as the table lists it.
EQUIVALENT: dict[str, dict[str, str]] = {
    "gateway.routing.failover": {
        "_walk: 0 → 1": "a plain step's member index is read only for a group's members (group is None here)",
        "_canary_walk: 0 → 1": (
            "the canary's member index, likewise: read only for a group's members (group is None)"
        ),
        "_client_error: <= → <": (
            "status 400 is then not copied, but BadRequest's own status is 400: the same answer"
        ),
        "_client_error: 400 → 401": "as above: only status 400 changes path, and the default it keeps is 400",
        "_final_error: 1.0 → 2.0": (
            "a quota skip always has retry_after >= 1 (`_quota_skip`): `or 1.0` never applies"
        ),
    },
    "gateway.surfaces.access": {
        "client_address: or → and": (
            "TrustedProxies.client_address returns the peer itself without proxies, and for a peer of None "
            "(no address to trust)"
        ),
    },
    "gateway.config.load": {
        "_serves_embeddings: return x → return None #2": (
            "`_serves_embeddings` is read only as a truth value: False, None alike"
        ),
    },
    "gateway.backends.streaming": {
        "_object: or → and #2": (
            "the document a not-an-object error quotes: its position is 0, so the detail reads line 1 column "
            "1 whatever the document"
        ),
        "_object: 0 → 1": (
            "the position in a not-an-object error: the whole value is wrong, only the column the malformed-"
            "stream detail quotes changes"
        ),
        "_first: removed `await events.aclose()`": (
            "`response.release()` next closes the connection; the frames generator is finished already or "
            "holds only the body iterator release ends (the loop finalizes it)"
        ),
        "open_pass_through.until: removed `relay.finish()`": (
            "reached only with the relay not done, so finish() always raises; without it the next line raises"
            " the same kind (http_5xx), worded otherwise"
        ),
        "open_pass_through.close: removed `await events.aclose()`": (
            "as in `_first`: `response.release()` next closes the connection"
        ),
        "open_event_stream.close: removed `await events.aclose()`": (
            "as in `_first`: `response.release()` next closes the connection"
        ),
    },
    "gateway.backends.upstream": {
        "UpstreamCall: False → True": (
            "never applied: a dataclass reads `field(init=False)` once, when the class is made, and the bench"
            " swaps functions' code and module constants only (live, every 7-argument UpstreamCall(...) in "
            "the tests would fail)"
        ),
    },
    "gateway.audit.writer": {
        "AuditWriter._run: > → >=": (
            "a wait of 0 s on the wake event only yields one turn of the event loop before the same decision "
            "(the event, if set, returns at once either way); nothing the loop decides reads that turn"
        ),
        "AuditWriter._work: return x → return None #2": (
            "`_work`'s result is read only as a truth value (`if ok:`): False and None alike"
        ),
        "AuditWriter._work: return x → return None": (
            "the same: `_work`'s False (the open failed) read as a truth value"
        ),
        "AuditWriter._write: return x → return None": (
            "`_write`'s result is read only as a truth value (`if not await self._write(...)`)"
        ),
        "AuditWriter._replay_step: return x → return None #3": (
            "`_replay_step`'s False is `_work`'s result, read only as a truth value"
        ),
        "AuditWriter._arrive: > → >=": (
            "one more wake, at a buffer exactly full: the loop finds nothing over the buffer to spill and "
            "nothing newly due (a full batch has its own wake), and waits again for the same deadline"
        ),
        "AuditWriter._rows: is → is not": (
            "the one-pass path for trails and the per-record path build the same rows in the same order; "
            "only their speed differs (`gateway bench audit` measures it)"
        ),
        "AuditWriter._run: break → continue": (
            "`continue` re-tests `while not self._stopping`, which ends the loop as the `break` does"
        ),
    },
    "gateway.config.writeback": {
        "plan_commented_edit: removed `_check_applied(text, [edit], str(path))`": (
            "the commented plan is plan_edits' checked one plus a comment line before the value's line: it "
            "cannot change the value at the path (PyYAML keys are one line)"
        ),
        "_double_quoted.escape: < → <=": (
            "code 0x100 is never escaped: below 0x100 _NEEDS_ESCAPE matches C0, DEL, C1"
        ),
        "_double_quoted.escape: 256 → 257": "the same: no escaped character has code 0x100",
        "_double_quoted.escape: < → <= #2": (
            "code 0x10000 is never escaped: _NEEDS_ESCAPE matches above 0xffff nothing"
        ),
        "_double_quoted.escape: 65536 → 65537": "the same: no escaped character has code 0x10000",
    },
    "gateway.routing.groups": {
        "LeastBusy.__init__: 0 → 1 #2": (
            "the other workers' counts start at 1 for every member: the same offset for all leaves "
            "least_busy's order as it was (gateway.runtime.busy replaces the list, reading only its length)"
        ),
        "Latency._key: 1.0 → 2.0": (
            "an unknown member's key -1.0 → -2.0: either sorts before every average (>= 0)"
        ),
        "RouteGroup.sticky_member: 1 → 2": (
            "the starting best score -1 → -2: a digest's score is >= 0, above either"
        ),
        "RouteGroup.sticky_member: > → >=": (
            "differs only when two members' 64-bit blake2b scores tie for a key (never seen)"
        ),
    },
    "gateway.http1": {
        "<module>: False → True": (
            "never applied: `_BUSY = Updated(idle=False)` is an object built once at import, and the bench "
            "swaps functions' code and module constants only (live, the events test would fail)"
        ),
        "<module>: True → False": "never applied: `_IDLE = Updated(idle=True)`, likewise",
        "<module>: 0 → 1": (
            "`_date_second`'s start: any value but the current second makes the first answer format its date"
        ),
        "_good_name: return x → return None": "`return False` → None: read only as a truth value",
        "_good_name: < → <=": "the checked-names cache holds 1,025 names instead of 1,024: a cache only",
        "_good_name: 1024 → 1025": "the same bound, moved the same way",
        "_good_name: removed `_GOOD_NAMES.add(name)`": (
            "the cache stays empty: every name is then checked with the regex each time, with the same result"
        ),
        "_Exchange.__init__: False → True #6": (
            "`head_only`: set by `_start_response` before anything reads it"
        ),
        "_Exchange.wake: removed `waiters.clear()`": (
            "woken futures stay listed; a later wake skips them (`if not waiter.done()`); an exchange's "
            "list lives one request"
        ),
        "HTTP1.__init__: 0 → 1 #2": (
            "`head_size`: `on_message_begin` sets it before anything counts or compares it"
        ),
        "HTTP1.__init__: False → True #4": (
            "`expect_continue`: set again by `on_message_begin` for every request"
        ),
        "HTTP1.__init__: False → True #5": "`has_host`: likewise",
        "HTTP1.__init__: False → True #8": (
            "`holding` at the start: the preface test then fails for any first bytes that are not HTTP/2's, "
            "and what it parses, the bytes since idle, are exactly the bytes received"
        ),
        "HTTP1.received: and → or": (
            "the `P`-and-not-in-a-head test only spares the preface comparison; the comparison decides"
        ),
        "HTTP1._lost: removed `self.queued.clear()`": (
            "requests left in line never start: nothing advances a closed connection"
        ),
        "HTTP1._run.receive: and → or #2": (
            "marks `continue_sent` on requests that did not ask for a 100 too; only those that asked read it"
        ),
        "HTTP1._run.receive: True → False #3": (
            "after the 100 the next wake-up always brings body bytes (or the body's end), and that branch "
            "marks `continue_sent` itself"
        ),
        "HTTP1._body: False → True": (
            "the body past its content-length: `_unfinished` clears keep-alive again before the 500"
        ),
        "HTTP1._unfinished: or → and": (
            "`disconnected` and `closed` are set together (`_lost`), and a connection closed otherwise runs "
            "no app any more"
        ),
        "HTTP1._unfinished: True → False": (
            "`response_done` of an exchange on a closed connection: nothing reads it any more"
        ),
        "HTTP1._unfinished: removed `self._done(exchange)`": (
            "`current` stays set on a closed connection: nothing advances it any more"
        ),
        "HTTP1._unfinished: False → True #2": (
            "the 500 carries `connection: close`, which ends keep-alive too"
        ),
        "HTTP1._unfinished: False → True #4": (
            "the connection is closed two lines later whatever keep-alive says"
        ),
        "HTTP1._unfinished: removed `self._done(exchange)` #2": (
            "likewise: closed at once, nothing advances it"
        ),
    },
}

SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.And: ast.Or,
    ast.Or: ast.And,
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
}
SYMBOLS = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
    ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.And: "and", ast.Or: "or", ast.Add: "+",
    ast.Sub: "-", ast.Mult: "*", ast.Div: "/",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mutant:
    index: int
    line: int
    description: str
    #: Where it is: the enclosing class and function (`AuditWriter._run`), `<module>` at the top.
    scope: str = "<module>"

    @property
    def key(self) -> str:
        """`scope: description`, the same change twice in one scope numbered (`#2`): a key survives
        edits elsewhere in the module, which line numbers did not."""
        return f"{self.scope}: {self.description}"


class _Mutator(ast.NodeTransformer):
    """Walks a module in a fixed order, numbering every mutation site; applies site `target` (-1: none)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.found: list[Mutant] = []
        self._compared: set[int] = set()  # ids of string constants a comparison reads
        self._scope: list[str] = []  # the enclosing classes and functions

    def _site(self, node: ast.AST, description: str) -> bool:
        index = len(self.found)
        line = getattr(node, "lineno", 0)
        scope = ".".join(self._scope) or "<module>"
        twins = sum(m.scope == scope and m.description.split(" #")[0] == description for m in self.found)
        if twins:  # the same change twice in one scope: number them, so each has its own key
            description = f"{description} #{twins + 1}"
        self.found.append(Mutant(index, line, description, scope))
        return index == self.target

    # Left alone: docstrings, annotations, argument defaults, decorators.
    def _body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        start = 1 if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else 0
        out = body[:start]
        for stmt in body[start:]:
            new = self.visit(stmt)
            if isinstance(new, list):
                out.extend(new)
            elif new is not None:
                out.append(new)
        return out or [ast.Pass()]

    def visit_Module(self, node: ast.Module) -> ast.Module:
        node.body = self._body(node.body)
        return node

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        self._scope.append(node.name)
        node.body = self._body(node.body)
        self._scope.pop()
        return node

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        self._scope.append(node.name)
        node.body = self._body(node.body)
        self._scope.pop()
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AnnAssign:
        if node.value is not None:
            node.value = self.visit(node.value)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        return node

    def visit_If(self, node: ast.If) -> ast.AST:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return node
        return self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        for operand in (node.left, *node.comparators):
            for child in ast.walk(operand):
                if isinstance(child, ast.Constant) and isinstance(child.value, str):
                    self._compared.add(id(child))
        for i, op in enumerate(node.ops):
            if type(op) in SWAPS and self._site(node, f"{SYMBOLS[type(op)]} → {SYMBOLS[SWAPS[type(op)]]}"):
                node.ops[i] = SWAPS[type(op)]()
        return self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        if self._site(node, f"{SYMBOLS[type(node.op)]} → {SYMBOLS[SWAPS[type(node.op)]]}"):
            node.op = SWAPS[type(node.op)]()
        return self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        is_text = isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)
        if (
            type(node.op) in SWAPS
            and not is_text
            and self._site(node, f"{SYMBOLS[type(node.op)]} → {SYMBOLS[SWAPS[type(node.op)]]}")
        ):
            node.op = SWAPS[type(node.op)]()
        return self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if isinstance(node.op, ast.Not) and self._site(node, "not x → x"):
            return self.visit(node.operand)
        return self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        value = node.value
        if isinstance(value, bool):
            if self._site(node, f"{value} → {not value}"):
                return ast.copy_location(ast.Constant(not value), node)
        elif isinstance(value, int | float):
            if self._site(node, f"{value!r} → {value + 1!r}"):
                return ast.copy_location(ast.Constant(value + 1), node)
        elif (
            isinstance(value, str)
            and id(node) in self._compared
            and self._site(node, f"{value!r} → 'XX{value}XX'")
        ):
            return ast.copy_location(ast.Constant(f"XX{value}XX"), node)
        return node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        return node  # messages: their words are not behaviour (the values inside are not mutated either)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if isinstance(node.func, ast.Name) and node.func.id in ("min", "max"):
            other = "max" if node.func.id == "min" else "min"
            if self._site(node, f"{node.func.id}() → {other}()"):
                node.func = ast.copy_location(ast.Name(other, ast.Load()), node.func)
        return self.generic_visit(node)

    def visit_Break(self, node: ast.Break) -> ast.AST:
        if self._site(node, "break → continue"):
            return ast.copy_location(ast.Continue(), node)
        return node

    def visit_Continue(self, node: ast.Continue) -> ast.AST:
        if self._site(node, "continue → break"):
            return ast.copy_location(ast.Break(), node)
        return node

    def visit_Return(self, node: ast.Return) -> ast.AST:
        returns_none = node.value is None or (
            isinstance(node.value, ast.Constant) and node.value.value is None
        )
        if not returns_none and self._site(node, "return x → return None"):
            return ast.copy_location(ast.Return(ast.Constant(None)), node)
        return self.generic_visit(node)

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        if isinstance(node.value, ast.Call | ast.Await):
            name = ast.unparse(node.value)
            name = name if len(name) < 50 else name[:47] + "..."
            if self._site(node, f"removed `{name}`"):
                return ast.copy_location(ast.Pass(), node)
        return self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        if self._site(node, f"removed `{ast.unparse(node)}`"):
            return ast.copy_location(ast.Pass(), node)
        return self.generic_visit(node)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def mutants(path: Path) -> list[Mutant]:
    """Every mutant of the module at `path`, in a fixed order."""
    mutator = _Mutator(-1)
    mutator.visit(_tree(path))
    return mutator.found


def mutated_source(path: Path, index: int) -> str:
    """The module's source with mutant `index` applied (-1: none), as `ast.unparse` writes it."""
    tree = _tree(path)
    _Mutator(index).visit(copy.deepcopy(tree) if index < 0 else tree)
    return ast.unparse(ast.fix_missing_locations(tree))


def module_path(module: str) -> Path:
    parts = module.split(".")
    if parts[1] in ("admin", "bench"):
        return ROOT.joinpath(parts[1], *parts[2:]).with_suffix(".py")
    return ROOT.joinpath(*parts).with_suffix(".py")


# -- the server: runs in its own process (`python -c`), so it imports nothing of the gateway first ---

SERVER = r"""
import importlib.abc, importlib.util, json, os, signal, sys, types

module, filename, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
tests = sys.argv[4:]
sources = json.loads(sys.stdin.readline())  # {"-1": baseline source, "0": mutant 0, ...}

class Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return None
    def exec_module(self, mod):
        mod.__file__ = filename
        exec(compile(sources["-1"], filename, "exec"), mod.__dict__)

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == module:
            return importlib.util.spec_from_loader(fullname, Loader(), origin=filename)
        return None

sys.meta_path.insert(0, Finder())
import pytest

ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:randomly", "-o", "addopts=",
        "--no-header", "-W", "ignore", *tests]

def quiet():
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)

def functions(namespace, prefix=""):
    for name, value in list(namespace.items()):
        if isinstance(value, type) and value.__module__ == module and not prefix:
            yield from functions(dict(vars(value)), name + ".")
            continue
        if isinstance(value, property):
            value = value.fget
        elif isinstance(value, (classmethod, staticmethod)):
            value = value.__func__
        while hasattr(value, "__wrapped__"):
            value = value.__wrapped__
        if isinstance(value, types.FunctionType) and value.__code__.co_filename == filename:
            yield prefix + name, value

def plain(value):
    # Data only (no functions, classes or other objects whose fresh copy differs by identity alone).
    if value is None or isinstance(value, (int, float, str, bytes)):
        return True
    if isinstance(value, dict):
        return all(plain(k) and plain(v) for k, v in value.items())
    if isinstance(value, (tuple, list, set, frozenset)):
        return all(plain(v) for v in value)
    return False

def defaults(old, new):
    # A default is evaluated once, when the def runs: a mutated constant it names (`timeout=LIMIT`)
    # lives in the fresh function's defaults, not in its code. Plain values only, one by one.
    if old.__defaults__ and new.__defaults__ and len(old.__defaults__) == len(new.__defaults__):
        values = tuple(
            n if plain(n) and n != o else o for o, n in zip(old.__defaults__, new.__defaults__)
        )
        if values != old.__defaults__:
            old.__defaults__ = values
    if old.__kwdefaults__ and new.__kwdefaults__:
        for key, n in new.__kwdefaults__.items():
            if key in old.__kwdefaults__ and plain(n) and n != old.__kwdefaults__[key]:
                old.__kwdefaults__[key] = n

def apply(source):
    live = sys.modules[module]
    fresh = {"__name__": module, "__file__": filename}
    exec(compile(source, filename, "exec"), fresh)
    new = dict(functions(fresh))
    for name, old in functions(vars(live)):
        if name in new and old.__code__ != new[name].__code__:
            old.__code__ = new[name].__code__
        if name in new:
            defaults(old, new[name])
    for name, value in fresh.items():
        old = vars(live).get(name)
        if isinstance(value, (int, float, str, bool, frozenset, tuple)) and value != old:
            setattr(live, name, value)
        elif type(value) in (dict, list, set) and type(value) is type(old) and plain(value) and value != old:
            # Changed in place, so every module that imported this dict, list or set sees the mutant too.
            if isinstance(old, list):
                old[:] = value
            else:
                old.clear()
                old.update(value)
    for name, cls in vars(live).items():
        if isinstance(cls, type) and cls.__module__ == module and isinstance(fresh.get(name), type):
            for attr, value in vars(fresh[name]).items():
                if isinstance(value, (int, float, str, bool)) and vars(cls).get(attr, value) != value:
                    setattr(cls, attr, value)
            # A dataclass field's default lives in its generated __init__'s defaults, not in code.
            old_init, new_init = vars(cls).get("__init__"), vars(fresh[name]).get("__init__")
            if isinstance(old_init, types.FunctionType) and isinstance(new_init, types.FunctionType):
                for attr in ("__defaults__", "__kwdefaults__"):
                    try:
                        differs = getattr(old_init, attr) != getattr(new_init, attr)
                    except Exception:
                        differs = False
                    if differs:
                        setattr(old_init, attr, getattr(new_init, attr))

def run(key):
    pid = os.fork()
    if pid == 0:
        quiet()
        try:
            if key != "-1":
                apply(sources[key])
            code = pytest.main(ARGS)
        except BaseException:
            code = 99
        os._exit(int(code))
    return pid

null = os.open(os.devnull, os.O_WRONLY)
saved = os.dup(1), os.dup(2)
os.dup2(null, 1); os.dup2(null, 2)
collected = pytest.main([*ARGS, "--collect-only"])
os.dup2(saved[0], 1); os.dup2(saved[1], 2)
if collected != 0:
    print(json.dumps({"key": "collect", "status": "error", "code": int(collected)}), flush=True)
    sys.exit(1)
import time
for key in ["-1", *[k for k in sources if k != "-1"]]:
    started = time.monotonic()
    pid = run(key)
    deadline = started + timeout
    status = None
    while status is None:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(code)
        elif time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = "timeout"
        else:
            time.sleep(0.02)
    seconds = round(time.monotonic() - started, 2)
    print(json.dumps({"key": key, "code": status, "seconds": seconds}), flush=True)
"""


def run_module(
    module: str,
    tests: tuple[str, ...],
    timeout: float,
    max_mutants: int | None,
    progress: Progress | None = None,
    only: list[int] | None = None,
) -> dict[str, Any]:
    """Every mutant of `module` (or `max_mutants` of them, evenly spread) against `tests`."""
    path = module_path(module)
    missing = [t for t in tests if not (ROOT / t).is_file()]
    if missing:
        raise SystemExit(
            f"mutation testing runs in a checkout of the gateway: {', '.join(missing)} not found"
        )
    found = mutants(path)
    chosen = found
    if only:
        chosen = [m for m in found if m.index in only]
    elif max_mutants is not None and max_mutants < len(found):
        step = len(found) / max_mutants
        chosen = [found[int(i * step)] for i in range(max_mutants)]
    sources = {"-1": mutated_source(path, -1)}
    sources.update({str(m.index): mutated_source(path, m.index) for m in chosen})
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, module, str(path), str(timeout), *tests],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert server.stdin is not None and server.stdout is not None
    if progress is not None:
        progress.add(len(chosen))
    server.stdin.write(json.dumps(sources) + "\n")
    server.stdin.close()
    outcomes: dict[str, dict[str, Any]] = {}
    try:
        for line in server.stdout:
            answer = json.loads(line)
            outcomes[answer["key"]] = answer
            if progress is not None and answer["key"] != "-1":
                with progress.step(f"{module} mutant {answer['key']}"):
                    pass
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait()
    baseline = outcomes.get("-1", outcomes.get("collect", {}))
    if baseline.get("code") != 0:
        raise RuntimeError(f"{module}: its tests fail unmutated ({baseline}); fix them before mutating")
    equivalent = EQUIVALENT.get(module, {})
    rows = []
    for m in chosen:
        outcome = outcomes.get(str(m.index), {"code": "missing"})
        code = outcome["code"]
        status = "survived" if code == 0 else "timeout" if code == "timeout" else "killed"
        if status == "survived" and m.key in equivalent:
            status = "equivalent"
        rows.append({**asdict(m), "key": m.key, "status": status, "code": code})
    counted = [r for r in rows if r["status"] != "equivalent"]
    killed = sum(r["status"] in ("killed", "timeout") for r in counted)
    return {
        "module": module,
        "tests": list(tests),
        "mutants": len(found),
        "run": len(rows),
        "killed": killed,
        "equivalent": len(rows) - len(counted),
        "survived": [r for r in rows if r["status"] == "survived"],
        "equivalents": [{**r, "why": equivalent[r["key"]]} for r in rows if r["status"] == "equivalent"],
        "score": round(100 * killed / len(counted), 1) if counted else 100.0,
        "seconds": round(time.monotonic() - started, 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--module",
        action="append",
        choices=sorted(MODULES),
        help="a module to mutate (repeatable; default: every module of MODULES)",
    )
    parser.add_argument("--max-mutants", type=int, help="at most this many mutants per module, evenly spread")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per mutant before it counts as killed"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants only (nothing runs)")
    parser.add_argument(
        "--mutant", type=int, action="append", help="run only this mutant (its number in --list; repeatable)"
    )


def run_scenario(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    modules = args.module or (["gateway.surfaces.access"] if args.quick else list(MODULES))
    max_mutants = args.max_mutants if args.max_mutants is not None else (3 if args.quick else None)
    if args.list:
        for module in modules:
            for m in mutants(module_path(module)):
                print(f"{module} #{m.index} line {m.line} {m.key}")
        return {"modules": []}
    results = []
    for module in modules:
        say(f"mutating {module}")
        results.append(run_module(module, MODULES[module], args.timeout, max_mutants, progress, args.mutant))
    return {"modules": results}


def table(result: dict[str, Any]) -> str:
    lines = [
        "| module | mutants run | killed | equivalent | survived | score |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in result["modules"]:
        lines.append(
            f"| `{m['module']}` | {m['run']} of {m['mutants']} | {m['killed']} | {m['equivalent']} | "
            f"{len(m['survived'])} | {m['score']}% |"
        )
    for m in result["modules"]:
        if m["survived"]:
            lines.append(f"\nSurvivors in `{m['module']}`:")
            lines.extend(f"- line {s['line']}, {s['key']}" for s in m["survived"])
    return "\n".join(lines)


if __name__ == "__main__":
    from gateway.bench.harness.runner import scenario_main

    sys.exit(scenario_main("mutation", sys.modules[__name__]))
