"""TEST-ONLY: make a local model generate given texts through the real decode loop.

A generated test model has random weights, so its text is gibberish; to prove end to end what the
gateway does with a model's output (tool calls parsed out of it, streamed or not), tests script that
output. Set `GATEWAY_TESTING_MLX_SCRIPT` to the path of a JSON file before the gateway starts; it is
read once, when an engine loads its model, and never consulted otherwise (without the variable
nothing here runs). The file holds either

- a list of texts: each new generation job takes the next one (jobs past the end generate freely); or
- an object mapping a key to a text: a job whose prompt (decoded) contains the key generates that
  text (the first key found, in the file's order); other jobs generate freely.

A scripted job's text is encoded with the model's tokenizer and forced token by token by a per-job
logits processor (every other token masked out) in mlx-lm's `BatchGenerator`, followed by an
end-of-sequence token, so sampling, detokenizing, stop sequences and usage all run as they do for real
text (`max_tokens` still cuts it short). Never set the variable on a real deployment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SCRIPT_VARIABLE", "Script", "load_script"]

SCRIPT_VARIABLE = "GATEWAY_TESTING_MLX_SCRIPT"


class Script:
    """The scripted texts; `processor(prompt)` gives a job's logits processor, or None."""

    def __init__(self, texts: list[str] | dict[str, str], tokenizer: Any) -> None:
        self._queue = list(texts) if isinstance(texts, list) else []
        self._keyed = dict(texts) if isinstance(texts, dict) else {}
        self._tokenizer = tokenizer

    def processor(self, prompt: list[int]) -> Callable[[Any, Any], Any] | None:
        text: str | None = None
        if self._keyed:
            decoded = self._tokenizer.decode(prompt)
            text = next((t for key, t in self._keyed.items() if key in decoded), None)
        elif self._queue:
            text = self._queue.pop(0)
        if text is None:
            return None
        tokens = [*self._tokenizer.encode(text, add_special_tokens=False), self._tokenizer.eos_token_id]
        return _forcing(tokens)


def _forcing(tokens: list[int]) -> Callable[[Any, Any], Any]:
    """A logits processor that makes the n-th sampled token `tokens[n]` (the last one repeated after)."""
    import mlx.core as mx

    step = 0

    def force(_context: Any, logits: Any) -> Any:
        nonlocal step
        token = tokens[min(step, len(tokens) - 1)]
        step += 1
        keep = mx.arange(logits.shape[-1]) == token
        return mx.where(keep, mx.zeros_like(logits), mx.full(logits.shape, -mx.inf, logits.dtype))

    return force


def load_script(tokenizer: Any) -> Script | None:
    """The script `GATEWAY_TESTING_MLX_SCRIPT` names, or None when it is not set."""
    path = os.environ.get(SCRIPT_VARIABLE)
    if not path:
        return None
    texts = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(texts, list | dict):
        raise ValueError(f"{SCRIPT_VARIABLE}: {path} must hold a JSON list or object of texts")
    return Script(texts, tokenizer)
