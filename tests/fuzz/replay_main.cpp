// Runs a fuzz target over files without libFuzzer, so that its seed corpus and every
// input that once made it fail are regression tests in any build (GCC included).
//   mproc_fuzz_<name>_replay PATH...             every regular file of each directory (in
//                                                name order; names starting with '.' are
//                                                skipped) or the file itself; a directory
//                                                that does not exist counts as empty
//   mproc_fuzz_<name>_replay --write-seeds DIR   writes the target's seeds as DIR/seed-NNN
// Fails (exit 1) when no input at all was found, so that a wrong path cannot pass. A
// failing input aborts the program, after its path was printed.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include "fuzz_target.hpp"

namespace fs = std::filesystem;

namespace {

std::vector<std::uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(1);
  }
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int write_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  const auto seeds = mproc_fuzz::seeds();
  for (std::size_t i = 0; i < seeds.size(); ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "seed-%03zu", i);
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(seeds[i].data()), static_cast<std::streamsize>(seeds[i].size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
      return 1;
    }
  }
  std::printf("wrote %zu seeds to %s\n", seeds.size(), dir.c_str());
  return 0;
}

void run_one(const fs::path& path, std::size_t& count) {
  const std::vector<std::uint8_t> data = read_file(path);
  std::printf("input %s (%zu bytes)\n", path.c_str(), data.size());
  std::fflush(stdout);  // names the input if it crashes the program
  LLVMFuzzerTestOneInput(data.data(), data.size());
  ++count;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--write-seeds") return write_seeds(argv[2]);
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PATH... | --write-seeds DIR\n", argv[0]);
    return 2;
  }
  std::size_t count = 0;
  for (int i = 1; i < argc; ++i) {
    const fs::path path = argv[i];
    std::error_code ec;
    if (fs::is_regular_file(path, ec)) {
      run_one(path, count);
      continue;
    }
    if (!fs::is_directory(path, ec)) {
      std::printf("%s: no such directory, no inputs\n", path.c_str());
      continue;
    }
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(path)) {
      if (entry.is_regular_file() && entry.path().filename().string().front() != '.') files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) run_one(file, count);
  }
  if (count == 0) {
    std::fprintf(stderr, "no input found: nothing was tested\n");
    return 1;
  }
  std::printf("%zu inputs ran without a failure\n", count);
  return 0;
}
