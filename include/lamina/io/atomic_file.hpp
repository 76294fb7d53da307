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

/// Replaces `path` by `bytes` atomically; throws io_error naming `who`, the
/// failed step, the file and the system's reason.
inline void write_file_atomically(const std::filesystem::path& path, const std::string& bytes,
                                  const char* who = "lamina::write_file_atomically") {
  auto fail = [&](const char* what, const std::filesystem::path& p) {
    throw io_error(std::string(who) + ": " + what + " " + p.string() + ": " + std::strerror(errno));
  };
  std::random_device rd;
  const std::filesystem::path tmp = path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(rd());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create", tmp);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      errno = err;
      fail("cannot write", tmp);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    errno = err;
    fail("cannot flush", tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    errno = err;
    fail("cannot rename onto", path);
  }
}

}  // namespace lamina::io
