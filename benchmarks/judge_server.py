"""How fast our judge server answers many clients at once, and how well its worker batches them.

It starts a JudgeServer on a free loopback port and fires `--clients` threads, each asking `--requests`
yes/no questions one after another (one HTTP request each, a world image in it) through
ChatJudge(HTTPChat(url)), as a verifier or reward would. It reports requests/s, p50/p95 latency, errors
(must be 0), wrong answers (the fake backend's answers are checked against asking it directly) and the mean
batch the backend was given.

The default backend is a deterministic fake whose batched forward takes `--forward-ms` whatever its size (as
a small model's does on a GPU), so the figures are the server's own cost; `--judge PATH` serves a real local
judge (VLMChat.load) instead.

    python benchmarks/judge_server.py                                # --clients 64 --requests 8
    python benchmarks/judge_server.py --forward-ms 20
    python benchmarks/judge_server.py --judge runs/world_judge --device cuda
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from thinkdraw.judges.base import JudgeError, Query
from thinkdraw.judges.chat import ChatJudge, Completion, Turn
from thinkdraw.judges.http import HTTPChat
from thinkdraw.judges.server import JudgeServer
from thinkdraw.world.layout import random_layout
from thinkdraw.world.render import render_image


class FakeJudge:
    """Answers from the turn's text and pixels alone, after `forward_s` per batch."""

    def __init__(self, forward_s: float = 0.0):
        self.forward_s = forward_s

    def complete(self, turns, max_tokens):
        time.sleep(self.forward_s)
        return [self.answer(turn) for turn in turns]

    @staticmethod
    def answer(turn: Turn) -> Completion:
        n = len(turn.text) + (sum(turn.image.tobytes()[::97]) if turn.image is not None else 0)
        return Completion("yes" if n % 2 else "no", {"yes": -(n % 7) / 3, "no": -(n % 5) / 2 - 0.1})


class Counting:
    """The backend, counting the batches it is given (only the server's one worker calls it)."""

    def __init__(self, backend):
        self.backend, self.batches = backend, []

    def complete(self, turns, max_tokens):
        self.batches.append(len(turns))
        return self.backend.complete(turns, max_tokens)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64, help="client threads asking at once")
    parser.add_argument("--requests", type=int, default=8, help="questions each client asks, one after another")
    parser.add_argument("--judge", default=None, help="a local judge folder or hub id (default: the fake backend)")
    parser.add_argument("--device", default="cpu", help="where --judge runs")
    parser.add_argument("--forward-ms", type=float, default=0.0, help="the fake backend's time per batch")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--objects", type=int, default=3, help="objects in each world image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="judge_server.json")
    args = parser.parse_args()

    if args.judge is None:
        inner = FakeJudge(args.forward_ms / 1000)
    else:
        from thinkdraw.judges.vlm import VLMChat

        inner = VLMChat.load(args.judge, device=args.device)
    backend = Counting(inner)
    rng = random.Random(args.seed)
    images = [render_image(random_layout(rng, args.objects)) for _ in range(32)]
    queries = [
        [
            Query(f"client {c} asks question {r}", images[(c * args.requests + r) % len(images)])
            for r in range(args.requests)
        ]
        for c in range(args.clients)
    ]
    expected = None if args.judge else [ChatJudge(inner).yes(qs) for qs in queries]

    latencies: list[float] = []
    errors: list[str] = []
    wrong = 0
    lock = threading.Lock()
    server = JudgeServer(backend, port=0, max_batch=args.max_batch, batch_wait_s=args.batch_wait_ms / 1000)
    server.start()
    try:
        ChatJudge(HTTPChat(server.url)).yes(queries[0][:1])  # warm up: the model's name, a first forward
        backend.batches.clear()

        def client(c: int) -> None:
            nonlocal wrong
            judge = ChatJudge(HTTPChat(server.url, timeout=60))
            for r, query in enumerate(queries[c]):
                began = time.perf_counter()
                try:
                    (p,) = judge.yes([query])
                except JudgeError as error:
                    with lock:
                        errors.append(str(error))
                    continue
                with lock:
                    latencies.append(time.perf_counter() - began)
                    wrong += expected is not None and p != expected[c][r]

        began = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client, range(args.clients)))
        seconds = time.perf_counter() - began
    finally:
        server.close()

    total = args.clients * args.requests
    report = {
        "backend": args.judge or f"fake ({args.forward_ms:g} ms per batch)",
        "clients": args.clients,
        "requests_per_client": args.requests,
        "requests": total,
        "seconds": round(seconds, 3),
        "requests_per_s": round(total / seconds, 1),
        "latency_ms": {
            "p50": round(1000 * percentile(latencies, 0.5), 2) if latencies else None,
            "p95": round(1000 * percentile(latencies, 0.95), 2) if latencies else None,
            "max": round(1000 * max(latencies), 2) if latencies else None,
        },
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wrong": wrong if expected is not None else None,
        "backend_calls": len(backend.batches),
        "answered_by_backend": sum(backend.batches),
        "mean_batch": round(statistics.mean(backend.batches), 2) if backend.batches else None,
        "max_batch_seen": max(backend.batches, default=0),
        "max_batch": args.max_batch,
        "batch_wait_ms": args.batch_wait_ms,
    }
    latency = report["latency_ms"]
    print(
        f"{report['backend']}: {total} requests from {args.clients} clients in {seconds:.2f} s: "
        f"{report['requests_per_s']} requests/s, p50 {latency['p50']} ms, p95 {latency['p95']} ms, "
        f"errors {report['errors']}, wrong {report['wrong']}, mean batch {report['mean_batch']} "
        f"({report['backend_calls']} calls, largest {report['max_batch_seen']})"
    )
    if errors:
        print(f"first error: {errors[0]}")
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")
    if errors or wrong:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
