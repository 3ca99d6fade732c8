#!/usr/bin/env python3
"""The Python peers of the queue rows (bench/queue_bench.cpp), with the fork start method:
    queue-small  1 producer process -> 1 consumer process, 64-bit ints through
                 multiprocessing.Queue ("python_queue") and SimpleQueue
                 ("python_simplequeue"), put/get one at a time. msgs_per_s.
    queue-small-64, queue-small-1024, queue-small-65536
                 the same through a Queue(maxsize) bounded at 64, 1024 or 65536
                 ("python_queue_64", ...). msgs_per_s.
    queue-mpsc-1, queue-mpsc-4, queue-mpsc-8
                 1, 4 or 8 producer processes -> 1 consumer process, 64-bit ints through
                 a Queue(1024) ("python_queue_p1", ...); the producers wait on an Event
                 until all are forked, then put their share (an even split). msgs_per_s:
                 the messages the consumer receives per second, from all producers.
    queue-large  the same with 1 MiB bytes objects through a Queue. gb_per_s.
    ping-pong    a round trip through two Queues: the parent puts on one, the child
                 answers on the other. per_op_us.

(Not named queue.py: run as a script, that name would shadow the standard library's
`queue` module, which multiprocessing imports.)

Prints the same CSV as bench/queue_bench.cpp, one line per contender per round after a
header: round,contender,<metric>. Each round runs every contender over --iterations
messages (round trips) in --slices sessions that alternate between the contenders; each
session forks a fresh child, and the clock starts once the consumer has the first message
(ping-pong: after --warmup untimed round trips). The consumer checks the count, every
value and its order (1 MiB messages: the size and one 8-byte stamp in every 4 KiB page;
queue-mpsc: per producer, whose number is a message's top byte) and a checksum, as the C++
program does; a child that finds a mismatch exits with 3, and any failure exits with 2.
"""

import functools
import multiprocessing
import sys
import time
from array import array

# Module globals, as they were when defined here: the timed loops look them up.
from bench_common import MASK, Mismatch, checksum, start_child
import bench_common

GOLDEN = 0x9E3779B97F4A7C15
LARGE = 1 << 20
STRIDE = 4096  # one stamp per page
STAMPS = LARGE // STRIDE

ROWS = {
    # row: (metric, default iterations, default warmup, default maxsize, contenders)
    "queue-small": ("msgs_per_s", 100_000, 5_000, 0, ["python_queue", "python_simplequeue"]),
    "queue-large": ("gb_per_s", 400, 20, 16, ["python_queue"]),
    "ping-pong": ("per_op_us", 10_000, 200, 0, ["python_queue"]),
}
BOUNDS = (64, 1024, 65536)  # the bounded queue-small rows
PRODUCERS = (1, 4, 8)       # the queue-mpsc rows
for _b in BOUNDS:
    ROWS[f"queue-small-{_b}"] = ("msgs_per_s", 20_000, 1_000, _b, [f"python_queue_{_b}"])
for _p in PRODUCERS:
    ROWS[f"queue-mpsc-{_p}"] = ("msgs_per_s", 15_000, 1_000, 1024, [f"python_queue_p{_p}"])


def value_of(seed, i):
    return (seed + i * GOLDEN) & MASK


def join_child(p, what):
    p.join()
    if p.exitcode != 0:
        raise Mismatch(f"{what}: child exited with {p.exitcode}")


# ---- queue-small -------------------------------------------------------------------------

def produce_small(q, n, seed):
    put = q.put
    for i in range(n):
        put((seed + i * GOLDEN) & MASK)
    if hasattr(q, "join_thread"):
        q.close()
        q.join_thread()  # the feeder thread has written everything


def small(ctx, make_queue, n, seed, maxsize):
    q = make_queue(maxsize)
    producer = start_child(ctx, produce_small, q, n, seed)
    get = q.get
    h = 0xCBF29CE484222325
    v = get()
    if v != value_of(seed, 0):
        raise Mismatch(f"consumer: message 0 holds {v}, expected {value_of(seed, 0)}")
    h = ((h ^ v) * 0x100000001B3) & MASK
    t0 = time.perf_counter()
    for i in range(1, n):
        v = get()
        if v != (seed + i * GOLDEN) & MASK:
            raise Mismatch(f"consumer: message {i} holds {v}, expected {value_of(seed, i)}")
        h = ((h ^ v) * 0x100000001B3) & MASK
    t1 = time.perf_counter()
    join_child(producer, "queue-small producer")
    if h != checksum(value_of(seed, i) for i in range(n)):
        raise Mismatch("queue-small: checksum mismatch")
    return t1 - t0, n - 1


