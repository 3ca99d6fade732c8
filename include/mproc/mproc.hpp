// The umbrella header: everything mproc offers.
#pragma once

#include "mproc/error.hpp"
#include "mproc/os.hpp"
#include "mproc/process.hpp"
