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
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) return fd;
    if (errno != EINTR) throw IoError(path, "open", errno);
  }
}

}  // namespace

MappedFile::MappedFile(std::string path) : path_(std::move(path)) {
  FdGuard fd(open_read_only(path_));
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) throw IoError(path_, "stat", errno);
  // mmap of a directory or a pipe fails with an obscure errno; say what is wrong instead.
  if (S_ISDIR(st.st_mode)) throw IoError(path_, "map", EISDIR);
  if (!S_ISREG(st.st_mode)) throw IoError(path_, "map a non-regular file", EINVAL);
  if (st.st_size < 0) throw IoError(path_, "stat", EINVAL);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size == 0) return;  // mmap refuses length 0; an empty file maps to nothing
  if (size > std::numeric_limits<std::size_t>::max()) throw IoError(path_, "map", EFBIG);
  void* addr = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ, MAP_SHARED, fd.get(), 0);
  if (addr == MAP_FAILED) throw IoError(path_, "map", errno);
  data_ = static_cast<const std::uint8_t*>(addr);
  size_ = size;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) {
    ::munmap(const_cast<std::uint8_t*>(data_), static_cast<std::size_t>(size_));
  }
}

void MappedFile::will_need(std::uint64_t offset, std::uint64_t length) const noexcept {
  if (data_ == nullptr || offset >= size_) return;
  const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t start = offset / page * page;  // madvise wants a page-aligned start
  const std::uint64_t end = length > size_ - offset ? size_ : offset + length;
  // Failure only loses read-ahead, so the result is deliberately ignored.
  (void)::madvise(const_cast<std::uint8_t*>(data_) + start, static_cast<std::size_t>(end - start),
                  MADV_WILLNEED);
}

}  // namespace fastdata
