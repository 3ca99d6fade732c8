// /proc readings the kill storm uses to find pool workers and to say where a hung process
// waits (definitions, each with what it does, in proc.cpp).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kill_storm {

std::vector<pid_t> children_of(pid_t pid);
std::vector<std::string> blocked_syscall(pid_t pid);
struct mapped_at {
  std::string name;
  std::uintptr_t offset;
};
std::optional<mapped_at> mapping_of(pid_t pid, std::uintptr_t address);
std::string blocked_on(pid_t pid);
bool waits_inside_sanitizer(pid_t pid);
std::string describe_process(pid_t pid);
std::string queue_memory_report();
std::size_t pid_limit();

}  // namespace kill_storm
