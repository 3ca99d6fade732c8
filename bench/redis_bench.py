#!/usr/bin/env python3
"""The Celery and RQ peers of the redis-async row (bench/redis_bench.cpp), on the Redis server
at --redis URL, one peer per invocation (--peer):

    python3 bench/redis_bench.py --row async --peer celery --redis redis://127.0.0.1:6379

(Debian's python3-celery 5.2 and python3-rq 1.13, so /usr/bin/python3.) The task is
square(x) = x*x; a session submits --iterations tasks, then gets every result in order:
    celery  a Celery app with Redis as broker and result backend; one worker with a prefork
            pool of concurrency 2 (`celery worker --pool prefork --concurrency 2`, Celery's
            default pool). square.delay(x) of every task, then get() of each
            AsyncResult. Contender "celery". Default 1500 tasks (Celery does ~600 tasks/s).
    rq      2 RQ workers as `rq worker` runs them (rq.Worker, which forks a work horse per
            job, RQ's default). queue.enqueue(square, x) of every task, then each job's
            return_value(), polled every millisecond until it is there. Contender "rq".
            Default 80 tasks (it does ~20-30 tasks/s on a 2-core VM: the fork per job).
    rq_simple  the same with `rq worker --worker-class rq.SimpleWorker`, which runs jobs in
            the worker itself, no fork: RQ at its fastest. Contender "rq_simple". Default
            2000 tasks (~700 tasks/s).

All run with their defaults but three flags of Celery's worker that only cost it:
--without-gossip, --without-mingle and --without-heartbeat (events between workers, and a
sync with them at start-up; a lone worker has no use for them).

The workers are started once per invocation, as processes of their own (this script re-run
with --worker, so that they import nothing of the client's), on a queue named afresh for the
invocation, and warmed up with one untimed session of --warmup tasks; RQ's also wait until
both workers have registered. They are told to die with this process (PR_SET_PDEATHSIG), run
in a process group of their own, and are stopped at the end with SIGTERM (their warm
shutdown), then the group with SIGKILL if anything of it is left: no process stays behind.
After each session (untimed) the session's keys are deleted; at the end, the queue's.

Prints the same CSV as the C++ programs, one line per round after a header:
round,contender,tasks_per_s. Each round runs --iterations tasks in --slices sessions; the
clock covers submitting and getting only. Every result is compared with the square of its own
input, in order, and folded into a checksum, as the C++ programs do; a mismatch, a failed
RQ job or a worker that dies exits with 2, any other failure (a Celery task's exception, a
timeout, Redis gone) with its traceback.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time

from bench_common import Mismatch, checksum
import bench_common

ROWS = {"async": "tasks_per_s"}

PEERS = {
    # peer: (default iterations, default warmup)
    "celery": (1_500, 100),
    "rq": (80, 10),
    "rq_simple": (2_000, 100),
}

WORKERS = 2  # the row's "2 workers": Celery's concurrency, RQ's worker processes
WAIT_TIMEOUT = 60  # seconds the workers may take to come up, or a result to come
STOP_TIMEOUT = 15  # seconds a warm shutdown may take before SIGKILL


def square(x):
    return x * x


def verify(what, results, base):
    n = len(results)
    want = [square(base + i) for i in range(n)]
    if results != want:
        i = next(i for i in range(n) if results[i] != want[i])
        raise Mismatch(f"{what}: result {i} is {results[i]}, expected {want[i]}")
    if checksum(results) != checksum(want):
        raise Mismatch(f"{what}: checksum mismatch")


def base_of(r, s):
    """Input bases, distinct for every session, as in the C++ programs."""
    return (r * 7919 + s * 104_729 + 26) % 1_000_000


def redis_connection(url):
    from redis import Redis
    return Redis.from_url(url)


def delete_keys(conn, keys):
    keys = list(keys)
    for i in range(0, len(keys), 1000):
        conn.delete(*keys[i:i + 1000])


# ---- Celery ----------------------------------------------------------------------------------

def celery_app(url, queue):
    """The app of both sides, its one task registered under a fixed name."""
    from celery import Celery
    app = Celery("redis_bench", broker=url, backend=url)
    app.conf.update(task_default_queue=queue, worker_hijack_root_logger=False, worker_redirect_stdouts=False)
    app.task(name="redis_bench.square")(square)
    return app


def celery_worker(url, queue):
    app = celery_app(url, queue)
    app.worker_main(["worker", "--pool", "prefork", "--concurrency", str(WORKERS), "--loglevel", "WARNING",
                     "--hostname", f"{queue}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"])


class CeleryPeer:
    contender = "celery"

    def __init__(self, url, queue):
        self.url, self.queue = url, queue
        self.workers = []
        self.app = celery_app(url, queue)
        self.square = self.app.tasks["redis_bench.square"]
        self.conn = redis_connection(url)

    def start(self):
        """The worker; the warm-up session waits for it."""
        self.workers.append(start_worker("celery", self.url, self.queue))

    def session(self, n, base):
        check_alive(self.workers)
        t0 = time.perf_counter()
        pending = [self.square.delay(base + i) for i in range(n)]
        results = [p.get(timeout=WAIT_TIMEOUT) for p in pending]
        t1 = time.perf_counter()
        verify("celery", results, base)
        delete_keys(self.conn, (self.app.backend.get_key_for_task(p.id) for p in pending))
        return t1 - t0, n

    def close(self):
        stop_workers(self.workers)
        self.app.close()
        delete_keys(self.conn, self.conn.scan_iter(f"*{self.queue}*"))


# ---- RQ ----------------------------------------------------------------------------------------

def rq_worker(url, queue, worker_class="Worker"):
    import rq
    conn = redis_connection(url)
    getattr(rq, worker_class)([rq.Queue(queue, connection=conn)], connection=conn).work(logging_level="WARNING")


class RqPeer:
    contender = "rq"

    def __init__(self, url, queue):
        from rq import Queue
        self.url = url
        self.conn = redis_connection(url)
        self.queue = Queue(queue, connection=self.conn)
        self.workers = []
        self.worker_keys = []

    def start(self):
        """The workers, and a wait until both have registered: then both take jobs."""
        from rq import Worker
        self.workers += [start_worker(self.contender, self.url, self.queue.name) for _ in range(WORKERS)]
        deadline = time.monotonic() + WAIT_TIMEOUT
        while Worker.count(queue=self.queue) < WORKERS:
            check_alive(self.workers)
            if time.monotonic() > deadline:
                raise Mismatch(f"{self.contender}: {WORKERS} workers not up after {WAIT_TIMEOUT} s")
            time.sleep(0.01)
        self.worker_keys = [w.key for w in Worker.all(queue=self.queue)]

    def session(self, n, base):
        check_alive(self.workers)
        t0 = time.perf_counter()
        jobs = [self.queue.enqueue("redis_bench.square", base + i) for i in range(n)]
        results = [self.result(job) for job in jobs]
        t1 = time.perf_counter()
        verify(self.contender, results, base)
        delete_keys(self.conn, (key for job in jobs for key in (job.key, f"rq:results:{job.id}")))
        return t1 - t0, n

    def result(self, job):
        deadline = time.monotonic() + WAIT_TIMEOUT
        while (value := job.return_value(refresh=True)) is None:
            if job.is_failed:
                raise Mismatch(f"{self.contender}: job {job.id} failed: {job.latest_result().exc_string}")
            if time.monotonic() > deadline:
                check_alive(self.workers)
                raise Mismatch(f"{self.contender}: no result for job {job.id} after {WAIT_TIMEOUT} s")
            time.sleep(0.001)
        return value

    def close(self):
        stop_workers(self.workers)
        self.conn.srem("rq:queues", self.queue.key)
        delete_keys(self.conn, [*self.conn.scan_iter(f"rq:*{self.queue.name}*"), *self.worker_keys])


class RqSimplePeer(RqPeer):
    contender = "rq_simple"


PEER_CLASSES = {"celery": CeleryPeer, "rq": RqPeer, "rq_simple": RqSimplePeer}
WORKER_MAINS = {"celery": celery_worker, "rq": rq_worker,
                "rq_simple": lambda url, queue: rq_worker(url, queue, "SimpleWorker")}


# ---- the workers' processes --------------------------------------------------------------------

def start_worker(peer, url, queue):
    """This script re-run as a worker of `peer`, in a process group of its own, its stdout
    sent to stderr (the CSV on stdout is the driver's)."""
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", peer, url, queue, str(os.getpid())],
                            stdout=sys.stderr.fileno(), start_new_session=True)


