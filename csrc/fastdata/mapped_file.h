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
  // Maps only bytes [offset, offset + length) of `path`, clipped to the end of the file
  // (a range past the end maps to size() == 0). file_size() is the whole file's size, so a
  // caller can tell a short file from a short range.
  MappedFile(std::string path, std::uint64_t offset, std::uint64_t length);
  ~MappedFile();

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const noexcept { return path_; }
  const std::uint8_t* data() const noexcept { return data_; }
  std::uint64_t size() const noexcept { return size_; }
  std::uint64_t file_size() const noexcept { return file_size_; }

  // Hints that bytes [offset, offset + length) will be read soon. Advisory only.
  void will_need(std::uint64_t offset, std::uint64_t length) const noexcept;

 private:
  std::uint64_t regular_size(int fd) const;
  void map(int fd, std::uint64_t offset, std::uint64_t length);

  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::uint64_t size_ = 0;
  std::uint64_t file_size_ = 0;
  void* map_base_ = nullptr;  // page-aligned start of the mapping (at or before data_)
  std::uint64_t map_length_ = 0;
};

}  // namespace fastdata
