// mmnet/io/atomic_file.hpp: the one way mmnet writes a file (weights, checkpoints, NIfTI images, logs, plots):
// the bytes go to a new temporary file "<path>.tmp-<pid>-<n>-<t>" in the destination's directory, which is
// fsynced and renamed over the destination; then the directory is fsynced (best effort). A reader never sees
// half a file, a crash never leaves an empty one, and on any failure the destination is untouched and the
// temporary file is removed. (What Python's `atomicwrites` / nnU-Net's save-then-rename do.)
//
//   io::write_file_atomically(path, [&](io::FileSink& out) { out.write(bytes.data(), bytes.size()); },
//                             [&](const std::string& problem) { throw io_error("mmnet::x: " + path + ": " + problem); });
//
// fail(problem) raises the caller's own error type and wording ("cannot write <tmp>: No space left on device
// (disk full?)"); it must throw.
#pragma once
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.hpp"

namespace mmnet::io {

// Raises the caller's error for the destination with a problem description; must throw.
using FileFail = std::function<void(const std::string& problem)>;

// The open temporary file handed to the fill function.
class FileSink {
 public:
  FileSink(int fd, std::string tmp, const FileFail& fail) : fd_(fd), tmp_(std::move(tmp)), fail_(fail) {}
  int fd() const { return fd_; }
  const std::string& temporary_path() const { return tmp_; }

  // Writes all n bytes (retrying short writes and EINTR).
  void write(const void* data, std::size_t n) {
    const char* p = static_cast<const char*>(data);
    std::size_t done = 0;
    while (done < n) {
      const ssize_t w = ::write(fd_, p + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail_errno("cannot write", w < 0 ? errno : ENOSPC);
      done += static_cast<std::size_t>(w);
    }
  }
  // Reports a failed operation on the temporary file with errno's text (and a disk-full hint).
  [[noreturn]] void fail_errno(const std::string& what, int err) const {
    const bool full = err == ENOSPC || err == EFBIG || err == EDQUOT;
    fail_(what + " " + tmp_ + ": " + std::strerror(err) + (full ? " (disk full?)" : ""));
    throw io_error("mmnet::io::write_file_atomically: the fail callback returned");  // unreachable by contract
  }

 private:
  int fd_;
  std::string tmp_;
  const FileFail& fail_;
};

inline std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// fill(sink) writes the content; see the top of the file.
inline void write_file_atomically(const std::string& path, const std::function<void(FileSink&)>& fill,
                                  const FileFail& fail) {
  auto raise = [&](const std::string& problem) {
    fail(problem);
    throw io_error("mmnet::io::write_file_atomically: the fail callback returned");  // unreachable by contract
  };
  if (path.empty()) raise("empty file name");
  // Unique per process, call and time: concurrent writers of one destination never share a temporary file.
  static std::atomic<unsigned> counter{0};
  const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count() % 1000000;
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
                          std::to_string(stamp);
  // O_EXCL: never clobber a file that happens to have the temporary name.
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0)
    raise("cannot create the temporary file " + tmp + ": " + std::strerror(errno) + " (directory missing or not writable?)");
  bool open = true;
  try {
    FileSink sink(fd, tmp, fail);
    fill(sink);
    // Without fsync a crash soon after the rename could leave an empty destination.
    if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) sink.fail_errno("cannot sync", errno);
    open = false;
    if (::close(fd) != 0) raise("cannot close " + tmp + ": " + std::strerror(errno));
  } catch (...) {
    if (open) ::close(fd);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    raise("cannot rename " + tmp + " to the destination: " + std::strerror(err));
  }
  // Make the rename itself durable (best effort: not every file system syncs directories).
  const int dfd = ::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// Text (or any bytes) in one piece.
inline void write_file_atomically(const std::string& path, const std::string& content, const FileFail& fail) {
  write_file_atomically(path, [&](FileSink& out) { out.write(content.data(), content.size()); }, fail);
}

}  // namespace mmnet::io