def check_alive(workers):
    for w in workers:
        if w.poll() is not None:
            raise Mismatch(f"a worker (pid {w.pid}) exited with {w.returncode}")


def stop_workers(workers):
    """SIGTERM (a warm shutdown for both Celery and RQ), then SIGKILL to whatever is left of
    each worker's process group (a pool child that outlived its parent)."""
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for w in workers:
        try:
            w.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"redis_bench.py: worker {w.pid} ignored SIGTERM for {STOP_TIMEOUT} s: SIGKILL", file=sys.stderr)
        try:
            os.killpg(w.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is empty: nothing left
            pass
        w.wait()


def worker_main(peer, url, queue, parent):
    """A worker's process: dies with the bench (PR_SET_PDEATHSIG: SIGTERM, its warm shutdown)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):  # the bench died before the call above
        sys.exit(1)
    WORKER_MAINS[peer](url, queue)


def main():
    parser = bench_common.parser(__doc__, iterations=None, rows=ROWS)
    parser.add_argument("--peer", required=True, choices=sorted(PEERS))
    parser.add_argument("--redis", required=True, metavar="URL", help="the Redis server, e.g. redis://127.0.0.1:6379")
    parser.add_argument("--slices", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=None, help="tasks of the untimed warm-up session")
    parser.add_argument("--start-round", type=int, default=0)
    args = parser.parse_args()
    metric = ROWS[args.row]
    iterations, warmup = PEERS[args.peer]
    bench_common.fill_defaults(args, iterations=iterations, warmup=warmup)
    if args.rounds < 1 or args.slices < 1 or args.iterations < 1:
        parser.error("--rounds, --slices and --iterations must be >= 1")
    if args.warmup < 0 or args.start_round < 0:
        parser.error("--warmup and --start-round must be >= 0")
    args.slices = min(args.slices, args.iterations)

    queue = f"mproc-bench-{args.peer}-{os.getpid()}-{time.time_ns()}"
    peer = PEER_CLASSES[args.peer](args.redis, queue)
    try:
        peer.start()
        if args.warmup > 0:
            peer.session(args.warmup, 1)
        print(f"round,contender,{metric}", flush=True)
        for r in range(args.start_round, args.start_round + args.rounds):
            seconds = units = 0
            for s in range(args.slices):
                t, u = peer.session(bench_common.slice_size(args.iterations, args.slices, s), base_of(r, s))
                seconds += t
                units += u
            print(f"{r},{peer.contender},{bench_common.figure(metric, seconds, units):.6g}", flush=True)
    finally:
        peer.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:  # redis_bench.py --worker PEER URL QUEUE PARENT_PID, from start_worker
        worker_main(*sys.argv[2:])
    else:
        bench_common.run(main, "redis_bench.py")
