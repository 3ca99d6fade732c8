#!/usr/bin/env python3
"""Side-by-side benchmark driver for DESIGN.md's performance contract.

Each row of the contract is one entry of ROWS: the programs that measure it (mproc's C++
benchmark, its Python peer, ...), the contenders they report, the baseline that ratios are
taken against, and the goals. Rounds are interleaved: round r runs every program of the
row once (one round each), rotating which program goes first, so that load changes on the
machine hit every contender alike. Each program prints CSV

    round,contender,<metric>

one line per contender per round (see bench/spawn_bench.cpp). A row's metric is either a
time per operation (lower is better) or a throughput (higher is better); ratios are always
taken on the cost per unit (time per operation, or 1 / throughput), so "2×" means twice the
cost whatever the metric. The driver prints, per row, a table of median / min / max over
the rounds and the ratio of medians against the baseline, then the row's references
(another row's median from the same command, shown for scale and never judged), then each
goal as met / NOT met (a relative goal is judged on the median of the per-round ratios,
since the contenders of one round ran side by side; an absolute one on the subject's
median; a goal whose peer is not part of this benchmark is listed as not measured), and
speed-ups between contenders. It writes the same into <out-dir>/bench-<row>.csv (one line
per contender, reference, goal and speed-up) and the per-round figures into <out-dir>/bench-<row>-rounds.csv, and ends with a
summary table of every row run.

A row may need a server its programs share (the redis-async row: a redis-server of its own):
its Row.server starts it before the row's first round and stops it after the last, and gives
every program of the row the arguments that reach it. It may also skip the row, with the
reason, when this build lacks its programs: the row is then listed as skipped and the others
run.

Adding a row: build its programs (bench/CMakeLists.txt, target mproc_benchmarks), then
append a Row to ROWS.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import functools
import io
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Program:
    """A command that measures some contenders of a row, one round per invocation.

    argv(build_dir, python) gives the command without the round flags; the driver adds
    --rounds 1 --iterations N --start-round r. Every program takes those three flags and
    prints the CSV described at the top of this file.
    """

    name: str
    argv: Callable[[Path, str], list[str]]
    iterations: int


def cpp(target: str, iterations: int, *extra: str) -> Program:
    """A benchmark executable built by bench/CMakeLists.txt, with `extra` arguments (e.g. a
    program that measures several rows takes --row NAME)."""
    return Program(" ".join((target,) + extra),
                   lambda build, python: [str(build / "bench" / target), *extra], iterations)


def py(script: str, iterations: int, *extra: str) -> Program:
    """A Python script in bench/, run with the chosen interpreter, with `extra` arguments."""
    return Program(" ".join((script,) + extra),
                   lambda build, python: [python, str(BENCH_DIR / script), *extra], iterations)


@dataclass(frozen=True)
class Contender:
    key: str    # as the program prints it in the CSV
    label: str  # as the table shows it


@dataclass(frozen=True)
class Goal:
    """One goal of a row, about `subject`; give exactly one of:
    - max_cost_ratio: subject costs at most x times what `peer` costs ("≤ 1.3× raw
      fork+waitpid"), judged on the median of the per-round ratios;
    - min_speedup: subject at least x times as fast as `peer` ("≥ 50× Python"), likewise;
    - at_least / at_most: the subject's median, in the row's unit, is at least / at most x
      ("≥ 30M msg/s", "≤ 1 µs");
    - not_measured: why this run cannot judge it (its peer is not part of the benchmark);
      it is listed, and counts neither as met nor as missed;
    - reported=True: no target (a row the contract asks to report, with no figure to meet):
      how many times as fast subject is as `peer`, measured as a min_speedup is, printed
      and written as "reported", counting neither as met nor as missed."""

    text: str
    subject: str
    peer: str = ""
    max_cost_ratio: float | None = None
    min_speedup: float | None = None
    at_least: float | None = None
    at_most: float | None = None
    not_measured: str | None = None
    reported: bool = False


@dataclass(frozen=True)
class Reference:
    """A figure from another row of the same command, shown beside this row's table for scale
    (e.g. the ping-pong row's queue round trip beside the pool's apply round trip): the median
    of `contender` in `row`, which must come earlier in ROWS. Never part of a goal or ratio."""

    row: str
    contender: str
    label: str


@dataclass(frozen=True)
class Metric:
    """What a row's programs print and how its table reads it."""

    column: str             # the CSV column the programs print
    unit: str               # how the table names it
    higher_is_better: bool  # throughput (True) or time per operation (False)


def time_per_op(unit: str) -> Metric:
    """Microseconds per operation, the programs' per_op_us: lower is better."""
    return Metric("per_op_us", unit, higher_is_better=False)


def throughput(column: str, unit: str) -> Metric:
    """Operations (or bytes) per second, in CSV column `column`: higher is better."""
    return Metric(column, unit, higher_is_better=True)


@dataclass(frozen=True)
class Row:
    name: str
    workload: str
    metric: Metric
    contenders: list[Contender]
    programs: list[Program]
    baseline: str = "mproc"  # contender key the "ratio" column is taken against
    subject: str = "mproc"   # the contender the goals are about
    goals: list[Goal] = field(default_factory=list)
    # (contender, peer) pairs: how many times as fast the contender is as the peer
    speedups: list[tuple[str, str]] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    # What the row's programs share, if anything: server(args) is entered before the row's
    # first round and left after its last, and yields the arguments every program of the row
    # gets to reach it (e.g. ["--redis", url]); it raises SkipRow when the row cannot run.
    server: Callable[[argparse.Namespace], ContextManager[list[str]]] | None = None


def row_programs(row: str, target: str, iterations: int, script: str, py_iterations: int) -> list[Program]:
    """mproc's C++ program `target` and its Python peer `script`, programs that measure
    several rows and take --row."""
    return [cpp(target, iterations, "--row", row), py(script, py_iterations, "--row", row)]


def lock_row(name: str, workload: str, iterations: int, py_iterations: int, goals: list[Goal]) -> Row:
    """The lock rows differ in their workload and goals only. Not rows of DESIGN.md's table:
    issue 5 asks for these ratios. mproc::mutex is a robust pthread mutex plus owner
    tracking, so its raw robust peer is its floor; the plain process-shared one shows what
    robustness itself costs."""
    return Row(name, workload, throughput("pairs_per_s", "pairs/s"),
               [Contender("pthread_pshared", "raw pthread mutex, process-shared"),
                Contender("pthread_robust", "raw pthread mutex, process-shared + robust"),
                Contender("mproc", "mproc::mutex"),
                Contender("python_lock", "Python mp.Lock (fork)")],
               row_programs(name, "mproc_lock_bench", iterations, "lock_bench.py", py_iterations),
               baseline="pthread_robust", goals=goals,
               speedups=[("mproc", "python_lock"), ("pthread_pshared", "mproc"), ("pthread_robust", "mproc")])


def queue_small_row(bound: int) -> Row:
    """queue-small with the queues bounded at `bound` (DESIGN.md: "bounded at 64, 1024 and
    65536"), Boost and Python with the same bound. Iterations: bench/queue_bench.cpp's
    defaults for the row (the 64-slot Boost is the slow one)."""
    name = f"queue-small-{bound}"
    mproc, boost, python = f"mproc_{bound}", f"boost_{bound}", f"python_queue_{bound}"
    return Row(name, f"1 producer process → 1 consumer process, 8-byte messages (queue<uint64_t>, maxsize {bound})",
               throughput("msgs_per_s", "msg/s"),
               [Contender(mproc, "mproc put/get"),
                Contender(boost, f"Boost.Interprocess message_queue, {bound} slots"),
                Contender(python, f"Python mp.Queue({bound}) (fork)")],
               row_programs(name, "mproc_queue_bench", 500_000 if bound < 1024 else 1_000_000,
                            "queue_bench.py", 20_000),
               baseline=mproc, subject=mproc,
               goals=[Goal("mproc ≥ 5× Boost", mproc, boost, min_speedup=5)],
               speedups=[(mproc, boost), (mproc, python)])


def queue_mpsc_row(producers: int) -> Row:
    """queue-mpsc with `producers` producer processes → 1 consumer, maxsize 1024, Boost and
    Python with the same bound and producers. Throughput: messages the consumer receives per
    second, from all producers together. Boost slows down with more producers, so they get
    fewer messages (bench/queue_bench.cpp's defaults)."""
    name = f"queue-mpsc-{producers}"
    mproc, boost, python = f"mproc_p{producers}", f"boost_p{producers}", f"python_queue_p{producers}"
    s = "" if producers == 1 else "es"
    return Row(name, f"{producers} producer process{s} → 1 consumer process, 8-byte messages "
                     "(queue<uint64_t>, maxsize 1024)",
               throughput("msgs_per_s", "msg/s"),
               [Contender(mproc, "mproc put/get"),
                Contender(boost, "Boost.Interprocess message_queue, 1024 slots"),
                Contender(python, "Python mp.Queue(1024) (fork)")],
               row_programs(name, "mproc_queue_bench", {1: 1_000_000, 4: 600_000, 8: 400_000}[producers],
                            "queue_bench.py", 15_000),
               baseline=mproc, subject=mproc,
               goals=[Goal("mproc ≥ 5× Boost", mproc, boost, min_speedup=5)],
               speedups=[(mproc, boost), (mproc, python), (boost, python)])


def async_row(name: str, tasks: int, tasks_text: str) -> Row:
    """The async row with `tasks` tasks per session: a burst of apply_async on a warm pool,
    then get() of every result in order, beside two std::thread pools (one returning
    std::futures, one writing results in place, bench/pool_inplace_thread_pool.hpp) and
    Python. Python runs 10k tasks whatever `tasks` is (it does ~10-15k tasks/s, and a round
    should stay about a second): its rate is what compares. One session per round
    (bench/pool_bench.cpp's default for the row). The 1M row cannot keep to a second a
    round: each C++ pool runs its 1M tasks, ~1-2 s each for mproc and the std::future pool
    at 0.5-1M tasks/s, so a round takes ~5-7 s on a 2-core VM."""
    return Row(name, f"{tasks_text} apply_async of int f(int), then get() of every result in order "
                     "(Python: 10k)",
               throughput("tasks_per_s", "tasks/s"),
               [Contender("mproc", "mproc pool.apply_async"),
                Contender("thread_pool", "std::thread pool submit() → std::future"),
                Contender("thread_pool_inplace", "std::thread pool, results in preallocated slots"),
                Contender("mproc_thread_pool", "mproc::thread_pool apply_async (threads)"),
                Contender("python_pool", "Python Pool.apply_async (fork)")],
               row_programs("async", "mproc_pool_bench", tasks, "pool_bench.py", 10_000),
               goals=[Goal("mproc ≥ 100× Python", "mproc", "python_pool", min_speedup=100),
                      Goal("mproc ≥ the thread pool", "mproc", "thread_pool", min_speedup=1),
                      Goal("mproc ≥ the in-place thread pool", "mproc", "thread_pool_inplace", min_speedup=1),
                      Goal("mproc::thread_pool vs the std::future thread pool", "mproc_thread_pool", "thread_pool",
                           reported=True)],
               speedups=[("mproc", "python_pool"), ("mproc", "thread_pool"), ("mproc", "thread_pool_inplace"),
                         ("thread_pool_inplace", "thread_pool"), ("mproc_thread_pool", "thread_pool")])


# The MPI rows: two ranks under mpirun on this machine, over one transport each. pml ob1 so
# that the btl chosen is the one used (Open MPI could otherwise take UCX, which ignores it).
MPI_TRANSPORTS = {"shm": ("vader,self", "shared memory (btl vader)"), "tcp": ("tcp,self", "TCP (btl tcp)")}


def mpirun(transport: str) -> list[str]:
    """`mpirun -np 2` over `transport` (a key of MPI_TRANSPORTS), ranks not bound to cores
    (the README's advice: a rank's pool needs the node's cores). As root (a container),
    Open MPI wants its two consent variables: set for mpirun's command only."""
    consent = ["env", "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"] if os.geteuid() == 0 else []
    return [*consent, "mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2", "--mca", "pml", "ob1",
            "--mca", "btl", MPI_TRANSPORTS[transport][0]]


def mpi_cpp(target: str, transport: str, iterations: int, row: str) -> Program:
    """A benchmark executable of bench/CMakeLists.txt built when mproc::mpi is, under
    mpirun(transport), with --row `row`."""
    def argv(build: Path, python: str) -> list[str]:
        exe = build / "bench" / target
        if not exe.exists():
            raise BenchError(f"{target}: not found: {exe} (built when Open MPI is found: scripts/bench.sh)")
        return [*mpirun(transport), str(exe), "--row", row]
    return Program(f"{target} --row {row} ({transport})", argv, iterations)


@functools.cache
def python_importing(python: str, modules: str, packages: str) -> str:
    """`python` if it imports `modules` (comma-separated), else Debian's /usr/bin/python3 if
    that does (Debian's `packages` are installed for it, while `python` may be another
    interpreter, e.g. pyenv's)."""
    for candidate in dict.fromkeys([python, "/usr/bin/python3"]):
        try:
            probe = subprocess.run([candidate, "-c", f"import {modules}"], capture_output=True, check=False)
        except OSError:  # no such interpreter
            continue
        if probe.returncode == 0:
            return candidate
    raise BenchError(f"neither {python} nor /usr/bin/python3 imports {modules} "
                     f"(Debian: apt-get install {packages}; scripts/bench.sh does)")


def mpi4py_python(python: str) -> str:
    """An interpreter that imports mpi4py.futures (python_importing)."""
    return python_importing(python, "mpi4py.futures", "python3-mpi4py")


def mpi4py_program(transport: str, iterations: int, row: str) -> Program:
    """bench/mpi_bench.py under mpirun(transport) as mpi4py.futures' launcher runs a script
    (`python3 -m mpi4py.futures script.py`: rank 1 is the executor's worker)."""
    return Program(f"mpi_bench.py --row {row} ({transport})",
                   lambda build, python: [*mpirun(transport), mpi4py_python(python), "-m", "mpi4py.futures",
                                          str(BENCH_DIR / "mpi_bench.py"), "--row", row],
                   iterations)


# How the MPI rows' mproc is set up, for their workload text.
MPI_MPROC_SETUP = ("mproc: cpu_count() workers per rank, the root's pool among them; mpirun --bind-to none, "
                   "as the README says (bound to one core, a rank's pool shares it)")


def mpi_rows(transport: str) -> list[Row]:
    """mpi-apply, mpi-async and mpi-map over `transport`, beside the raw MPI task farm
    (bench/mpi_raw_farm.cpp, apply and async) and mpi4py.futures (bench/mpi_bench.py, one
    worker: rank 1). Iterations keep each program's round under ~2 s: mpi4py.futures does
    ~3k tasks/s; the raw farm over TCP ~50k."""
    over = MPI_TRANSPORTS[transport][1]
    return [
        Row(f"mpi-apply-{transport}",
            f"mpirun -np 2 over {over}: blocking round trip of int64 square(int). {MPI_MPROC_SETUP}: an idle "
            "apply runs on the root's own worker and crosses no rank, as users get it. Raw: MPI_Send to rank 1, "
            "MPI_Recv back. mpi4py.futures: submit().result()",
            time_per_op("µs/call"),
            [Contender("raw_mpi", "raw MPI_Send/MPI_Recv round trip"),
             Contender("mproc", "mproc::mpi pool.apply"),
             Contender("mpi4py", "mpi4py.futures submit().result()")],
            [mpi_cpp("mproc_mpi_raw_farm", transport, 20_000, "apply"),
             mpi_cpp("mproc_mpi_bench", transport, 5_000, "apply"),
             mpi4py_program(transport, 1_000, "apply")],
            baseline="raw_mpi",
            goals=[Goal("mproc ≤ 2× the raw MPI round trip", "mproc", "raw_mpi", max_cost_ratio=2)],
            speedups=[("mproc", "mpi4py"), ("raw_mpi", "mproc")],
            references=[Reference("apply", "mproc", "mproc::pool.apply on one machine (apply row)")]),
        Row(f"mpi-async-{transport}",
            f"mpirun -np 2 over {over}: 100k apply_async of int64 square(int), then get() of every result in "
            f"order. {MPI_MPROC_SETUP}. Raw: farm to rank 1, 16 in flight ({100_000 if transport == 'shm' else 30_000} "
            "tasks). mpi4py.futures: 2k submit(), then result() in order",
            throughput("tasks_per_s", "tasks/s"),
            [Contender("raw_mpi", "raw MPI_Send/MPI_Recv farm, 16 in flight"),
             Contender("mproc", "mproc::mpi pool.apply_async"),
             Contender("mpi4py", "mpi4py.futures submit() → result()")],
            [mpi_cpp("mproc_mpi_raw_farm", transport, 100_000 if transport == "shm" else 30_000, "async"),
             mpi_cpp("mproc_mpi_bench", transport, 100_000, "async"),
             mpi4py_program(transport, 2_000, "async")],
            baseline="raw_mpi",
            goals=[Goal("mproc ≥ 0.5× the raw farm", "mproc", "raw_mpi", min_speedup=0.5),
                   Goal("mproc ≥ 50× mpi4py.futures per task", "mproc", "mpi4py", min_speedup=50)],
            speedups=[("mproc", "mpi4py"), ("raw_mpi", "mproc")],
            references=[Reference("async", "mproc", "mproc::pool.apply_async on one machine (async row)")]),
        Row(f"mpi-map-{transport}",
            f"mpirun -np 2 over {over}: map of ints through x*x, chunksize 100 for both (mproc 1M items, "
            f"mpi4py.futures 200k). {MPI_MPROC_SETUP}",
            throughput("items_per_s", "items/s"),
            [Contender("mproc", "mproc::mpi pool.map chunksize=100"),
             Contender("mpi4py", "mpi4py.futures executor.map chunksize=100")],
            [mpi_cpp("mproc_mpi_bench", transport, 1_000_000, "map"),
             mpi4py_program(transport, 200_000, "map")],
            goals=[Goal("mproc ≥ 10× mpi4py.futures at equal chunksize", "mproc", "mpi4py", min_speedup=10)],
            speedups=[("mproc", "mpi4py")]),
    ]


# The redis-async row: mproc::redis::pool and its peers on one redis-server of the row's own,
# on a free port of 127.0.0.1, persisting nothing (no RDB snapshot, no AOF): every contender
# gets Redis at its in-memory speed, the same for all.
REDIS_PROGRAMS = ("mproc_redis_bench", "mproc_redis_raw_farm")


class SkipRow(Exception):
    """A row this build cannot run (its programs were not built); the message says why."""


def die_with_parent() -> None:
    """Run in a child before exec: SIGTERM when compare.py dies (PR_SET_PDEATHSIG), so that
    a driver killed mid-row leaves no server behind."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on now (another may take it before the
    server does: redis_server then tries again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_answers(port: int) -> bool:
    """Whether a Redis server on 127.0.0.1:port answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(args):
    """The redis-async row's Row.server: skips the row when its programs were not built (they
    are when mproc::redis is, i.e. when hiredis is found); otherwise starts redis-server on a
    free port as a child of compare.py, yields ["--redis", its URL] and stops it after the
    row."""
    missing = [t for t in REDIS_PROGRAMS if not (args.build_dir / "bench" / t).exists()]
    if missing:
        raise SkipRow(f"{', '.join(missing)} not built in {args.build_dir / 'bench'} (built with mproc::redis, "
                      "when hiredis is found: apt-get install libhiredis-dev redis-server; scripts/bench.sh does)")
    exe = shutil.which("redis-server")
    if exe is None:
        raise BenchError("redis-server: not found (Debian: apt-get install redis-server; scripts/bench.sh does)")
    with tempfile.TemporaryFile() as log:
        for _ in range(3):
            port = free_port()
            server = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                       "no", "--daemonize", "no"],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      preexec_fn=die_with_parent)
            deadline = time.monotonic() + 10
            while server.poll() is None and not redis_answers(port) and time.monotonic() < deadline:
                time.sleep(0.02)
            if server.poll() is None and redis_answers(port):
                break
            stop_process(server)  # the port was taken, or the server is broken: see the log below
        else:
            log.seek(0)
            raise BenchError(f"redis-server did not start:\n{log.read().decode(errors='replace')[-2000:]}")
        print(f"  redis-server (pid {server.pid}) on 127.0.0.1:{port} for the row", file=sys.stderr)
        try:
            yield ["--redis", f"redis://127.0.0.1:{port}"]
        finally:
            stop_process(server)


