// A pipeline of three processes kept in step by a Barrier: at each step every stage works
// on its own item at once (stage 1 reads item t, stage 2 squares item t-1, stage 3 adds 1
// to item t-2), then all three wait at the barrier, so that no stage reads a slot before
// the stage before it has written it. The barrier's action, run once per step by the last
// stage to arrive, prints the pipeline as it stands.
//
// Then the same pipeline with a stage that crashes halfway: the other stages do not hang.
// Their wait(timeout) breaks the barrier, and every stage still waiting gets
// broken_barrier (Python's threading.BrokenBarrierError).
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <mproc/process.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

namespace {

using namespace std::chrono_literals;

constexpr int stages = 3;
constexpr int items = 5;
constexpr int steps = items + stages - 1;
constexpr int empty = -1;
constexpr std::array<const char*, stages> stage_names{"读入", "平方", "加一"};

// Two rows of slots, one per stage: at step t stage k reads what stage k-1 wrote at step
// t-1 in row (t-1)%2 and writes its own slot in row t%2.
struct pipeline {
  mproc::shared_array<int> slots{2 * stages, empty};
  mproc::shared_array<int> results{items, empty};
  mproc::shared_value<int> step{0};
};

int work(int stage, int input) {
  switch (stage) {
    case 0:
      return input;  // the item itself
    case 1:
      return input * input;
    default:
      return input + 1;
  }
}

void run_stage(pipeline p, mproc::barrier b, int stage, int crash_at_step, std::chrono::milliseconds timeout,
               mproc::shared_array<int> outcome) {
  for (int t = 0; t < steps; ++t) {
    if (t == crash_at_step) ::_exit(3);  // a crash: no cleanup, no goodbye
    const int item = t - stage;          // the item this stage holds at step t
    int out = empty;
    if (item >= 0 && item < items) {
      const int in = stage == 0 ? item + 1 : p.slots[((t + 1) % 2) * stages + stage - 1];
      out = work(stage, in);
      if (stage == stages - 1) p.results[item] = out;
    }
    p.slots[(t % 2) * stages + stage] = out;
    try {
      b.wait(timeout);
    } catch (const mproc::broken_barrier&) {
      outcome[stage] = 1;
      return;
    }
  }
}

// Prints the slots written at the step that just ended (runs under the barrier's lock).
void print_step(pipeline p) {
  const int t = p.step.value()++;
  std::string line = "第" + std::to_string(t + 1) + "步:";
  for (int k = 0; k < stages; ++k) {
    const int v = p.slots[(t % 2) * stages + k];
    line += std::string("  ") + stage_names[static_cast<std::size_t>(k)] + "=" + (v == empty ? "-" : std::to_string(v));
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);  // each step may be printed by another process: keep the order
}

void run_pipeline(int crash_stage, int crash_at_step) {
  pipeline p;
  mproc::barrier b(stages, [p] { print_step(p); });
  mproc::shared_array<int> outcome(stages, 0);  // 1: the stage got broken_barrier
  const auto timeout = crash_stage < 0 ? std::chrono::milliseconds(30s) : std::chrono::milliseconds(500ms);
  std::vector<mproc::process> ps;
  for (int k = 0; k < stages; ++k) {
    ps.emplace_back(run_stage, p, b, k, k == crash_stage ? crash_at_step : -1, timeout, outcome);
  }
  for (auto& proc : ps) proc.start();
  for (auto& proc : ps) proc.join();
  if (crash_stage < 0) {
    std::printf("结果:");
    for (int r : p.results) std::printf(" %d", r);
    std::printf("\n");
    return;
  }
  for (int k = 0; k < stages; ++k) {
    const int code = *ps[static_cast<std::size_t>(k)].exitcode();
    std::printf("阶段%d(%s): %s\n", k + 1, stage_names[static_cast<std::size_t>(k)],
                k == crash_stage  ? ("崩溃了, 退出码" + std::to_string(code)).c_str()
                : outcome[k] == 1 ? "收到 broken_barrier, 没有卡住"
                                  : "意外地正常结束");
  }
  std::printf("barrier.broken() = %s\n", b.broken() ? "true" : "false");
}

}  // namespace

int main() {
  std::printf("流水线: %d 个阶段进程 (读入 → 平方 → 加一), 每一步之后在 barrier 处会合\n", stages);
  std::fflush(stdout);
  run_pipeline(-1, -1);
  std::printf("\n再来一次, 阶段2 在第3步崩溃:\n");
  std::fflush(stdout);
  run_pipeline(1, 2);
  std::printf("流水线示例结束\n");
}
