// The umbrella header: everything mproc offers.
#pragma once

#include "mproc/error.hpp"
#include "mproc/forkserver.hpp"
#include "mproc/os.hpp"
#include "mproc/pipe.hpp"
#include "mproc/pool.hpp"
#include "mproc/process.hpp"
#include "mproc/progress.hpp"
#include "mproc/queue.hpp"
#include "mproc/serialize.hpp"
#include "mproc/shared.hpp"
#include "mproc/sync.hpp"
#include "mproc/thread_pool.hpp"
#include "mproc/wait.hpp"
