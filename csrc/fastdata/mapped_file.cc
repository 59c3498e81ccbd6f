#include "fastdata/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <limits>
#include <utility>

#include "fastdata/errors.h"

namespace fastdata {
namespace {

// Closes a file descriptor on scope exit; the mapping outlives the descriptor.
class FdGuard {
 public:
  explicit FdGuard(int fd) noexcept : fd_(fd) {}
  ~FdGuard() { ::close(fd_); }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

int open_read_only(const std::string& path) {
  for (;;) {
    // O_NOFOLLOW: a cache entry replaced by a symlink is refused, never read through (the
    // Python layer resolves a user's own symlinked dataset files before they get here).
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) return fd;
    if (errno != EINTR) throw IoError(path, "open", errno);
  }
}

}  // namespace

// The size of the open file `fd`, refusing directories and non-regular files.
std::uint64_t MappedFile::regular_size(int fd) const {
  struct stat st{};
  if (::fstat(fd, &st) != 0) throw IoError(path_, "stat", errno);
  // mmap of a directory or a pipe fails with an obscure errno; say what is wrong instead.
  if (S_ISDIR(st.st_mode)) throw IoError(path_, "map", EISDIR);
  if (!S_ISREG(st.st_mode)) throw IoError(path_, "map a non-regular file", EINVAL);
  if (st.st_size < 0) throw IoError(path_, "stat", EINVAL);
  return static_cast<std::uint64_t>(st.st_size);
}

void MappedFile::map(int fd, std::uint64_t offset, std::uint64_t length) {
  if (length == 0) return;  // mmap refuses length 0; an empty range maps to nothing
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t start = offset / page * page;  // mmap wants a page-aligned file offset
  const std::uint64_t span = offset - start + length;
  if (span > std::numeric_limits<std::size_t>::max() ||
      start > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) {
    throw IoError(path_, "map", EFBIG);
  }
  void* addr = ::mmap(nullptr, static_cast<std::size_t>(span), PROT_READ, MAP_SHARED, fd,
                      static_cast<off_t>(start));
  if (addr == MAP_FAILED) throw IoError(path_, "map", errno);
  map_base_ = addr;
  map_length_ = span;
  data_ = static_cast<const std::uint8_t*>(addr) + (offset - start);
  size_ = length;
}

MappedFile::MappedFile(std::string path) : path_(std::move(path)) {
  FdGuard fd(open_read_only(path_));
  file_size_ = regular_size(fd.get());
  map(fd.get(), 0, file_size_);
}

MappedFile::MappedFile(std::string path, std::uint64_t offset, std::uint64_t length)
    : path_(std::move(path)) {
  FdGuard fd(open_read_only(path_));
  file_size_ = regular_size(fd.get());
  if (offset >= file_size_) return;
  map(fd.get(), offset, length > file_size_ - offset ? file_size_ - offset : length);
}

MappedFile::~MappedFile() {
  if (map_base_ != nullptr) ::munmap(map_base_, static_cast<std::size_t>(map_length_));
}

void MappedFile::will_need(std::uint64_t offset, std::uint64_t length) const noexcept {
  if (data_ == nullptr || offset >= size_) return;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t end = length > size_ - offset ? size_ : offset + length;
  // madvise wants a page-aligned start; the mapping itself starts on a page, at or before data_.
  const auto first = reinterpret_cast<std::uintptr_t>(data_ + offset) / page * page;
  const auto last = reinterpret_cast<std::uintptr_t>(data_ + end);
  // Failure only loses read-ahead, so the result is deliberately ignored.
  (void)::madvise(reinterpret_cast<void*>(first), static_cast<std::size_t>(last - first), MADV_WILLNEED);
}

}  // namespace fastdata
