// Boost.Interprocess's message_queue as the benchmarks use it: the "boost" contender of the
// queue rows (bench/queue_bench.cpp) and of the queue-size curve (bench/queue_curve_bench.cpp).
//
// Contract: make_boost_queue() creates a queue under a name unique to this process (pid +
// counter) and removes the name before it returns, on success and on failure alike: no
// /dev/shm entry outlives the call, whatever way the program ends later (bench::program::die
// calls std::exit, which unwinds no stack). A child forked afterwards uses the parent's
// object: it inherits the MAP_SHARED mapping at the same address, as mproc's children inherit
// their queues. Like the rest of bench_support.hpp's helpers, call it from the main thread
// (the counter has no lock).
#pragma once

#include <boost/interprocess/creation_tags.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>

#include <unistd.h>

#include <cstddef>
#include <memory>
#include <string>

namespace bench {

// A message_queue of `slots` messages of up to `message_bytes` each, whose name is already
// gone. Throws boost::interprocess::interprocess_exception when it cannot be made.
inline std::unique_ptr<boost::interprocess::message_queue> make_boost_queue(std::size_t slots,
                                                                            std::size_t message_bytes) {
  namespace bip = boost::interprocess;
  static unsigned counter = 0;
  const std::string name = "mproc_bench_boost." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  struct remover {
    const std::string& name;
    ~remover() { bip::message_queue::remove(name.c_str()); }
  } remove_name{name};
  return std::make_unique<bip::message_queue>(bip::create_only, name.c_str(),
                                              static_cast<bip::message_queue::size_type>(slots),
                                              static_cast<bip::message_queue::size_type>(message_bytes));
}

// Blocks until q holds a message, receives it into `buffer` (`size` bytes; Boost throws if the
// message is larger) and returns the message's size.
inline std::size_t receive(boost::interprocess::message_queue& q, void* buffer, std::size_t size) {
  boost::interprocess::message_queue::size_type got = 0;
  unsigned priority = 0;
  q.receive(buffer, size, got, priority);
  return got;
}

}  // namespace bench
