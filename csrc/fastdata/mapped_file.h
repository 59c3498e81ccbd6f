// RAII read-only memory map of a whole file.
#pragma once

#include <cstdint>
#include <string>

namespace fastdata {

class MappedFile {
 public:
  // Maps `path` read-only. An empty file maps to data() == nullptr, size() == 0.
  // Throws IoError (naming the path) when the file cannot be opened, stat'ed or mapped.
  explicit MappedFile(std::string path);
  ~MappedFile();

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const noexcept { return path_; }
  const std::uint8_t* data() const noexcept { return data_; }
  std::uint64_t size() const noexcept { return size_; }

  // Hints that bytes [offset, offset + length) will be read soon. Advisory only.
  void will_need(std::uint64_t offset, std::uint64_t length) const noexcept;

 private:
  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::uint64_t size_ = 0;
};

}  // namespace fastdata