def redis_py(peer: str, iterations: int) -> Program:
    """bench/redis_bench.py's `peer`, with an interpreter that has Celery and RQ (Debian's
    python3-celery and python3-rq, so /usr/bin/python3)."""
    return Program(f"redis_bench.py --peer {peer}",
                   lambda build, python: [python_importing(python, "celery, rq", "python3-celery python3-rq"),
                                          str(BENCH_DIR / "redis_bench.py"), "--row", "async", "--peer", peer],
                   iterations)


# DESIGN.md's row, with issue 16's peers. "2 workers": two processes run tasks in every
# contender: the raw farm's 2 forked workers; one mproc `serve` process with a local pool of
# 2 (bench/redis_bench.cpp says why not 2 of 1); one Celery worker with a prefork pool of
# concurrency 2; 2 RQ workers. Iterations keep each program's round at ~2-5 s: the raw farm
# and mproc do 100k tasks, Celery ~600-900 tasks/s, RQ ~20-30 (a fork per job) and its
# SimpleWorker ~700. Their workers start (untimed) at each invocation, so a round of the
# row takes ~20 s on a 2-core VM.
REDIS_ASYNC = Row(
    "redis-async",
    "2 workers on localhost, one redis-server for the row: 100k apply_async of int64 square(int64), then get() "
    "of every result in order. mproc: 1 serve process with a local pool of 2. Raw: hiredis Streams farm, 2 "
    "forked workers, XREADGROUP COUNT 64, MULTI{XADD reply, XACK} EXEC per batch. Celery: 1.5k delay(), then "
    "get() in order; RQ: enqueue(), then return_value() polled (80 tasks; SimpleWorker 2k)",
    throughput("tasks_per_s", "tasks/s"),
    [Contender("raw_hiredis", "raw hiredis Streams farm, a reply entry per batch"),
     Contender("raw_hiredis_per_task", "raw hiredis Streams farm, a reply entry per task"),
     Contender("mproc", "mproc::redis pool.apply_async"),
     Contender("celery", "Celery 5.2 prefork, concurrency 2"),
     Contender("rq", "RQ 1.13, 2 workers (a fork per job)"),
     Contender("rq_simple", "RQ 1.13, 2 SimpleWorkers (no fork)")],
    [cpp("mproc_redis_raw_farm", 100_000, "--row", "async"),
     cpp("mproc_redis_bench", 100_000, "--row", "async"),
     redis_py("celery", 1_500),
     redis_py("rq", 80),
     redis_py("rq_simple", 2_000)],
    baseline="raw_hiredis",
    goals=[Goal("mproc ≥ 0.8× the raw farm", "mproc", "raw_hiredis", min_speedup=0.8),
           Goal("mproc ≥ 10× Celery", "mproc", "celery", min_speedup=10),
           Goal("mproc vs the raw farm with a reply entry per task", "mproc", "raw_hiredis_per_task", reported=True),
           Goal("mproc vs RQ", "mproc", "rq", reported=True),
           Goal("mproc vs RQ's SimpleWorker", "mproc", "rq_simple", reported=True)],
    speedups=[("mproc", "celery"), ("mproc", "rq"), ("mproc", "rq_simple"), ("raw_hiredis", "mproc"),
              ("raw_hiredis", "raw_hiredis_per_task")],
    references=[Reference("async", "mproc", "mproc::pool.apply_async on one machine (async row)")],
    server=redis_server)


