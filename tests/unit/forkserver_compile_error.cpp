// Must not compile: a forkserver process whose target or argument cannot travel to the
// server's child, or one written without <mproc/forkserver.hpp>. Built only by the ctest
// tests unit.Forkserver.*FailsToCompile*, which expect mproc's message.
#include <thread>

#ifdef MPROC_FORKSERVER_WITHOUT_HEADER
#include <mproc/process.hpp>
#else
#include <mproc/forkserver.hpp>
#endif

void takes_a_thread_id(std::thread::id) {}

int main() {
#if defined(MPROC_FORKSERVER_WITHOUT_HEADER)
  mproc::process p(mproc::forkserver, [] {});
#elif defined(MPROC_FORKSERVER_UNSERIALIZABLE_ARGUMENT)
  mproc::process p(mproc::forkserver, takes_a_thread_id, std::this_thread::get_id());
#else
  int captured = 3;
  mproc::process p(mproc::forkserver, [captured] { static_cast<void>(captured); });
#endif
  p.start();
  p.join();
}
