#!/usr/bin/env python3
"""How long `GET /api/chats` takes for a user with many conversations.

Registers one user and `--chats` others on a running node (loopback only),
opens a direct chat with each and sends one message in it, then asks for
the first user's chat list `--requests` times, one after another, and
prints one JSON line: the list's length and its latency percentiles. The
node needs write and registration throttles off (parley-bench's node
settings; see BENCHMARKS.md):

    python3 tests/bench/chat_list.py --url http://127.0.0.1:38080 --chats 500

It stops by itself; nothing but the given loopback URL is contacted.
"""

import argparse
import concurrent.futures
import json
import time
import urllib.request
from urllib.parse import urlparse


def call(url, method, path, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


def register(url, name):
    call(url, "POST", "/api/register", body={"name": name, "password": "correct horse"})
    got = call(url, "POST", "/api/login", body={"name": name, "password": "correct horse"})
    return got["token"], got["user"]["id"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:38080")
    p.add_argument("--chats", type=int, default=500)
    p.add_argument("--requests", type=int, default=300)
    args = p.parse_args()
    host = urlparse(args.url).hostname or ""
    if not host.startswith("127."):
        raise SystemExit("loopback (127.0.0.0/8) only")
    tag = int(time.time()) % 100000
    owner_token, _ = register(args.url, f"owner{tag}")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        others = list(pool.map(lambda i: register(args.url, f"peer{tag}x{i}"), range(args.chats)))

    def open_and_send(other):
        _, other_id = other
        conv = call(args.url, "POST", f"/api/direct/{other_id}", owner_token)
        conv_id = conv["id"]
        call(args.url, "POST", f"/api/conversations/{conv_id}/messages", owner_token,
             {"body": "hello there", "client_msg_id": f"c{conv_id}"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(open_and_send, others))
    times, length = [], 0
    for _ in range(args.requests):
        t = time.perf_counter()
        chats = call(args.url, "GET", "/api/chats", owner_token)
        times.append((time.perf_counter() - t) * 1000)
        length = len(chats["chats"])
    times.sort()
    pick = lambda q: round(times[min(len(times) - 1, int(q * len(times)))], 2)
    print(json.dumps({"chats": length, "requests": args.requests,
                      "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(times[-1], 2)}))


if __name__ == "__main__":
    main()
