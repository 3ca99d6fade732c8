#!/usr/bin/env python3
"""Fails when an include points up the layers (docs/ARCHITECTURE.md, "Layers").

src/<layer>/ and include/mproc/detail/<layer>/ may include their own layer and the layers
below it; ipc and sync stand side by side and include neither each other. The public
headers belong to the layer that implements them.
"""
import pathlib
import re
import sys

# serialize sits beside wait: both use os, neither the other.
# progress draws on a descriptor and knows nothing else of mproc.
# mpi and redis (backends, each its own target) and the umbrella header sit on pool, apart.
RANK = {"base": 0, "os": 1, "serialize": 2, "wait": 2, "progress": 2, "shm": 3, "ipc": 4, "sync": 4,
        "process": 5, "pool": 6, "mpi": 7, "redis": 7, "umbrella": 7}
PUBLIC = {"types.hpp": "base", "error.hpp": "base", "serialize.hpp": "serialize", "wait.hpp": "wait",
          "pipe.hpp": "ipc", "queue.hpp": "ipc", "sync.hpp": "sync", "shared.hpp": "sync", "shared_dict.hpp": "sync",
          "shared_memory.hpp": "shm",
          "os.hpp": "process", "process.hpp": "process", "pool.hpp": "pool", "forkserver.hpp": "pool", "thread_pool.hpp": "pool", "progress.hpp": "progress",
          "mpi.hpp": "mpi", "redis.hpp": "redis", "mproc.hpp": "umbrella"}
INCLUDE = re.compile(r'^#include [<"]([^>"]+)[>"]', re.M)


def layer_of(path: str):
    parts = pathlib.PurePosixPath(path).parts
    if parts[:1] == ("src",) and len(parts) > 2:
        return parts[1]
    if parts[:3] == ("include", "mproc", "detail") and len(parts) > 4:
        return parts[3]
    if parts[:2] == ("include", "mproc") and len(parts) == 3:
        return PUBLIC.get(parts[2])
    return None


def layer_of_include(name: str):
    if name.startswith("mproc/"):
        return layer_of("include/" + name)
    first = name.split("/", 1)[0]
    return first if first in RANK and "/" in name else None


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    wrong = []
    files = [*root.glob("src/**/*.[ch]pp"), *root.glob("include/mproc/**/*.hpp")]
    for file in sorted(files):
        rel = file.relative_to(root).as_posix()
        mine = layer_of(rel)
        if mine is None:
            wrong.append(f"{rel}: not in a layer's folder")
            continue
        for name in INCLUDE.findall(file.read_text()):
            theirs = layer_of_include(name)
            if theirs is None:
                continue
            upward = RANK[theirs] > RANK[mine]
            sideways = RANK[theirs] == RANK[mine] and theirs != mine
            if upward or sideways:
                wrong.append(f"{rel} ({mine}) includes {name} ({theirs})")
    for line in wrong:
        print(line, file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
