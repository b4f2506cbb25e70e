// Atomic replacement of files (checkpoints, configs, reports).
#include "rakv/io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace rakv::io {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what + ": " + std::strerror(errno));
}

// Fault injection for the kill-safety tests (tests/test_kill_safety.cpp), off unless the
// environment sets RAKV_FAULT_PAUSE_IN_WRITE=STAGE:NAME. A write whose target file is named NAME
// then stops at STAGE, prints one line to stderr and waits to be killed:
//   mid-write      half of the contents are in the temporary file
//   before-rename  the temporary file is complete and synced, the target not yet replaced
bool pause_requested(const std::filesystem::path& target, std::string_view stage) {
  const char* spec = std::getenv("RAKV_FAULT_PAUSE_IN_WRITE");
  if (spec == nullptr) return false;
  const std::string_view text(spec);
  const auto colon = text.find(':');
  return colon != std::string_view::npos && text.substr(0, colon) == stage &&
         text.substr(colon + 1) == target.filename().string();
}

[[noreturn]] void pause_until_killed(std::string_view stage, const std::string& temp) {
  std::fprintf(stderr, "rakv: fault injection: paused %.*s of %s (pid %d)\n",
               static_cast<int>(stage.size()), stage.data(), temp.c_str(),
               static_cast<int>(::getpid()));
  std::fflush(stderr);
  for (;;) ::pause();
}

void sync_directory(const std::filesystem::path& directory) {
  const int fd = ::open(directory.empty() ? "." : directory.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: some filesystems refuse opening directories
  ::fsync(fd);
  ::close(fd);
}

// `<target>.tmp.<pid>` files of writers that died before their rename (SIGKILL, power loss):
// removed once a later write of the same target succeeded, so that no partial file stays behind.
// A temporary file whose process still exists (another writer) is left alone.
void remove_stale_temporaries(const std::filesystem::path& target) {
  const std::string prefix = target.filename().string() + ".tmp.";
  const std::filesystem::path directory = target.has_parent_path() ? target.parent_path() : ".";
  try {
    for (const auto& entry : std::filesystem::directory_iterator(directory)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(prefix, 0) != 0) continue;
      pid_t pid = 0;
      const char* end = name.data() + name.size();
      const auto [ptr, ec] = std::from_chars(name.data() + prefix.size(), end, pid);
      if (ec != std::errc() || ptr != end || pid <= 0 || pid == ::getpid()) continue;
      if (::kill(pid, 0) != 0 && errno == ESRCH) std::filesystem::remove(entry.path());
    }
  } catch (const std::filesystem::filesystem_error&) {
    // Best effort: the write itself succeeded.
  }
}

}  // namespace

void write_file_atomically(const std::string& path, std::string_view contents) {
  const std::filesystem::path target(path);
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot create temporary file " + temp);
  // Fault injection's mid-write pause: write the first half, then stop.
  const size_t stop = pause_requested(target, "mid-write") ? contents.size() / 2 : contents.size();
  size_t written = 0;
  while (written < contents.size()) {
    if (written >= stop) pause_until_killed("mid-write", temp);
    const ssize_t n = ::write(fd, contents.data() + written, stop - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      ::close(fd);
      ::unlink(temp.c_str());
      errno = saved;
      fail(path, "write failed");
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int saved = errno;
    ::unlink(temp.c_str());
    errno = saved;
    fail(path, "flushing the temporary file failed");
  }
  if (pause_requested(target, "before-rename")) pause_until_killed("before-rename", temp);
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(temp.c_str());
    errno = saved;
    fail(path, "rename into place failed");
  }
  sync_directory(target.parent_path());
  remove_stale_temporaries(target);
}

std::string read_file(const std::string& path) {
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) {
    // An ifstream opens a directory and then reads nothing: say what it is instead.
    throw std::runtime_error(path + ": cannot open: " + std::strerror(EISDIR));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw std::runtime_error(path + ": read failed");
  return buffer.str();
}

}  // namespace rakv::io