def small_queue(ctx, n, seed, maxsize):
    return small(ctx, ctx.Queue, n, seed, maxsize)


def small_simple(ctx, n, seed, maxsize):
    return small(ctx, lambda _maxsize: ctx.SimpleQueue(), n, seed, maxsize)


# ---- queue-mpsc --------------------------------------------------------------------------

SHIFT = 56  # a queue-mpsc message's producer is its top byte
LOW = (1 << SHIFT) - 1


def mpsc_value(seed, p, i):
    return p << SHIFT | ((seed + i * GOLDEN) & LOW)


def produce_mpsc(q, go, p, count, seed):
    go.wait()
    put = q.put
    top = p << SHIFT
    for i in range(count):
        put(top | ((seed + i * GOLDEN) & LOW))
    q.close()
    q.join_thread()  # the feeder thread has written everything


def mpsc(ctx, n, seed, maxsize, producers):
    q = ctx.Queue(maxsize)
    go = ctx.Event()
    shares = [bench_common.slice_size(n, producers, p) for p in range(producers)]
    children = [start_child(ctx, produce_mpsc, q, go, p, shares[p], seed) for p in range(producers)]
    go.set()
    get = q.get
    nexts = [0] * producers  # per producer: how many of its messages came
    sums = [0xCBF29CE484222325] * producers

    def check(v):
        p = v >> SHIFT
        if p >= producers:
            raise Mismatch(f"consumer: a message names producer {p} of {producers}")
        i = nexts[p]
        if v != p << SHIFT | ((seed + i * GOLDEN) & LOW):
            raise Mismatch(f"consumer: message {i} of producer {p} holds {v}, "
                           f"expected {mpsc_value(seed, p, i)}")
        nexts[p] = i + 1
        sums[p] = ((sums[p] ^ v) * 0x100000001B3) & MASK

    check(get())
    t0 = time.perf_counter()
    for _ in range(1, n):
        check(get())
    t1 = time.perf_counter()
    for p, child in enumerate(children):
        join_child(child, f"queue-mpsc producer {p}")
    for p in range(producers):
        if nexts[p] != shares[p]:
            raise Mismatch(f"queue-mpsc: producer {p} sent {shares[p]} messages, "
                           f"the consumer received {nexts[p]}")
        if sums[p] != checksum(mpsc_value(seed, p, i) for i in range(shares[p])):
            raise Mismatch(f"queue-mpsc: checksum mismatch of producer {p}")
    return t1 - t0, n - 1


# ---- queue-large -------------------------------------------------------------------------

def stamps(seed, i):
    """Message i's stamps, one per 4 KiB page. Stamp k is (seed + k) mod 2**64 here: the
    C++ program's formula costs Python more than the message itself."""
    first = (seed + i * STAMPS) & MASK
    if first + STAMPS <= MASK + 1:
        return array("Q", range(first, first + STAMPS))
    return array("Q", [(first + j) & MASK for j in range(STAMPS)])


