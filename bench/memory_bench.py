#!/usr/bin/env python3
"""The Python peer of bench/memory_bench.cpp: what an idle multiprocessing.Pool worker and a
multiprocessing.Queue holding unconsumed messages cost in memory, with the fork start
method, measured the same way (read that program's header for the quantities).

--part pool: Pool(--processes) (default 2), made after a baseline of this process, warmed up
  with map(x*x) over 100000 ints (default chunksize) and then tasks that return os.getpid()
  (100 ms each, all workers busy at once, until every worker has answered), then idle for
  --idle-ms. The workers are this process's children; the pids the tasks return must be
  among them. No zygote, no shared files: Pool talks through pipes (empty when idle).
--part queue: an unbounded Queue made here (this process consumes later) and a producer
  child that puts --buffered-bytes B of bytes objects of --message-bytes S each (a fresh
  object per message, put and dropped), then idles. Queue.put() only appends the object to
  a deque; the producer's feeder thread pickles the messages one by one and writes them to
  a pipe until the pipe is full (64 KiB) and blocks there, holding the pickled copy of the
  message it is writing. So the data lives in the producer's heap (the deque's objects and
  that copy: producer_anon) and in the kernel's pipe buffer (pipe: FIONREAD on the queue's
  reading end, Queue's private `_reader`). file is 0 (no shared files).

Prints CSV: contender,quantity,value (bytes, or a count), contender "python". Verification
as in the C++ program: warm-up results checked; each message carries its index in its first
and last 8 bytes, checked with its size, in order, and folded into a checksum. A mismatch
exits with 2.
"""

import argparse
import fcntl
import multiprocessing
import os
import struct
import sys
import termios
import time

from bench_common import Mismatch, checksum
import bench_common

CONTENDER = "python"


def rollup(pid):
    """RSS, PSS, USS (Private_Clean + Private_Dirty), Pss_Anon and Pss_Shmem of `pid`, in bytes."""
    kib = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":"):
                kib[parts[0][:-1]] = int(parts[1])
    return {"rss": kib["Rss"] * 1024, "pss": kib["Pss"] * 1024,
            "uss": (kib["Private_Clean"] + kib["Private_Dirty"]) * 1024,
            "anon": kib["Pss_Anon"] * 1024, "shmem": kib["Pss_Shmem"] * 1024}


def children_of(pid):
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(p) for p in f.read().split()]
    return kids


def emit(quantity, value):
    print(f"{CONTENDER},{quantity},{int(value)}")


def idle(args):
    time.sleep(args.idle_ms / 1000)


# ---- pool ------------------------------------------------------------------------------

def square(x):
    return x * x


def pid_after(seconds):
    time.sleep(seconds)
    return os.getpid()


def pool_part(ctx, args):
    me = os.getpid()
    before = rollup(me)
    with ctx.Pool(args.processes) as pool:
        items = list(range(1, 100_001))
        if pool.map(square, items) != [x * x for x in items]:
            raise Mismatch("warm-up map: wrong results")
        pids = set()
        for _ in range(20):
            if len(pids) >= args.processes:
                break
            pending = [pool.apply_async(pid_after, (0.1,)) for _ in range(args.processes)]
            pids.update(r.get() for r in pending)
        if len(pids) != args.processes:
            raise Mismatch(f"the pid tasks reached {len(pids)} of {args.processes} workers")
        del items
        idle(args)
        if not pids <= set(children_of(me)):
            raise Mismatch("the pids the tasks returned are not this process's children")
        workers = [rollup(p) for p in sorted(pids)]
        after = rollup(me)
        total_pss = after["pss"] + sum(w["pss"] for w in workers)
        print("contender,quantity,value")
        emit("workers", len(workers))
        for key in ("rss", "pss", "uss", "anon", "shmem"):
            emit(f"worker_{key}", sum(w[key] for w in workers) / len(workers))
        emit("worker_uss_max", max(w["uss"] for w in workers))
        emit("parent_pss_delta", after["pss"] - before["pss"])
        emit("parent_uss_delta", after["uss"] - before["uss"])
        emit("total_pss_delta", total_pss - before["pss"])
        emit("shared_files", 0)


# ---- queue -----------------------------------------------------------------------------

def stamp_of(i):
    return 0x5EED000000000000 + i


