"""The bare generation loop, the ceiling of the local-inference scenarios: mlx-lm's `BatchGenerator`
driven by a plain loop in a worker process, with no HTTP, no detokenizing and no threads around it.

    python -m gateway.bench.harness.bare_loop MODEL_PATH [--batch-size 16]

It loads the model as the engine does (`ensure_fast_blas()` first), prints one JSON line (the BLAS it
computes on), then runs one phase per JSON line on stdin (the same prompts and closed loop as the
streaming client's, through the tokenizer's chat template) and answers each with its records.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from gateway.bench.harness.streams import new_record

__all__ = ["bare_worker", "command"]


def command(model: str, batch_size: int) -> list[str]:
    """The command that starts the bare loop on `model` (for `JsonWorker`)."""
    return [sys.executable, "-m", "gateway.bench.harness.bare_loop", model, "--batch-size", str(batch_size)]


def bare_worker(path: str, batch_size: int) -> int:
    """Load the model as the engine does, then run phases from stdin with a plain loop."""
    from gateway.blas import ensure_fast_blas, mapped_blas_libraries

    blas = ensure_fast_blas()  # before mlx.core is imported, as the engine does
    from mlx_lm import load
    from mlx_lm.generate import BatchGenerator, StopSequences
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = load(path)
    generator = BatchGenerator(
        model,
        stop_tokens=[[t] for t in tokenizer.eos_token_ids],
        completion_batch_size=batch_size,
        prefill_batch_size=min(8, batch_size),
    )
    greedy = make_sampler(temp=0.0, top_p=1.0)
    no_stops = StopSequences(None)
    eos_stops = StopSequences([[t] for t in tokenizer.eos_token_ids])
    ready = {"blas": blas.description, "mapped": mapped_blas_libraries()}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if line.strip():
            phase = json.loads(line)
            stops = no_stops if phase.get("ignore_eos", True) else eos_stops
            result = _bare_phase(generator, tokenizer, phase, greedy, stops)
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
    generator.close()
    return 0


def _bare_phase(
    generator: Any, tokenizer: Any, phase: dict[str, Any], sampler: Any, stops: Any
) -> dict[str, Any]:
    """One phase of the bare loop: the same closed loop as the clients', with no server around it."""
    rows = [
        [
            list(tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True))
            for t in row
        ]
        for row in phase["prompts"]
    ]
    max_tokens = int(phase["max_tokens"])
    records: list[dict[str, Any]] = []
    by_uid: dict[int, dict[str, Any]] = {}
    clock = time.perf_counter
    cpu_before = time.process_time()
    t0 = clock()

    def insert(items: list[tuple[int, int]]) -> None:
        now = clock() - t0
        uids = generator.insert(
            [rows[s][r] for s, r in items],
            max_tokens=[max_tokens] * len(items),
            samplers=[sampler] * len(items),
            stop_sequences=[stops] * len(items),
        )
        for uid, (s, r) in zip(uids, items, strict=True):
            record = new_record(s, r)
            record["t_start"] = now
            record["prompt_tokens"] = len(rows[s][r])
            records.append(record)
            by_uid[uid] = record

    insert([(s, 0) for s in range(len(rows))])
    while by_uid:
        responses = generator.next_generated()
        now = clock() - t0
        follow: list[tuple[int, int]] = []
        for response in responses:
            record = by_uid.get(response.uid)
            if record is None:
                continue
            if response.finish_reason != "stop":  # an end-of-sequence token is not counted
                record["tokens"] += 1
                record["chunks"] += 1
                if record["t_first"] is None:
                    record["t_first"] = now
                record["t_last"] = now
            if response.finish_reason is not None:
                record["finish_reason"] = response.finish_reason
                record["t_done"] = now
                del by_uid[response.uid]
                if record["round"] + 1 < len(rows[record["stream"]]):
                    follow.append((record["stream"], record["round"] + 1))
        if follow:
            insert(follow)
    makespan = clock() - t0
    cpu = time.process_time() - cpu_before
    return {"makespan_s": makespan, "cpu_s": cpu, "cpu_share": cpu / makespan, "records": records}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.harness.bare_loop")
    parser.add_argument("path", help="model directory")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    return bare_worker(args.path, args.batch_size)


if __name__ == "__main__":
    sys.exit(main())
