"""The test-only scripted output (`GATEWAY_TESTING_MLX_SCRIPT`): each job takes the next text of a list,
forced through mlx-lm's real decode loop and ended by end-of-sequence; past the list, jobs generate
freely; and without the variable nothing is scripted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.backends.mlx.engine import Engine, Job, JobEvent
from gateway.backends.mlx.scripted import SCRIPT_VARIABLE, load_script


async def generate(engine: Engine, temperature: float = 1.0, max_tokens: int = 60) -> JobEvent:
    """The job's text in a "text" event's place, and its "done" event's counts."""
    job = Job(
        prompt=engine.tokenizer.encode("Once upon a time"),
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=1.0,
        seed=None,
        stop=(),
        loop=asyncio.get_running_loop(),
    )
    engine.submit(job)
    text = ""
    while (event := await job.events.get()).kind == "text":
        text += event.text
    assert event.kind == "done"
    event.text = text
    return event


@pytest.mark.asyncio
async def test_each_job_takes_the_next_text_then_generates_freely(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = ['<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', "héllo wörld, twice"]
    script = tmp_path / "script.json"
    script.write_text(json.dumps(texts))
    monkeypatch.setenv(SCRIPT_VARIABLE, str(script))
    engine = Engine(tiny_model, prompt_cache_size=0)
    await engine.start()
    try:
        first, second = await generate(engine), await generate(engine)
        assert (first.text, second.text) == tuple(texts)
        assert first.finish_reason == "stop"  # the end-of-sequence token after the text
        assert first.completion_tokens == len(engine.tokenizer.encode(texts[0], add_special_tokens=False))
        free = await generate(engine, temperature=0, max_tokens=8)
        assert free.finish_reason == "length" and free.completion_tokens == 8
    finally:
        await asyncio.to_thread(engine.stop)


def test_nothing_is_scripted_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCRIPT_VARIABLE, raising=False)
    assert load_script(object()) is None