def message(i, size, middle):
    s = struct.pack("<Q", stamp_of(i))
    return s if size == 8 else b"".join((s, middle, s))


def produce(q, ready, go, done, quit_, count, size):
    pattern = bytes((k * 131 + 7) & 0xFF for k in range(256))  # as the C++ program's filler
    middle = (pattern * (size // 256 + 1))[8:size - 8] if size > 16 else b""
    ready.set()
    go.wait()
    for i in range(count):
        q.put(message(i, size, middle))
    done.set()
    quit_.wait()


def pipe_bytes(q):
    buf = bytearray(4)
    fcntl.ioctl(q._reader.fileno(), termios.FIONREAD, buf)
    return struct.unpack("i", buf)[0]


def queue_part(ctx, args):
    size, count = args.message_bytes, args.buffered_bytes // args.message_bytes
    me = os.getpid()
    q = ctx.Queue()
    ready, go, done, quit_ = (ctx.Event() for _ in range(4))
    producer = ctx.Process(target=produce, args=(q, ready, go, done, quit_, count, size), daemon=True)
    producer.start()
    try:
        ready.wait()
        idle(args)
        producer_before, consumer_before = rollup(producer.pid), rollup(me)
        go.set()
        done.wait()
        idle(args)
        producer_buffered, consumer_buffered = rollup(producer.pid), rollup(me)
        pipe = pipe_bytes(q)

        got = []
        for i in range(count):
            m = q.get()
            if len(m) != size or m[:8] != struct.pack("<Q", stamp_of(i)) or m[-8:] != m[:8]:
                raise Mismatch(f"message {i} is not the one put ({len(m)} bytes)")
            got.append(int.from_bytes(m[:8], "little"))
            del m
        if checksum(got) != checksum(stamp_of(i) for i in range(count)) or not q.empty():
            raise Mismatch("queue: checksum mismatch or messages left over")
        del got
        idle(args)
        producer_drained, consumer_drained = rollup(producer.pid), rollup(me)
        drained_pipe = pipe_bytes(q)
    finally:
        quit_.set()
        producer.join()
    if producer.exitcode != 0:
        raise Mismatch(f"the producer exited with {producer.exitcode}")

    producer_anon = producer_buffered["anon"] - producer_before["anon"]
    consumer_anon = consumer_buffered["anon"] - consumer_before["anon"]
    drained_producer_anon = producer_drained["anon"] - producer_before["anon"]
    drained_consumer_anon = consumer_drained["anon"] - consumer_before["anon"]
    print("contender,quantity,value")
    emit("messages", count)
    emit("payload", count * size)
    emit("file", 0)
    emit("pipe", pipe)
    emit("producer_anon", producer_anon)
    emit("consumer_anon", consumer_anon)
    emit("producer_uss", producer_buffered["uss"] - producer_before["uss"])
    emit("consumer_uss", consumer_buffered["uss"] - consumer_before["uss"])
    emit("total", pipe + producer_anon + consumer_anon)
    emit("drained_file", 0)
    emit("drained_pipe", drained_pipe)
    emit("drained_producer_anon", drained_producer_anon)
    emit("drained_consumer_anon", drained_consumer_anon)
    emit("drained_total", drained_pipe + drained_producer_anon + drained_consumer_anon)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", required=True, choices=["pool", "queue"])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--message-bytes", type=int, default=None)
    parser.add_argument("--buffered-bytes", type=int, default=None)
    parser.add_argument("--idle-ms", type=int, default=500)
    args = parser.parse_args()
    if args.processes < 1 or args.idle_ms < 0:
        parser.error("--processes must be >= 1 and --idle-ms >= 0")
    if args.part == "queue":
        if args.message_bytes is None or args.buffered_bytes is None:
            parser.error("--part queue needs --message-bytes and --buffered-bytes")
        if (args.message_bytes < 8 or args.message_bytes % 8 or args.buffered_bytes < 0
                or args.buffered_bytes % args.message_bytes):
            parser.error("--message-bytes must be a multiple of 8 (>= 8), --buffered-bytes a multiple of it")
    ctx = multiprocessing.get_context("fork")
    (pool_part if args.part == "pool" else queue_part)(ctx, args)
    sys.stdout.flush()


if __name__ == "__main__":
    bench_common.run(main, "memory_bench.py")
