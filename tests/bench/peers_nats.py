#!/usr/bin/env python3
"""The `peers` workload against NATS, for the CPU-per-delivery comparison.

parley-bench's `peers` (issue #15) loads one Parley node; this loads a
nats-server (Debian's package, no persistence) with the same shape so the
two servers' CPU per delivery can be compared on this machine: 100
connections, 10 subjects of 10 subscribers, each connection publishing its
share of the rate open-loop to its own subject (no echo, so a message is 9
deliveries), 64-byte bodies, steps of 15 s after 2 s of warm-up. The
server is pinned to CPU 0 and this client to CPU 1 by the caller:

    taskset -c 0 nats-server -a 127.0.0.1 -p 14222 &
    taskset -c 1 python3 tests/bench/peers_nats.py --port 14222 \
        --server-pid $! --rate 489,5000

It prints one JSON line per step: delivered/s, latency from the write
(p50/p99; asyncio's timers make intended-time figures meaningless here),
and the server's CPU from /proc. Loopback only; it stops by itself.

`--jetstream` makes NATS persist, as Parley does: the server runs with
`-js -sd DIR`, each group's subject gets a stream of its own (file
storage), and every publish waits for the stream's acknowledgement (the
publishes of a connection are in flight at once, as Parley's clients'
sends are); subscribers still get each message as it is stored:

    taskset -c 0 nats-server -a 127.0.0.1 -p 14222 -js -sd "$(mktemp -d)" &
    taskset -c 1 python3 tests/bench/peers_nats.py --port 14222 \
        --server-pid $! --rate 489,5000 --jetstream
"""

import argparse
import asyncio
import json
import os
import time

import nats

USERS, GROUP = 100, 10
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def step(conns, rate, args):
    latencies, window = [], {"on": False, "delivered": 0}

    def handler(msg):
        now = time.monotonic_ns()
        if window["on"]:
            window["delivered"] += 1
            sent = int(msg.data.split(b" ", 1)[0])
            latencies.append((now - sent) / 1e6)

    subs = []
    for i, nc in enumerate(conns):
        async def cb(msg):
            handler(msg)
        subs.append(await nc.subscribe(f"group.{i // GROUP}", cb=cb))
    interval = USERS / rate
    filler = b"x" * (args.body_bytes - 20)
    start = time.monotonic() + 0.3
    win_start, win_end = start + args.warmup, start + args.warmup + args.duration
    nexts = [start + interval * ((i * 0.618033988749) % 1.0) for i in range(USERS)]
    cpu0 = None
    js = [nc.jetstream() for nc in conns] if args.jetstream else []
    acks, acked = [], {"n": 0}
    while True:
        now = time.monotonic()
        if cpu0 is None and now >= win_start:
            window["on"] = True
            cpu0, t0 = cpu_seconds(args.server_pid), now
        if now >= win_end:
            break
        for i, nc in enumerate(conns):
            while nexts[i] <= now:
                body = b"%d %s" % (time.monotonic_ns(), filler)
                if args.jetstream:
                    acks.append(asyncio.ensure_future(js[i].publish(f"group.{i // GROUP}", body)))
                else:
                    await nc.publish(f"group.{i // GROUP}", body)
                nexts[i] += interval
        if len(acks) > 10_000:
            done = [a for a in acks if a.done()]
            acked["n"] += sum(1 for a in done if not a.exception())
            acks[:] = [a for a in acks if not a.done()]
        await asyncio.sleep(max(0.0, min(nexts) - time.monotonic()))
    for nc in conns:
        await nc.flush()
    cpu = cpu_seconds(args.server_pid) - cpu0
    if acks:
        results = await asyncio.gather(*acks, return_exceptions=True)
        acked["n"] += sum(1 for r in results if not isinstance(r, Exception))
    elapsed = time.monotonic() - t0
    window["on"] = False
    for s in subs:
        await s.unsubscribe()
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None
    return {
        "offered_msgs_per_s": rate,
        "offered_deliveries_per_s": rate * (GROUP - 1),
        "deliveries_per_s": round(window["delivered"] / args.duration, 1),
        "delivery_from_write_p50_ms": pick(0.50),
        "delivery_from_write_p99_ms": pick(0.99),
        "server_cpu_pct": round(100 * cpu / elapsed, 1),
        "server_cpu_us_per_delivery": round(1e6 * cpu / max(1, window["delivered"]), 2),
        "server_rss_mib": round(rss_mib(args.server_pid), 1),
        "jetstream_acked": acked["n"] if args.jetstream else None,
    }


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=14222)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--rate", default="489,5000")
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--body-bytes", type=int, default=64)
    p.add_argument("--jetstream", action="store_true", help="persist: a file stream per group, publish with ack")
    args = p.parse_args()
    conns = [
        await nats.connect(f"nats://127.0.0.1:{args.port}", no_echo=True)
        for _ in range(USERS)
    ]
    if args.jetstream:
        from nats.js.api import StorageType

        js = conns[0].jetstream()
        for g in range(USERS // GROUP):
            await js.add_stream(name=f"group{g}", subjects=[f"group.{g}"], storage=StorageType.FILE)
    for rate in [float(r) for r in args.rate.split(",")]:
        print(json.dumps(await step(conns, rate, args)), flush=True)
    for nc in conns:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
