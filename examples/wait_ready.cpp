// Beyond the tutorial: the C++ twin of multiprocessing.connection.wait, which watches
// several pipes and processes at once and hands back whichever are ready:
//
//     from multiprocessing import Process, Pipe, Queue
//     from multiprocessing.connection import wait
//
//     def worker(i, conn, log):
//         time.sleep((3 - i) * 0.05)          # the last worker answers first
//         conn.send(i * i)
//         log.put(f"worker {i} sent its answer")
//
//     readers, procs, log = [], [], Queue()
//     for i in range(3):
//         r, w = Pipe(duplex=False)
//         p = Process(target=worker, args=(i, w, log)); p.start(); w.close()
//         readers.append(r); procs.append(p)
//     total = 0
//     while readers:
//         for r in wait(readers):             # Python waits on pipes only; mproc on the queue too
//             try: total += r.recv()
//             except EOFError: readers.remove(r)
//     print("sum of squares =", total)
//
// Here one wait covers the pipes, the log queue and the worker processes, so the parent
// prints each log line as it comes and sees each worker end.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <mproc/pipe.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>
#include <mproc/wait.hpp>

int main() {
  constexpr int workers = 3;
  mproc::queue<std::string> journal;
  std::vector<mproc::connection> answers;
  std::vector<mproc::process> procs;
  for (int i = 0; i < workers; ++i) {
    auto [reader, writer] = mproc::pipe(false);
    procs.emplace_back(
        [i](mproc::connection conn, mproc::queue<std::string> out) {
          std::this_thread::sleep_for(std::chrono::milliseconds((workers - i) * 50));
          conn.send(i * i);
          out.put("worker " + std::to_string(i) + " sent its answer");
        },
        std::move(writer), journal);
    procs.back().start();
    answers.push_back(std::move(reader));
  }

  // What is watched, and what each entry is: an answer pipe, the log (journal), or a worker.
  enum class kind { answer, log_line, worker };
  struct watched {
    kind what;
    std::size_t i;
  };
  std::vector<mproc::waitable> objects;
  std::vector<watched> whats;
  for (std::size_t i = 0; i < workers; ++i) {
    objects.emplace_back(answers[i]);
    whats.push_back({kind::answer, i});
    objects.emplace_back(procs[i]);
    whats.push_back({kind::worker, i});
  }
  objects.emplace_back(journal);
  whats.push_back({kind::log_line, 0});

  int total = 0;
  int running = workers;
  while (!objects.empty()) {
    std::vector<std::size_t> done;  // entries to stop watching
    for (const std::size_t k : mproc::wait_ready(objects)) {
      const watched w = whats[k];
      switch (w.what) {
        case kind::answer:
          try {
            total += answers[w.i].recv<int>();
          } catch (const mproc::closed_error&) {
            done.push_back(k);  // drained, and its worker closed it: as Python's EOFError
          }
          break;
        case kind::log_line:
          std::cout << "log: " << journal.get() << "\n";
          break;
        case kind::worker:
          std::cout << "worker " << w.i << " ended, exit code " << procs[w.i].exitcode().value_or(-1) << "\n";
          done.push_back(k);
          --running;
          break;
      }
    }
    if (running == 0 && journal.empty()) {  // nothing more will come to the log
      for (std::size_t k = 0; k < whats.size(); ++k) {
        if (whats[k].what == kind::log_line) done.push_back(k);
      }
    }
    std::sort(done.begin(), done.end());
    for (auto k = done.rbegin(); k != done.rend(); ++k) {
      objects.erase(objects.begin() + static_cast<std::ptrdiff_t>(*k));
      whats.erase(whats.begin() + static_cast<std::ptrdiff_t>(*k));
    }
  }
  std::cout << "sum of squares = " << total << "\n";
  return total == 5 ? 0 : 1;
}
