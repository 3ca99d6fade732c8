// /proc readings for the kill storm: a process's children, the syscall and futex a blocked
// process waits in, the mapping an address falls in, the size of the queues' memfds.
#include "kill_storm/proc.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "test_support.hpp"

namespace kill_storm {

// --- /proc helpers ----------------------------------------------------------------------

std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t p; in >> p;) out.push_back(p);
  return out;
}

// The syscall `pid` is blocked in, from /proc/PID/syscall: its number, 6 arguments, the
// stack pointer and the program counter ("running" alone when it is not blocked).
std::vector<std::string> blocked_syscall(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/syscall");
  std::vector<std::string> fields;
  for (std::string f; in >> f;) fields.push_back(f);
  return fields;
}

// The line of /proc/PID/maps whose range holds `address`, and the address's offset in
// what is mapped there; nullopt when none does.
std::optional<mapped_at> mapping_of(pid_t pid, std::uintptr_t address) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  for (std::string line; std::getline(maps, line);) {
    std::uintptr_t begin = 0, end = 0, offset = 0;
    char name[512] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %*s %lx %*s %*s %511[^\n]", &begin, &end, &offset, name) < 3) continue;
    if (address >= begin && address < end) return mapped_at{name, address - begin + offset};
  }
  return std::nullopt;
}

// Where a blocked process waits: its syscall and, for a futex, the mapping and offset of
// the word (e.g. "/memfd:mproc-queue (deleted)+0xc0", a channel's consumers' lock).
std::string blocked_on(pid_t pid) {
  const std::vector<std::string> fields = blocked_syscall(pid);
  std::string out = "syscall " + (fields.empty() ? std::string() : fields[0]);
  if (fields.size() < 2 || fields[0] != "202") return out;  // x86-64 futex
  const auto at = mapping_of(pid, std::strtoull(fields[1].c_str(), nullptr, 16));
  if (!at) return out + " (futex) at " + fields[1];
  char where[64];
  std::snprintf(where, sizeof where, "+0x%lx", static_cast<unsigned long>(at->offset));
  return out + " (futex) on " + at->name + where;
}

// Whether `pid` sleeps in a futex or yields from code of libasan (a role child is single-
// threaded: such a wait can only be on a lock another thread of its parent held at the fork).
bool waits_inside_sanitizer(pid_t pid) {
  const std::vector<std::string> fields = blocked_syscall(pid);
  if (fields.size() < 9 || (fields[0] != "202" && fields[0] != "24")) return false;  // futex, sched_yield
  const auto at = mapping_of(pid, std::strtoull(fields.back().c_str(), nullptr, 16));
  return at && at->name.find("libasan") != std::string::npos;
}

std::string describe_process(pid_t pid) {
  std::string comm, wchan;
  std::ifstream("/proc/" + std::to_string(pid) + "/comm") >> comm;
  std::ifstream("/proc/" + std::to_string(pid) + "/wchan") >> wchan;
  const auto st = mproc_test::read_proc_stat(pid);
  return std::to_string(pid) + " " + comm + " state " + (st ? std::string(1, st->state) : "?") + " wchan " + wchan +
         ", " + blocked_on(pid);
}

// Total size of this process's queue memfds (the pool's two channels included).
std::string queue_memory_report() {
  std::string out;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return out;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    char target[256] = {};
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0 || std::strstr(target, "mproc-queue") == nullptr) continue;
    struct stat s {};
    if (::stat(link.c_str(), &s) == 0) {
      out += " " + std::to_string(s.st_size >> 10) + "K(" + std::to_string(s.st_blocks * 512 >> 10) + "K used)";
    }
  }
  ::closedir(dir);
  return out;
}

std::size_t pid_limit() {
  std::size_t n = 32768;
  std::ifstream("/proc/sys/kernel/pid_max") >> n;
  return std::min<std::size_t>(n, std::size_t{1} << 22) + 1;
}

}  // namespace kill_storm
