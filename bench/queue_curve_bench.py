#!/usr/bin/env python3
"""The Python peer of one point of the queue-throughput-vs-size curve
(bench/queue_curve_bench.cpp): 1 producer process -> 1 consumer process through a
multiprocessing.Queue(maxsize) with the fork start method ("python_queue"), messages of
--bytes S as bytes objects, put/get one at a time.

Prints the same CSV as the C++ program, one line per round after a header:
round,contender,msgs_per_s (bytes/s is msgs/s × S). Each round runs --iterations messages
in --slices sessions (default 1), after one untimed warm-up session of --warmup messages
(default N/8 within [2, 10000]); --maxsize defaults to 16 MiB / S within [2, 65536], as in
the C++ program. Each session forks a fresh producer. The producer builds a fresh bytes
object per message (Queue pickles it later, in its feeder thread, so one buffer cannot be
reused), in one pass: filler and stamps joined.

Timing as in the C++ program: the producer stores the CLOCK_MONOTONIC time at which it
starts building its first message in shared memory (a RawValue); the consumer stops the
clock once it has checked the last one. Verification likewise: message i carries 8-byte
stamps at the start of every 4 KiB page and in its last 8 bytes (stamp k of a session is
seed + k mod 2**64 here: the C++ program's mixing costs Python more than the message);
the consumer checks the size, every stamp and the order and folds them into a checksum.
A mismatch or a failed producer exits with 2.
"""

import multiprocessing
import time
from array import array

from bench_common import MASK, Mismatch, checksum, start_child
import bench_common

CONTENDER = "python_queue"
STRIDE = 4096


def now():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Layout:
    """Where a message of `size` bytes carries its stamps: each 4 KiB page's first 8 bytes
    (pages, a stride of STRIDE) and, unless that is one of them, its last 8 (tail)."""

    def __init__(self, size):
        self.size = size
        self.pages = (size - 8) // STRIDE + 1
        self.tail = (size - 8) % STRIDE != 0
        self.stamps = self.pages + (1 if self.tail else 0)
        filler = bytes((k * 131 + 7) & 0xFF for k in range(min(size, 1 << 16)))
        filler = (filler * (size // len(filler) + 1))[:size]
        self.filler = memoryview(filler)
        self.middle = bytes(self.filler[8:size - 8]) if size > 16 else b""

    def values(self, seed, i):
        first = (seed + i * self.stamps) & MASK
        if first + self.stamps <= MASK + 1:
            return array("Q", range(first, first + self.stamps))
        return array("Q", [(first + j) & MASK for j in range(self.stamps)])

    def build(self, seed, i):
        """Message i: the filler with its stamps, in one join."""
        if self.pages == 1:  # small: at most two stamps, no array
            first = (seed + i * self.stamps) & MASK
            if not self.tail:
                return first.to_bytes(8, "little")
            return b"".join((first.to_bytes(8, "little"), self.middle,
                             ((first + 1) & MASK).to_bytes(8, "little")))
        s = memoryview(self.values(seed, i)).cast("B")
        parts = []
        for j in range(self.pages):
            at = j * STRIDE
            parts.append(s[j * 8:j * 8 + 8])
            parts.append(self.filler[at + 8:min(at + STRIDE, self.size - 8 if self.tail else self.size)])
        if self.tail:
            parts.append(s[self.pages * 8:])
        return b"".join(parts)

    def check(self, message, seed, i):
        """Message i's stamps, once checked."""
        if len(message) != self.size:
            raise Mismatch(f"consumer: message {i} has {len(message)} bytes, expected {self.size}")
        if self.pages == 1:  # small: at most two stamps, no array
            first = (seed + i * self.stamps) & MASK
            got = [int.from_bytes(message[:8], "little")]
            want = [first]
            if self.tail:
                got.append(int.from_bytes(message[-8:], "little"))
                want.append((first + 1) & MASK)
            if got != want:
                raise Mismatch(f"consumer: message {i} holds stamps {got}, expected {want}")
            return want
        words = memoryview(message).cast("Q")
        got = array("Q", words[::STRIDE // 8])
        if self.tail:
            got.append(words[-1])
        want = self.values(seed, i)
        if got != want:
            raise Mismatch(f"consumer: message {i} has wrong stamps")
        return want


def produce(q, start, layout, n, seed):
    start.value = now()
    put, build = q.put, layout.build
    for i in range(n):
        put(build(seed, i))
    q.close()
    q.join_thread()  # the feeder thread has written everything


def session(ctx, layout, n, seed, maxsize):
    q = ctx.Queue(maxsize)
    start = ctx.RawValue("d", 0.0)
    producer = start_child(ctx, produce, q, start, layout, n, seed)
    h = 0xCBF29CE484222325
    get, check = q.get, layout.check
    for i in range(n):
        h = checksum(check(get(), seed, i), h)
    end = now()
    producer.join()
    if producer.exitcode != 0:
        raise Mismatch(f"producer exited with {producer.exitcode}")
    if h != checksum(v for i in range(n) for v in layout.values(seed, i)):
        raise Mismatch("checksum mismatch")
    if start.value <= 0 or end <= start.value:
        raise Mismatch("the producer did not record its start")
    return end - start.value, n


def default_iterations(size):
    """About 0.2 s of work on a 2-core VM: ~12 µs per message plus ~1 GB/s."""
    return max(4, min(200_000, int(0.2 / (12e-6 + size / 1e9))))


def main():
    parser = bench_common.parser(__doc__, iterations=None)
    parser.add_argument("--bytes", type=int, required=True, help="bytes per message (a multiple of 8, at least 8)")
    parser.add_argument("--slices", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=None, help="messages of the untimed warm-up session")
    parser.add_argument("--maxsize", type=int, default=None, help="the queue's maxsize")
    parser.add_argument("--start-round", type=int, default=0)
    args = parser.parse_args()
    if args.bytes < 8 or args.bytes % 8 != 0:
        parser.error("--bytes must be a multiple of 8, at least 8")
    bench_common.fill_defaults(args, iterations=default_iterations(args.bytes))
    bench_common.fill_defaults(args, warmup=max(2, min(10_000, args.iterations // 8)),
                               maxsize=max(2, min(65_536, (16 << 20) // args.bytes)))
    if args.rounds < 1 or args.slices < 1 or args.iterations < 1 or args.maxsize < 1:
        parser.error("--rounds, --slices, --iterations and --maxsize must be >= 1")
    if args.warmup < 0 or args.start_round < 0:
        parser.error("--warmup and --start-round must be >= 0")
    args.slices = min(args.slices, args.iterations)

    ctx = multiprocessing.get_context("fork")
    layout = Layout(args.bytes)
    if args.warmup > 0:
        session(ctx, layout, args.warmup, 1, args.maxsize)
    print("round,contender,msgs_per_s", flush=True)
    for r in range(args.start_round, args.start_round + args.rounds):
        seconds = units = 0
        for s in range(args.slices):
            seed = (r << 40 ^ s << 20 ^ 3 << 8 ^ 0x5EED000000000001) & MASK
            t, u = session(ctx, layout, bench_common.slice_size(args.iterations, args.slices, s), seed,
                           args.maxsize)
            seconds += t
            units += u
        print(f"{r},{CONTENDER},{units / seconds:.6g}", flush=True)


if __name__ == "__main__":
    bench_common.run(main, "queue_curve_bench.py")
