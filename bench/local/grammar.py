"""What decoding controls cost per token (the `grammar` part of `gateway bench local`): the engine
alone (no HTTP, so only the per-token work differs), the tiny model, greedy decoding, S sequences
decoding together, in three modes:

- `plain`: no logits processor (the batch's shared-sampler fast path);
- `sampling`: `logit_bias` on 8 tokens plus presence and frequency penalties (two processors);
- `json_schema`: grammar-constrained decoding with llguidance (an object with one unbounded string
  member, which greedy decoding of the tiny model does not close within `max_tokens`: the grammar
  keeps masking to the end).

Each round submits S jobs together (`ignore_eos`: every sequence decodes `max_tokens`); its decode
time is its wall time less that of a one-token round of the same mode (the prefill and the first
token), over the S × (max_tokens - 1) tokens decoded in it. The cost per token is the mode's
µs/token minus `plain`'s, at the same S; the modes take turns round by round. Last, each mode's
processors alone: µs per call on one sequence (no model; the best of 5 runs of 200 steps), the part of
the cost that depends least on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from gateway.bench.harness.progress import Progress, say
from gateway.bench.harness.results import markdown_table
from gateway.bench.harness.systems import ensure_bench_model

__all__ = ["MODES", "add_arguments", "run", "run_part", "table"]

MODES = ("plain", "sampling", "json_schema")
FULL = {"streams": [1, 8], "tokens": 128, "rounds": 5}
QUICK = {"streams": [1, 2], "tokens": 16, "rounds": 1}
SCHEMA = {
    "type": "object",
    "properties": {"story": {"type": "string"}},
    "required": ["story"],
    "additionalProperties": False,
}
PROMPT = [{"role": "user", "content": "Tell me a story about the sea, as JSON."}]


async def _round(engine: Any, prompt: list[int], streams: int, tokens: int, processors: Any) -> float:
    """Seconds from submitting `streams` jobs of `tokens` tokens each to the last one's end."""
    from gateway.backends.mlx.engine import Job

    loop = asyncio.get_running_loop()
    jobs = [
        Job(prompt, tokens, 0.0, 1.0, None, (), loop, ignore_eos=True, processors=processors())
        for _ in range(streams)
    ]
    started = time.perf_counter()
    for job in jobs:
        engine.submit(job)

    async def follow(job: Job) -> None:
        while True:
            event = await job.events.get()
            if event.kind == "error":
                raise RuntimeError(event.text)
            if event.kind == "done":
                if event.completion_tokens != tokens:
                    raise RuntimeError(f"{event.completion_tokens} tokens decoded, {tokens} asked")
                return

    await asyncio.gather(*(follow(job) for job in jobs))
    return time.perf_counter() - started


async def _decode(
    engine: Any, prompt: list[int], streams: int, tokens: int, processors: Any
) -> tuple[float, int]:
    """(decode seconds, tokens decoded): a round of `tokens` less a round of one token (the prefill
    and the first token)."""
    whole = await _round(engine, prompt, streams, tokens, processors)
    first = await _round(engine, prompt, streams, 1, processors)
    return max(whole - first, 0.0), streams * (tokens - 1)


