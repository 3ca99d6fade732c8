// Tutorial section "Pool / 异步添加任务:callback回调函数": a Pool(3) boils water (a task
// that prints 烧开水.... three times, 0.5 s apart, and returns 水烧开了) while the main
// program plays games (打游戏 every 0.5 s). Python's apply_async(test, callback=...) is
// apply_async(test).then(fun_callback): when the task is done, the callback runs in the
// main program (on the pool's result thread) with the task's result and prints it, in the
// middle of the game.
//
// The tutorial plays 20 rounds (10 s); the twin plays 8 (4 s), which keeps the tour short
// and still shows the water boiling (after 1.5 s) in the middle of the game.
//
// The callback prints from the pool's result thread while the main thread prints its own
// lines, so every line is written with a single output operation (say()), and two
// threads' lines never run into each other.
#include <chrono>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>

#include <mproc/pool.hpp>

namespace {

using namespace std::chrono_literals;

constexpr int game_rounds = 8;  // the tutorial: 20

// One whole line, flushed: a single write, so lines from two threads or processes stay whole.
void say(std::string_view line) { std::cout << (std::string(line) + '\n') << std::flush; }

// 烧开水: runs in a worker process of the pool.
std::string test() {
  for (int i = 0; i < 3; ++i) {
    say("烧开水....");
    std::this_thread::sleep_for(500ms);
  }
  return "水烧开了";
}

// 水烧开了: runs in the main program, with test()'s result.
void fun_callback(const std::string& message) { say(message); }

}  // namespace

int main() {
  mproc::pool pool(3);
  pool.apply_async(test).then(fun_callback);
  for (int i = 0; i < game_rounds; ++i) {
    say("打游戏");
    std::this_thread::sleep_for(500ms);
  }
  pool.close();
  pool.join();  // returns once the task is done and its callback has run
  say("进程池资源已回收");
}