def produce_large(q, n, seed):
    # A fresh bytes object per message (Queue pickles it later, in its feeder thread, so one
    # buffer cannot be reused), written in one pass: stamp, page filler, stamp, ...
    filler = memoryview(bytes(range(256)) * (STRIDE // 256))[8:]
    for i in range(n):
        s = memoryview(stamps(seed, i)).cast("B")
        q.put(b"".join([part for j in range(STAMPS) for part in (s[j * 8:j * 8 + 8], filler)]))
    q.close()
    q.join_thread()


def large_queue(ctx, n, seed, maxsize):
    q = ctx.Queue(maxsize)
    producer = start_child(ctx, produce_large, q, n, seed)
    h = 0xCBF29CE484222325

    def take(i):
        nonlocal h
        message = q.get()
        if len(message) != LARGE:
            raise Mismatch(f"consumer: message {i} has {len(message)} bytes")
        got = memoryview(message).cast("Q")[::STRIDE // 8]
        want = stamps(seed, i)
        if got != want:
            raise Mismatch(f"consumer: message {i} has wrong stamps")
        h = checksum(want, h)

    take(0)
    t0 = time.perf_counter()
    for i in range(1, n):
        take(i)
    t1 = time.perf_counter()
    join_child(producer, "queue-large producer")
    if h != checksum(v for i in range(n) for v in stamps(seed, i)):
        raise Mismatch("queue-large: checksum mismatch")
    return t1 - t0, (n - 1) * LARGE / 1e9


# ---- ping-pong ---------------------------------------------------------------------------

def echo(requests, answers, total, seed):
    for i in range(total):
        v = requests.get()
        if v != value_of(seed, i):
            print(f"queue_bench.py: echo: message {i} holds {v}, expected {value_of(seed, i)}",
                  file=sys.stderr)
            sys.exit(3)
        answers.put(v ^ MASK)


def ping_pong(ctx, n, seed, maxsize, warmup):
    requests, answers = ctx.Queue(maxsize), ctx.Queue(maxsize)
    total = n + warmup
    child = start_child(ctx, echo, requests, answers, total, seed)
    h = 0xCBF29CE484222325

    def round_trip(i):
        nonlocal h
        v = value_of(seed, i)
        requests.put(v)
        answer = answers.get()
        if answer != v ^ MASK:
            raise Mismatch(f"ping-pong parent: answer {i} is {answer}, expected {v ^ MASK}")
        h = ((h ^ (answer ^ MASK)) * 0x100000001B3) & MASK

    for i in range(warmup):
        round_trip(i)
    t0 = time.perf_counter()
    for i in range(warmup, total):
        round_trip(i)
    t1 = time.perf_counter()
    join_child(child, "ping-pong echo")
    if h != checksum(value_of(seed, i) for i in range(total)):
        raise Mismatch("ping-pong: checksum mismatch")
    return t1 - t0, n


SESSIONS = {
    ("queue-small", "python_queue"): small_queue,
    ("queue-small", "python_simplequeue"): small_simple,
    ("queue-large", "python_queue"): large_queue,
}
for _b in BOUNDS:
    SESSIONS[f"queue-small-{_b}", f"python_queue_{_b}"] = small_queue
for _p in PRODUCERS:
    SESSIONS[f"queue-mpsc-{_p}", f"python_queue_p{_p}"] = functools.partial(mpsc, producers=_p)


def session(row, contender, ctx, n, seed, args):
    if row == "ping-pong":
        return ping_pong(ctx, n, seed, args.maxsize, args.warmup)
    return SESSIONS[row, contender](ctx, n, seed, args.maxsize)


def main():
    parser = bench_common.parser(__doc__, iterations=None, rows=ROWS)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=None,
                        help="messages of the untimed warm-up session (ping-pong: untimed round "
                             "trips per session)")
    parser.add_argument("--maxsize", type=int, default=None, help="the queues' maxsize (0: unbounded)")
    parser.add_argument("--start-round", type=int, default=0)
    parser.add_argument("--only", default=None, help="run one contender")
    args = parser.parse_args()
    metric, iterations, warmup, maxsize, contenders = ROWS[args.row]
    bench_common.fill_defaults(args, iterations=iterations, warmup=warmup, maxsize=maxsize)
    if args.only is not None:
        if args.only not in contenders:
            parser.error(f"row {args.row} has no contender {args.only}; it has {', '.join(contenders)}")
        contenders = [args.only]
    if (args.rounds < 1 or args.slices < 1 or args.iterations < 1 or args.warmup < 0
            or args.maxsize < 0 or args.start_round < 0):
        parser.error("--rounds, --slices and --iterations must be >= 1, the others >= 0")
    # Each session times all but its first message: at least two per session.
    args.iterations = max(args.iterations, 2)
    args.slices = max(1, min(args.slices, args.iterations // 2))

    ctx = multiprocessing.get_context("fork")
    if args.row != "ping-pong" and args.warmup >= 2:
        for c in contenders:
            session(args.row, c, ctx, args.warmup, 1, args)
    print(f"round,contender,{metric}", flush=True)
    for r in range(args.start_round, args.start_round + args.rounds):
        spent = {c: [0.0, 0.0] for c in contenders}
        for s in range(args.slices):
            n = bench_common.slice_size(args.iterations, args.slices, s)
            order = contenders if (r + s) % 2 == 0 else contenders[::-1]
            for c in order:
                seed = (r << 40 ^ s << 20 ^ contenders.index(c) << 8 ^ 0x5EED000000000001) & MASK
                seconds, units = session(args.row, c, ctx, n, seed, args)
                spent[c][0] += seconds
                spent[c][1] += units
        for c in contenders:
            print(f"{r},{c},{bench_common.figure(metric, *spent[c]):.6g}", flush=True)


if __name__ == "__main__":
    bench_common.run(main, "queue_bench.py")
