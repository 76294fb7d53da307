#pragma once
// Writing a file so that a crash never leaves it half-written (DEVELOPERS.md
// "nothing is lost"): the bytes go to a temporary file in the same folder, are
// fsynced, and the temporary is renamed over the target (atomic on POSIX).
// Checkpoints and experiment records both use it.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "lamina/core/error.hpp"

namespace lamina::io {

namespace detail {
/// The system calls of write_file_atomically, replaceable by tests to make a
/// write, fsync or close fail (the file descriptor must be closed on every path).
struct FileCalls {
  ssize_t (*write)(int, const void*, std::size_t) = ::write;
  int (*fsync)(int) = ::fsync;
  int (*close)(int) = ::close;
};
inline FileCalls& file_calls() noexcept {
  static FileCalls calls;
  return calls;
}

/// Writes all bytes to fd; false (errno set) on failure.
inline bool write_all(int fd, const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = file_calls().write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}
/// Writes, fsyncs and closes fd (closed whatever fails); false (errno set) on failure.
inline bool write_sync_close(int fd, const std::string& bytes, const char*& step) {
  step = "cannot write";
  bool ok = write_all(fd, bytes);
  if (ok) {
    step = "cannot flush";
    ok = file_calls().fsync(fd) == 0;
  }
  const int err = errno;
  const bool closed = file_calls().close(fd) == 0;
  if (!ok) errno = err;
  else if (!closed) step = "cannot close";
  return ok && closed;
}
}  // namespace detail

/// Replaces `path` by `bytes` atomically; throws io_error naming `who`, the
/// failed step, the file and the system's reason. On failure the target is
/// unchanged, the temporary is removed and no file descriptor stays open.
inline void write_file_atomically(const std::filesystem::path& path, const std::string& bytes,
                                  const char* who = "lamina::write_file_atomically") {
  auto fail = [&](const char* what, const std::filesystem::path& p) {
    throw io_error(std::string(who) + ": " + what + " " + p.string() + ": " + std::strerror(errno));
  };
  std::random_device rd;
  const std::filesystem::path tmp = path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(rd());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create", tmp);
  const char* step = "";
  if (!detail::write_sync_close(fd, bytes, step)) {
    const int err = errno;
    ::unlink(tmp.c_str());
    errno = err;
    fail(step, tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    errno = err;
    fail("cannot rename onto", path);
  }
}

}  // namespace lamina::io