# DESIGN.md "Performance contract", one entry per row. Iterations are per program per round,
# sized so that a round takes about a second on a 2-core VM.
ROWS: list[Row] = [
    Row("spawn", "start+join a process whose target returns at once", time_per_op("µs/op"),
        [Contender("raw_fork_waitpid", "raw fork+waitpid"),
         Contender("mproc", "mproc::process"),
         Contender("python_mp_fork", "Python mp (fork)")],
        [cpp("mproc_spawn_bench", 1000), py("spawn.py", 200)],
        baseline="raw_fork_waitpid",
        goals=[Goal("mproc ≤ 1.3× raw fork+waitpid", "mproc", "raw_fork_waitpid", max_cost_ratio=1.3)],
        speedups=[("mproc", "python_mp_fork")]),
    Row("wait-pipes", "round trip through one of 64 pipes that the parent watches with one wait: the child sends "
        "message i on pipe i % 64, the parent waits, receives and acknowledges on a return pipe",
        time_per_op("µs/round trip"),
        [Contender("raw_ppoll", "raw ppoll(2) over 64 socketpairs, 8-byte read/write"),
         Contender("mproc", "mproc::wait_ready over 64 connections, send/recv<uint64_t>"),
         Contender("python_connection_wait", "Python multiprocessing.connection.wait over 64 Pipes (fork)")],
        [cpp("mproc_wait_bench", 20_000), py("wait_bench.py", 5_000)],
        baseline="raw_ppoll",
        goals=[Goal("mproc ≥ 5× Python's connection.wait", "mproc", "python_connection_wait", min_speedup=5),
               Goal("mproc vs raw ppoll", "mproc", "raw_ppoll", reported=True)],
        speedups=[("mproc", "python_connection_wait"), ("raw_ppoll", "mproc")]),
    # Issue 17: not a row of DESIGN.md's table, which asks to report it.
    Row("forkserver-spawn", "start+join a process whose target returns at once, from the forkserver",
        time_per_op("µs/op"),
        [Contender("mproc", "mproc::process (fork)"),
         Contender("mproc_forkserver", "mproc::process(forkserver)"),
         Contender("python_mp_forkserver", "Python mp (forkserver)")],
        [cpp("mproc_spawn_bench", 1000, "--row", "forkserver-spawn"),
         py("spawn.py", 200, "--start-method", "forkserver")],
        baseline="mproc", subject="mproc_forkserver",
        goals=[Goal("mproc forkserver vs Python's forkserver", "mproc_forkserver", "python_mp_forkserver",
                    reported=True),
               Goal("mproc forkserver vs mproc's plain fork", "mproc_forkserver", "mproc", reported=True)],
        speedups=[("mproc_forkserver", "python_mp_forkserver"), ("mproc", "mproc_forkserver")]),
    Row("queue-small", "1 producer process → 1 consumer process, 8-byte messages (queue<uint64_t>, unbounded)",
        throughput("msgs_per_s", "msg/s"),
        [Contender("hand_ring", "hand-written SPSC ring, spins, never sleeps"),
         Contender("hand_ring_16", "the same ring, 16 bytes per message (mproc's record of a uint64_t)"),
         Contender("mproc", "mproc put/get"),
         Contender("mproc_batch", "mproc put_many/get_many ×256"),
         Contender("boost", "Boost.Interprocess message_queue, 65536 slots"),
         Contender("python_queue", "Python mp.Queue (fork)"),
         Contender("python_simplequeue", "Python mp.SimpleQueue (fork)")],
        # mproc_batch moves 8× the iterations, hand_ring 32×, hand_ring_16 16× (bench/queue_bench.cpp).
        row_programs("queue-small", "mproc_queue_bench", 2_000_000, "queue_bench.py", 100_000),
        goals=[Goal("mproc put/get ≥ 30M msg/s-class", "mproc", at_least=30e6),
               Goal("mproc batched ≥ 30M msg/s-class", "mproc_batch", at_least=30e6),
               Goal("mproc ≥ 5× Boost", "mproc", "boost", min_speedup=5),
               # What a line transfer per four messages allows: the ceiling of mproc's record size.
               Goal("mproc vs a ring moving as many bytes per message", "mproc", "hand_ring_16", reported=True),
               Goal("that ring vs Boost", "hand_ring_16", "boost", reported=True)],
        speedups=[("mproc", "boost"), ("mproc_batch", "boost"),
                  ("mproc", "python_queue"), ("mproc", "python_simplequeue"),
                  ("mproc_batch", "python_queue"), ("mproc_batch", "mproc"), ("hand_ring", "mproc"),
                  ("hand_ring", "hand_ring_16"), ("hand_ring_16", "mproc")]),
    *[queue_small_row(bound) for bound in (64, 1024, 65536)],
    *[queue_mpsc_row(producers) for producers in (1, 4, 8)],
    Row("queue-large",
        "1 producer process → 1 consumer process, 1 MiB messages (queue<vector<uint8_t>>, maxsize 16)",
        throughput("gb_per_s", "GB/s"),
        [Contender("memcpy", "memcpy 1 MiB from RAM, 1 process"),
         Contender("mproc", "mproc put/get"),
         Contender("boost", "Boost.Interprocess message_queue, 16 slots"),
         Contender("python_queue", "Python mp.Queue (fork), bytes")],
        # memcpy moves 8× the iterations, boost 2× (bench/queue_bench.cpp).
        row_programs("queue-large", "mproc_queue_bench", 1000, "queue_bench.py", 400),
        baseline="memcpy",
        # DESIGN.md: either one meets the row.
        goals=[Goal("mproc ≥ 2× Boost", "mproc", "boost", min_speedup=2),
               Goal("or mproc ≥ 0.9× memcpy", "mproc", "memcpy", min_speedup=0.9)],
        speedups=[("mproc", "boost"), ("mproc", "python_queue")]),
    Row("ping-pong", "round trip between two processes through two queue<uint64_t>", time_per_op("µs/round trip"),
        [Contender("futex_pingpong", "raw futex ping-pong, spin then FUTEX_WAIT"),
         Contender("mproc", "mproc two queues"),
         Contender("boost", "Boost.Interprocess two message_queues"),
         Contender("python_queue", "Python two mp.Queues (fork)")],
        # boost makes a fifth of the round trips (bench/queue_bench.cpp).
        row_programs("ping-pong", "mproc_queue_bench", 100_000, "queue_bench.py", 10_000),
        goals=[Goal("mproc ≤ 1 µs when a core is idle", "mproc", at_most=1.0),
               Goal("mproc ≤ cpp-ipc's", "mproc", "cpp_ipc",
                    not_measured="cpp-ipc is not packaged in Debian, and mproc's dependencies come from "
                                 "Debian packages only")],
        speedups=[("mproc", "boost"), ("mproc", "python_queue"), ("futex_pingpong", "mproc")]),
    Row("apply", "blocking round trip of int f(int) on a warm pool (cpu_count() workers each)",
        time_per_op("µs/call"),
        [Contender("mproc", "mproc pool.apply"),
         Contender("thread_pool", "std::thread pool submit().get()"),
         Contender("mproc_thread_pool", "mproc::thread_pool apply (threads)"),
         Contender("python_pool", "Python Pool.apply (fork)")],
        row_programs("apply", "mproc_pool_bench", 20_000, "pool_bench.py", 5_000),
        goals=[Goal("mproc ≥ 50× Python", "mproc", "python_pool", min_speedup=50),
               Goal("mproc faster than the thread pool", "mproc", "thread_pool", min_speedup=1),
               Goal("mproc::thread_pool vs the std::future thread pool", "mproc_thread_pool", "thread_pool",
                    reported=True)],
        speedups=[("mproc", "python_pool"), ("mproc", "thread_pool"), ("mproc_thread_pool", "thread_pool")],
        references=[Reference("ping-pong", "futex_pingpong", "raw futex ping-pong (ping-pong row)"),
                    Reference("ping-pong", "mproc", "mproc queue round trip (ping-pong row, two queues)")]),
    # The async row at 10k, 100k ("async", its name from before the curve) and 1M tasks in
    # flight: the rate should not depend on it.
    async_row("async-10k", 10_000, "10k"),
    async_row("async", 100_000, "100k"),
    async_row("async-1m", 1_000_000, "1M"),
    Row("map", "map of 10M ints through x*x, default chunksize (Python: 1M, chunksize=10000)",
        throughput("items_per_s", "items/s"),
        [Contender("mproc", "mproc pool.map"), Contender("python_pool", "Python Pool.map chunksize=10000 (fork)")],
        row_programs("map", "mproc_pool_bench", 10_000_000, "pool_bench.py", 1_000_000),
        goals=[Goal("mproc ≥ 20× Python", "mproc", "python_pool", min_speedup=20)],
        speedups=[("mproc", "python_pool")]),
    # Issue 14 asks for these two; neither is a row of DESIGN.md's table. as_completed has
    # no target: its ratio to Python is reported. Python runs as many tasks as mproc (100k,
    # some 15 s a round at ~7k tasks/s), not the async rows' 10k: as_completed watches every
    # future in flight, and Python's rate falls with their number (7.5-8k tasks/s at 10k,
    # 6.6-6.8k at 100k on a 2-core VM). mproc's in-order get() of the same tasks shows what
    # as_completed's bookkeeping costs mproc.
    Row("as_completed", "100k apply_async of int f(int), then get() of each result as as_completed yields it "
                        "(Python: ProcessPoolExecutor.submit, concurrent.futures.as_completed)",
        throughput("tasks_per_s", "tasks/s"),
        [Contender("mproc", "mproc apply_async + as_completed"),
         Contender("mproc_in_order", "mproc apply_async + get() in order"),
         Contender("python_executor", "Python ProcessPoolExecutor + as_completed (fork)")],
        row_programs("as_completed", "mproc_pool_bench", 100_000, "pool_bench.py", 100_000),
        goals=[Goal("as_completed vs Python", "mproc", "python_executor", reported=True)],
        speedups=[("mproc", "python_executor"), ("mproc_in_order", "mproc")]),
    # What a bound config costs a map: the same values through partial(scale, config) and
    # through a plain function with the config's values as constants. No Python peer.
    Row("map-partial", "map of 10M ints through partial(scale, config{3, 1}) vs plain(x) = 3x + 1, "
                       "default chunksize, 2 sessions each a round (A B B A)",
        throughput("items_per_s", "items/s"),
        [Contender("plain", "mproc pool.map(plain)"), Contender("partial", "mproc pool.map(partial(scale, config))")],
        [cpp("mproc_pool_bench", 10_000_000, "--row", "map-partial")],
        baseline="plain", subject="partial",
        goals=[Goal("partial ≤ 1.2× the plain function", "partial", "plain", max_cost_ratio=1.2)],
        speedups=[("plain", "partial")]),
    lock_row("lock-uncontended", "lock/unlock pairs in one process, nobody else using the lock", 10_000_000, 1_000_000,
             [Goal("mproc ≤ 1.25× a raw robust pthread mutex", "mproc", "pthread_robust", max_cost_ratio=1.25),
              Goal("mproc faster than Python's Lock", "mproc", "python_lock", min_speedup=1)]),
    lock_row("lock-contended", "lock/unlock pairs by two processes at once on one lock (pairs of both counted)",
             1_000_000, 200_000,
             [Goal("mproc ≤ 1.5× a raw robust pthread mutex", "mproc", "pthread_robust", max_cost_ratio=1.5),
              Goal("mproc ≥ 2× Python's Lock", "mproc", "python_lock", min_speedup=2)]),
    # Issue 17: mproc::shared_dict beside Python's Manager().dict() (an IPC round trip per
    # operation to the manager's server) and a process-local map under a mutex (the floor).
    Row("shared-dict", "set then get of key i % 1024 (uint64 keys and values), from the parent; "
                       "ops counted singly", throughput("ops_per_s", "ops/s"),
        [Contender("local_map", "std::unordered_map + std::mutex, one process"),
         Contender("mproc", "mproc::shared_dict set/get"),
         Contender("python_manager", "Python Manager().dict() (fork)")],
        row_programs("shared-dict", "mproc_shared_dict_bench", 1_000_000, "shared_dict_bench.py", 20_000),
        goals=[Goal("mproc ≥ 100× Python's Manager().dict()", "mproc", "python_manager", min_speedup=100)],
        speedups=[("mproc", "python_manager"), ("local_map", "mproc")]),
    # Issue 15: mproc::mpi::pool on two ranks of this machine, over shared memory and over
    # TCP, beside a raw MPI task farm and mpi4py.futures. Rows of the issue, not of
    # DESIGN.md's table. Built and run when Open MPI is installed (scripts/deps.sh).
    *[row for pair in zip(mpi_rows("shm"), mpi_rows("tcp")) for row in pair],
    # Issue 16: mproc::redis::pool on a redis-server of its own, beside a raw hiredis farm,
    # Celery and RQ. Built and run when hiredis is installed (scripts/bench.sh); skipped,
    # saying so, when its programs were not built.
    REDIS_ASYNC,
]


