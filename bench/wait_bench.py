#!/usr/bin/env python3
"""The `wait-pipes` row's Python peer: a round trip through one of 64 pipes that the parent
watches with multiprocessing.connection.wait, as bench/wait_bench.cpp does with
mproc::wait_ready.

A child process sends message i on pipe i % 64 and waits for an acknowledgement on one
return pipe; the parent waits on all 64, receives what is ready and acknowledges it.
Prints the same CSV as bench/wait_bench.cpp, one line per round after a header:
    round,contender,per_op_us
"""

import multiprocessing
from multiprocessing.connection import wait
import time

import bench_common

CONTENDER = "python_connection_wait"
PIPES = 64
STOP = -1


def sender(writers, acks):
    i = 0
    while True:
        writers[i % PIPES].send(i)
        if acks.recv() == STOP:
            return
        i += 1


def round_trips(readers, index_of, ack, n):
    done = 0
    while done < n:
        for r in wait(readers):
            got = r.recv()
            if got % PIPES != index_of[r]:
                raise bench_common.Mismatch("a message came on the wrong pipe")
            ack.send(got)
            done += 1


def main():
    parser = bench_common.parser(__doc__, iterations=20000)
    parser.add_argument("--start-round", type=int, default=0)
    args = parser.parse_args()
    if args.rounds < 1 or args.iterations < 1 or args.start_round < 0:
        parser.error("--rounds and --iterations must be >= 1, --start-round >= 0")
    ctx = multiprocessing.get_context("fork")
    pairs = [ctx.Pipe(duplex=False) for _ in range(PIPES)]
    readers = [r for r, _ in pairs]
    index_of = {r: i for i, r in enumerate(readers)}
    ack_reader, ack = ctx.Pipe(duplex=False)
    child = ctx.Process(target=sender, args=([w for _, w in pairs], ack_reader), daemon=True)
    child.start()
    for _, w in pairs:
        w.close()
    ack_reader.close()
    round_trips(readers, index_of, ack, 1000)
    print("round,contender,per_op_us", flush=True)
    for r in range(args.start_round, args.start_round + args.rounds):
        t0 = time.perf_counter()
        round_trips(readers, index_of, ack, args.iterations)
        t1 = time.perf_counter()
        print(f"{r},{CONTENDER},{(t1 - t0) * 1e6 / args.iterations:.3f}", flush=True)
    ack.send(STOP)
    child.join()


if __name__ == "__main__":
    bench_common.run(main, "wait_bench.py")
