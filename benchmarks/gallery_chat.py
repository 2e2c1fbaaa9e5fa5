"""Time to the last of N concurrent chat replies, through gradio_client against a launched gallery (the
chat tab only, the real XMoE SmolLM2, greedy), once per concurrency limit of the chat tab:

  limit 1 = the gallery before issue 14 (one reply at a time); chat_tab.CHAT_CONCURRENCY is the default now.

All N requests are submitted at once (distinct questions, `new_tokens` each); the model is loaded and
warmed up by one request first. Also printed: the mean time from submission to a reply, and whether every
reply equals the one served with limit 1 (it must: replies do not depend on what else is generated).

    python -m benchmarks.gallery_chat [--requests 20] [--new-tokens 64] [--limits 1,4]
    (run under `flock /tmp/zoo-heavy.lock` on a shared machine)
"""
from __future__ import annotations

import argparse
import time

import torch

from zoo.apps import chat_tab, gallery


def questions(count: int) -> list[str]:
    return [f"Name one fact about the number {i}." for i in range(count)]


def reply_of(result) -> str:
    history = result[0]
    content = history[-1]["content"]
    return content if isinstance(content, str) else "".join(part["text"] for part in content)


def serve_concurrently(limit: int, prompts: list[str], new_tokens: int) -> tuple[float, float, list[str]]:
    """(seconds to the last reply, mean seconds per reply, replies) with the chat tab at `limit`."""
    from gradio_client import Client

    default = chat_tab.CHAT_CONCURRENCY
    chat_tab.CHAT_CONCURRENCY = limit
    try:
        demo, url = gallery.launch(block=False, tab_modules=["zoo.apps.chat_tab"])
    finally:
        chat_tab.CHAT_CONCURRENCY = default
    try:
        client = Client(url, verbose=False)
        client.predict("Hello!", [], 4, 0.0, api_name="/chat")  # loads the model (once per process), warms up
        finished: list[float] = []  # seconds after the start at which each reply arrived
        start = time.perf_counter()
        jobs = [client.submit(p, [], new_tokens, 0.0, api_name="/chat",
                              result_callbacks=[lambda *_: finished.append(time.perf_counter() - start)])
                for p in prompts]
        replies = [reply_of(job.result(timeout=3600)) for job in jobs]
        while len(finished) < len(jobs):  # callbacks run on the client's threads, just after the result
            time.sleep(0.01)
        return max(finished), sum(finished) / len(finished), replies
    finally:
        demo.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=chat_tab.DEFAULT_NEW_TOKENS)
    parser.add_argument("--limits", default=f"1,{chat_tab.CHAT_CONCURRENCY}",
                        help="comma-separated concurrency limits of the chat tab to compare (first = reference)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    limits = [int(x) for x in args.limits.split(",")]
    prompts = questions(args.requests)
    print(f"{args.requests} concurrent chat requests, {args.new_tokens} new tokens each, greedy, "
          f"torch threads {torch.get_num_threads()}")
    reference = None
    for limit in limits:
        last, mean, replies = serve_concurrently(limit, prompts, args.new_tokens)
        reference = reference or replies
        same = sum(a == b for a, b in zip(replies, reference))
        print(f"  concurrency limit {limit:2d}: last reply after {last:6.1f} s ({last / args.requests:.2f} s per request), "
              f"mean time to a reply {mean:6.1f} s, replies equal to limit {limits[0]}'s: {same}/{len(replies)}",
              flush=True)


if __name__ == "__main__":
    main()