def check_rows(rows: list[Row]) -> None:
    """Every key a row names is one of its contenders; every goal has one criterion; every
    reference names a contender of an earlier row."""
    for index, row in enumerate(rows):
        keys = {c.key for c in row.contenders}
        for ref in row.references:
            earlier = {r.name: r for r in rows[:index]}
            if ref.row not in earlier or ref.contender not in {c.key for c in earlier[ref.row].contenders}:
                raise ValueError(f"row {row.name}: reference {ref.row}/{ref.contender} is not a contender "
                                 "of an earlier row")
        named = [row.baseline, row.subject] + [k for pair in row.speedups for k in pair]
        for g in row.goals:
            named.append(g.subject)
            criteria = [g.max_cost_ratio, g.min_speedup, g.at_least, g.at_most, g.not_measured]
            if sum(c is not None for c in criteria) + g.reported != 1:
                raise ValueError(f"row {row.name}: goal '{g.text}' needs exactly one criterion")
            if g.max_cost_ratio is not None or g.min_speedup is not None or g.reported:
                named.append(g.peer)
        unknown = sorted(set(named) - keys)
        if unknown:
            raise ValueError(f"row {row.name}: unknown contender(s) {', '.join(unknown)}")


class BenchError(Exception):
    pass


def run_round(row: Row, program: Program, r: int, args, server_args: list[str]) -> dict[str, float]:
    iterations = max(1, round(program.iterations * args.scale))
    cmd = program.argv(args.build_dir, args.python) + server_args + [
        "--rounds", "1", "--iterations", str(iterations), "--start-round", str(r)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    except FileNotFoundError:
        raise BenchError(f"{program.name}: not found: {cmd[0]} (build it first: scripts/bench.sh)") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{program.name}: round {r} took over {args.timeout} s") from None
    if done.returncode != 0:
        raise BenchError(f"{program.name}: exit status {done.returncode}\n$ {' '.join(cmd)}\n{done.stderr}")
    reader = csv.reader(io.StringIO(done.stdout))
    header = next(reader, None)
    if header != ["round", "contender", row.metric.column]:
        raise BenchError(f"{program.name}: expected header round,contender,{row.metric.column}, got {header}")
    known = {c.key for c in row.contenders}
    figures = {}
    for line in reader:
        if not line:
            continue
        try:
            round_no, key, value = line
            if int(round_no) != r or key not in known:
                raise ValueError
            figures[key] = float(value)
        except ValueError:
            raise BenchError(f"{program.name}: unexpected line {','.join(line)} in round {r}") from None
    if not figures:
        raise BenchError(f"{program.name}: printed no figures\n{done.stdout}{done.stderr}")
    return figures


def cost(row: Row, value: float) -> float:
    """Lower is better, whatever the metric."""
    return 1.0 / value if row.metric.higher_is_better else value


def measure(row: Row, args, server_args: list[str]) -> dict[str, list[float]]:
    """The row's rounds; every program gets `server_args` (those of the row's server)."""
    per_round: dict[str, list[float]] = {c.key: [] for c in row.contenders}
    for r in range(args.rounds):
        n = len(row.programs)
        order = [row.programs[(r + k) % n] for k in range(n)]  # rotate who goes first
        t0 = time.monotonic()
        for program in order:
            for key, value in run_round(row, program, r, args, server_args).items():
                per_round[key].append(value)
        print(f"  {row.name} round {r + 1}/{args.rounds}: {time.monotonic() - t0:.1f} s", file=sys.stderr)
    for key, values in per_round.items():
        if len(values) != args.rounds:
            raise BenchError(f"{row.name}: contender {key} has {len(values)} figures for {args.rounds} rounds")
    return per_round


def fmt(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:.1f}" if x >= 10 else f"{x:.3g}"


def fmt_times(x: float) -> str:
    """A speed-up in a goal's line: one decimal, or three significant digits below 1 (a
    contender 40× slower than its peer reads 0.025×, not 0.0×)."""
    return f"{x:.1f}" if x >= 1 else f"{x:.3g}"


def report(row: Row, per_round: dict[str, list[float]], args,
           earlier: dict[str, tuple[Row, dict[str, float]]]) -> tuple[bool, dict[str, str]]:
    """Prints the row's table, references, goals and speed-ups and writes its CSV files.
    `earlier` holds the rows already reported in this command (name: row, medians), for the
    references. Returns whether every measured goal was met, and the row's line of the
    summary table."""
    label = {c.key: c.label for c in row.contenders}
    median = {k: statistics.median(v) for k, v in per_round.items()}

    def cost_ratio(a: str, b: str) -> float:  # how many times what b costs, a costs
        return cost(row, median[a]) / cost(row, median[b])

    def paired(a: str, b: str) -> list[float]:  # the same ratio, round by round
        return [cost(row, x) / cost(row, y) for x, y in zip(per_round[a], per_round[b])]

    table = []  # the lines of <out-dir>/bench-<row>.csv

    def add_line(kind: str, contender: str, peer: str, metric: str = row.metric.column, median="", lo="", hi="",
                 ratio="", target="", verdict="") -> None:
        table.append(dict(kind=kind, row=row.name, contender=contender, peer=peer, metric=metric, rounds=args.rounds,
                          median=median, min=lo, max=hi, ratio=ratio, target=target, verdict=verdict))

    better = "higher" if row.metric.higher_is_better else "lower"
    cost_unit = f"1/({row.metric.unit})" if row.metric.higher_is_better else row.metric.unit
    print(f"\n== {row.name}: {row.workload}")
    print(f"   {args.rounds} interleaved rounds; {row.metric.unit}, {better} is better; "
          f"ratio = cost ({cost_unit}) vs {label[row.baseline]}, of medians; above 1: slower\n")
    w = max(len(c.label) for c in row.contenders)
    print(f"   {'contender':<{w}}  {'median':>9}  {'min':>9}  {'max':>9}  {'ratio':>7}")
    for c in row.contenders:
        v = per_round[c.key]
        ratio = cost_ratio(c.key, row.baseline)
        print(f"   {c.label:<{w}}  {fmt(median[c.key]):>9}  {fmt(min(v)):>9}  {fmt(max(v)):>9}  {ratio:>6.3g}×")
        add_line("contender", c.key, row.baseline, median=median[c.key], lo=min(v), hi=max(v), ratio=ratio)
    print()
    references = []
    for ref in row.references:
        if ref.row in earlier:
            ref_row, ref_medians = earlier[ref.row]
            value = ref_medians[ref.contender]
            print(f"   reference  {ref.label}: {fmt(value)} {ref_row.metric.unit} (median, this command)")
            add_line("reference", ref.contender, ref.row, metric=ref_row.metric.column, median=value)
            references.append(f"[ref] {ref.label} {fmt(value)} ({ref_row.metric.unit})")
        else:
            print(f"   reference  {ref.label}: row {ref.row} not run before this one "
                  f"(--rows {ref.row},{row.name})")
    if row.references:
        print()
    all_met = True
    verdicts = []
    for g in row.goals:
        if g.not_measured is not None:
            print(f"   goal  {g.text}: not measured ({g.not_measured})")
            add_line("goal", g.subject, g.peer, verdict="not measured")
            verdicts.append(f"{g.text}: not measured")
            continue
        if g.at_least is not None or g.at_most is not None:
            # An absolute goal: the subject's median, in the row's unit.
            value, values = median[g.subject], per_round[g.subject]
            if g.at_least is not None:
                met, target = value >= g.at_least, f">={g.at_least:g}"
            else:
                met, target = value <= g.at_most, f"<={g.at_most:g}"
            shown = f"median {fmt(value)} {row.metric.unit}, rounds {fmt(min(values))}–{fmt(max(values))}"
            lo, hi, ratio = min(values), max(values), value
        else:
            # The verdict uses the median of the per-round ratios: contenders of one round ran
            # side by side, so their ratio cancels the load drifts that move whole rounds.
            rounds = paired(g.subject, g.peer)
            ratio = statistics.median(rounds)
            of_medians = cost_ratio(g.subject, g.peer)
            lo, hi = min(rounds), max(rounds)
            if g.max_cost_ratio is not None:
                met, target = ratio <= g.max_cost_ratio, f"<={g.max_cost_ratio}"
                shown = (f"{ratio:.2f}× median per round, range {lo:.2f}–{hi:.2f}×; "
                         f"ratio of medians {of_medians:.2f}×")
            elif g.reported:
                shown = (f"{fmt_times(1 / ratio)}× faster median per round, range {fmt_times(1 / hi)}–"
                         f"{fmt_times(1 / lo)}×; ratio of medians {fmt_times(1 / of_medians)}×")
                print(f"   goal  {g.text}: reported, no target  ({shown})")
                add_line("goal", g.subject, g.peer, lo=lo, hi=hi, ratio=ratio, verdict="reported")
                verdicts.append(f"{g.text}: {1 / ratio:.3g}× (reported)")
                continue
            else:
                met, target = 1 / ratio >= g.min_speedup, f">={g.min_speedup}x faster"
                shown = (f"{fmt_times(1 / ratio)}× faster median per round, range {fmt_times(1 / hi)}–"
                         f"{fmt_times(1 / lo)}×; ratio of medians {fmt_times(1 / of_medians)}×")
        all_met &= met
        print(f"   goal  {g.text}: {'met' if met else 'NOT met'}  ({shown})")
        add_line("goal", g.subject, g.peer, lo=lo, hi=hi, ratio=ratio, target=target,
                 verdict="met" if met else "NOT met")
        verdicts.append(f"{g.text}: {'met' if met else 'NOT met'}")
    speedups = []
    for subject, peer in row.speedups:
        speedup = 1 / cost_ratio(subject, peer)
        rounds = [1 / x for x in paired(subject, peer)]
        print(f"   {label[subject]} speed-up vs {label[peer]}: {speedup:.3g}×  "
              f"(per round {min(rounds):.3g}–{max(rounds):.3g}×)")
        add_line("speedup", subject, peer, lo=min(rounds), hi=max(rounds), ratio=speedup)
        speedups.append(f"{label[subject]} / {label[peer]} {speedup:.3g}×")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary = args.out_dir / f"bench-{row.name}.csv"
    with summary.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(table[0]))
        out.writeheader()
        for t in table:
            out.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in t.items()})
    rounds_file = args.out_dir / f"bench-{row.name}-rounds.csv"
    with rounds_file.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["round", "contender", row.metric.column])
        for r in range(args.rounds):
            for c in row.contenders:
                out.writerow([r, c.key, per_round[c.key][r]])
    print(f"\n   written: {summary}, {rounds_file}")
    line = dict(
        row=row.name,
        medians="; ".join(f"{label[c.key]} {fmt(median[c.key])}" for c in row.contenders) + f" ({row.metric.unit})"
        + "".join(f"; {r}" for r in references),
        speedups="; ".join(speedups) or "–",
        goals="; ".join(verdicts) or "–")
    return all_met, line