async def _measure(streams: list[int], tokens: int, rounds: int, progress: Progress | None) -> dict[str, Any]:
    from gateway.backends.mlx.engine import Engine
    from gateway.backends.mlx.grammar import GrammarProcessor, grammar_tokenizer, schema_grammar
    from gateway.backends.mlx.sampling import sampling_fields

    engine = Engine(ensure_bench_model("tiny"), max_batch_size=max(streams))
    await engine.start()
    try:
        prompt = list(engine.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True))
        grammar = schema_grammar(dict(SCHEMA))
        tokenizer = grammar_tokenizer(engine)
        fields = sampling_fields(
            {
                "logit_bias": {str(i): 2 for i in range(100, 108)},
                "presence_penalty": 0.5,
                "frequency_penalty": 0.5,
            },
            4096,
        )
        makers = {
            "plain": list,
            "sampling": fields.processors,
            "json_schema": lambda: [GrammarProcessor(tokenizer, grammar)],
        }
        rows = []
        for n in streams:
            with progress.step(f"{n} stream{'s' if n > 1 else ''}") if progress else _nothing():
                for mode in MODES:  # warm-up
                    await _round(engine, prompt, n, min(tokens, 8), makers[mode])
                totals = {mode: [0.0, 0] for mode in MODES}
                # The modes take turns, round by round, so a slow spell of a shared machine hits all.
                for r in range(rounds):
                    for mode in MODES[r % len(MODES) :] + MODES[: r % len(MODES)]:
                        seconds, decoded = await _decode(engine, prompt, n, tokens, makers[mode])
                        totals[mode][0] += seconds
                        totals[mode][1] += decoded
            for mode, (seconds, decoded) in totals.items():
                us = seconds / max(decoded, 1) * 1e6
                rows.append(
                    {"mode": mode, "streams": n, "tokens": decoded, "seconds": seconds, "us_per_token": us}
                )
                say(f"{mode}, {n} streams: {us:,.0f} µs/token over {decoded} tokens")
        for row in rows:
            plain = next(r for r in rows if r["mode"] == "plain" and r["streams"] == row["streams"])
            row["overhead_us"] = row["us_per_token"] - plain["us_per_token"]
            row["overhead_pct"] = 100 * row["overhead_us"] / plain["us_per_token"]
        alone = {mode: _processor_us(makers[mode], prompt) for mode in MODES if mode != "plain"}
        return {
            "preset": "tiny",
            "max_tokens": tokens,
            "rounds": rounds,
            "blas": engine.blas,
            "rows": rows,
            "processor_us": alone,
        }
    finally:
        engine.stop()


def _processor_us(make: Any, prompt: list[int], steps: int = 200, repeats: int = 5) -> float:
    """One sequence's processors alone: µs per decode step (their call and its evaluation) on logits of
    the tiny model's width, feeding each step's greedy choice back as the next context token; the best
    of `repeats` runs (a shared machine's slow spells only ever add time)."""
    import mlx.core as mx

    logits = mx.random.normal((1, 4096))
    mx.eval(logits)
    best = float("inf")
    for _ in range(repeats):
        processors = make()
        context = list(prompt)
        started = time.perf_counter()
        for _ in range(steps):
            out = logits
            for processor in processors:
                out = processor(mx.array(context), out)
            context.append(int(mx.argmax(out, axis=-1).item()))
        best = min(best, (time.perf_counter() - started) / steps * 1e6)
    return best


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def run(streams: list[int], tokens: int, rounds: int, progress: Progress | None = None) -> dict[str, Any]:
    if progress:
        progress.add(len(streams) * len(MODES) - 1)
    result = asyncio.run(_measure(streams, tokens, rounds, progress))
    result["failed_requests"] = 0
    return result


def table(result: dict[str, Any]) -> str:
    headers = ["mode", "streams", "tokens", "tok/s", "µs/token", "cost (µs/token)", "cost (%)"]
    rows = [
        [
            row["mode"],
            str(row["streams"]),
            str(row["tokens"]),
            f"{row['tokens'] / row['seconds']:,.0f}",
            f"{row['us_per_token']:,.0f}",
            "" if row["mode"] == "plain" else f"{row['overhead_us']:+,.0f}",
            "" if row["mode"] == "plain" else f"{row['overhead_pct']:+.0f}%",
        ]
        for row in result["rows"]
    ]
    head = (
        f"decoding controls: {result['preset']} model, greedy, {result['max_tokens']} tokens per sequence, "
        f"{result['rounds']} rounds; {result['blas']}"
    )
    alone = result.get("processor_us") or {}
    tail = "".join(f"\n\n{mode} processors alone: {us:,.0f} µs per token" for mode, us in alone.items())
    return head + "\n\n" + markdown_table(headers, rows, numeric_from=1) + tail


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--grammar-tokens", type=int, help=f"tokens per sequence ({FULL['tokens']})")
    group.add_argument("--grammar-rounds", type=int, help=f"rounds per mode ({FULL['rounds']})")


def run_part(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    settings = dict(QUICK if args.quick else FULL)
    for key in ("tokens", "rounds"):
        value = getattr(args, f"grammar_{key}", None)
        if value is not None:
            settings[key] = value
    return run(settings["streams"], settings["tokens"], settings["rounds"], progress)
