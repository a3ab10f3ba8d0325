"""Faults: load on both surfaces (OpenAI and Anthropic, streamed and not) while each fault is
injected in turn, in its own phase; per phase, what the clients got and whether every answered
request has exactly one audit record.

    gateway bench faults [--quick] [--json FILE] [--markdown FILE] [--phases a,b] [--audit postgres]

Phases: the upstream killed and restarted, resetting streams, hanging, a 5xx storm and a 429 storm
(failover to a healthy second backend), 50 config edits (most of them broken: schema errors, an
empty then full file, a truncated file, random bytes, a NUL byte), the audit database away and back
(records spill and are replayed), the audit database switched by a reload, 1,000 slowloris
connections, the fuzz hook, SIGTERM under load (drain, restart) and SIGKILL under load (restart;
lost audit records against their bound of one flush interval). Every request carries its own
`x-request-id`, so its audit record is found by id: *lost* is an answered request with no record,
*duplicated* an id with two. The exit status is 1 if any phase broke a rule (RELIABILITY.md).
"""

from gateway.bench.faults.scenario import add_arguments, print_extra, run_scenario, table

__all__ = ["add_arguments", "print_extra", "run_scenario", "table"]