def print_summary(lines: list[dict[str, str]], rounds: int) -> None:
    """The rows run, as one Markdown table (medians of `rounds` interleaved rounds)."""
    print(f"\n== summary: medians of {rounds} interleaved rounds\n")
    print("| row | contenders (median) | speed-ups | goals |")
    print("|---|---|---|---|")
    for line in lines:
        print(f"| {line['row']} | {line['medians']} | {line['speedups']} | {line['goals']} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", type=Path, default=Path("build-release"),
                        help="where the benchmark programs were built (default: build-release)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the CSV files go (default: the build dir)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per row, at least 5 (default 7)")
    parser.add_argument("--rows", default=",".join(r.name for r in ROWS),
                        help=f"comma-separated rows to run (default: all: {','.join(r.name for r in ROWS)})")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every program's iterations (e.g. 0.1 for a smoke run)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the Python peers")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one program round may take")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met")
    args = parser.parse_args()
    check_rows(ROWS)
    if args.rounds < 5:
        parser.error("--rounds must be at least 5: the contract reports medians of several runs")
    if args.scale <= 0:
        parser.error("--scale must be positive")
    args.build_dir = args.build_dir.resolve()
    args.out_dir = (args.out_dir or args.build_dir).resolve()
    by_name = {r.name: r for r in ROWS}
    wanted = [n for n in args.rows.split(",") if n]
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; known: {', '.join(by_name)}")

    py_version = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"],
                                capture_output=True, text=True, check=False).stdout.strip()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"mproc benchmarks: {platform.node()} {platform.system()} {platform.release()}, "
          f"{os.cpu_count()} CPUs, load {load}, Python {py_version or '?'} ({args.python})")
    all_met = True
    lines = []
    done: dict[str, tuple[Row, dict[str, float]]] = {}
    try:
        for name in wanted:
            row = by_name[name]
            try:
                with row.server(args) if row.server else contextlib.nullcontext([]) as server_args:
                    per_round = measure(row, args, server_args)
            except SkipRow as e:
                print(f"\n== {row.name}: skipped: {e}")
                lines.append(dict(row=row.name, medians=f"skipped: {e}", speedups="–", goals="–"))
                continue
            met, line = report(row, per_round, args, done)
            done[name] = (row, {k: statistics.median(v) for k, v in per_round.items()})
            all_met &= met
            lines.append(line)
    except BenchError as e:
        print(f"compare.py: {e}", file=sys.stderr)
        if lines:
            print_summary(lines, args.rounds)
        return 2
    print_summary(lines, args.rounds)
    return 1 if args.strict and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
