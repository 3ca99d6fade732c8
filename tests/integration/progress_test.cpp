// mproc::progress as a user meets it: a child process iterates with its stderr on a
// pseudo-terminal (openpty) or on a pipe, and the parent reads what it drew: a bar
// redrawn in place on the terminal, plain lines in the pipe, and the right numbers in
// both, over a vector and over a pool's imap.
#include "mproc/progress.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "mproc/pool.hpp"
#include "mproc/process.hpp"

namespace {

std::int64_t square(std::int64_t x) { return x * x; }

// The child: stderr goes to `fd`, then it walks 1000 items through progress, then the
// same through a pool's imap.
void draw_into(int fd) {
  if (::dup2(fd, STDERR_FILENO) < 0) ::_exit(3);
  std::int64_t sum = 0;
  for (int x : mproc::progress(std::vector<int>(1000, 1), "items")) sum += x;
  mproc::pool p(2);
  std::vector<std::int64_t> input(1000, 3);
  for (std::int64_t r : mproc::progress(p.imap(square, input, 10), input.size(), "squares")) sum += r;
  if (sum != 1000 + 9000) ::_exit(4);
}

// Everything readable from `fd` until the writer's end closes (or 10 s of silence).
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10'000) <= 0) break;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;  // EOF, or EIO once a pty's slave side is closed
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

std::string last_drawing(const std::string& text, const std::string& label) {
  const std::size_t at = text.rfind(label + ": ");
  return at == std::string::npos ? "" : text.substr(at, text.find_first_of("\r\n", at) - at);
}

TEST(ProgressDrawing, OnATerminalABarIsRedrawnInPlace) {
  int master = -1;
  int slave = -1;
  ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  mproc::process child(draw_into, slave);
  child.start();
  ::close(slave);
  const std::string text = read_all(master);
  child.join();
  ::close(master);
  EXPECT_EQ(child.exitcode(), 0);
  EXPECT_NE(text.find('\r'), std::string::npos) << text;
  const std::string items = last_drawing(text, "items");
  EXPECT_EQ(items.rfind("items: 100%|", 0), 0u) << items;
  EXPECT_NE(items.find("| 1000/1000 ["), std::string::npos) << items;
  const std::string squares = last_drawing(text, "squares");
  EXPECT_NE(squares.find(" 1000/1000 ["), std::string::npos) << squares;
  EXPECT_NE(squares.find(" it/s]"), std::string::npos) << squares;
}

TEST(ProgressDrawing, InAPipeItWritesPlainLines) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  mproc::process child(draw_into, fds[1]);
  child.start();
  ::close(fds[1]);
  const std::string text = read_all(fds[0]);
  child.join();
  ::close(fds[0]);
  EXPECT_EQ(child.exitcode(), 0);
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
  EXPECT_EQ(text.find('|'), std::string::npos) << text;
  // A fast loop draws only its last line each.
  const std::string items = last_drawing(text, "items");
  EXPECT_EQ(items.rfind("items: 100% 1000/1000 [00:00<00:00, ", 0), 0u) << text;
  const std::string squares = last_drawing(text, "squares");
  EXPECT_EQ(squares.rfind("squares: 100% 1000/1000 [", 0), 0u) << text;
}

}  // namespace
