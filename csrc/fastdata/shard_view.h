// A validated, read-only view of one raw shard (docs/format.md).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "fastdata/mapped_file.h"

namespace fastdata {

// CRC-32 with the zlib polynomial; chains like zlib.crc32(data, crc).
std::uint32_t crc32(const std::uint8_t* data, std::uint64_t size, std::uint32_t crc = 0) noexcept;

// Maps a shard and validates everything docs/format.md lists, once, in the constructor;
// every failure throws FormatError naming the file, the field and its byte offset. After
// construction the view is immutable, so it may be read from any number of threads.
class ShardView {
 public:
  explicit ShardView(const std::string& path);
  explicit ShardView(std::shared_ptr<const MappedFile> file);

  const std::string& path() const noexcept { return file_->path(); }
  std::uint64_t num_docs() const noexcept { return num_docs_; }
  std::uint64_t num_tokens() const noexcept { return num_tokens_; }
  std::uint8_t dtype_code() const noexcept { return dtype_code_; }
  std::uint64_t itemsize() const noexcept { return itemsize_; }
  bool has_mask() const noexcept { return mask_ != nullptr; }
  std::uint64_t file_size() const noexcept { return file_->size(); }

  // First token and token count of document i; throw std::out_of_range unless i < num_docs.
  std::uint64_t doc_start(std::uint64_t i) const;
  std::uint64_t doc_len(std::uint64_t i) const;
  // Throws std::out_of_range unless start <= stop <= num_tokens.
  void check_token_range(std::uint64_t start, std::uint64_t stop) const;

  // Pointers into the mapping: num_tokens tokens of dtype_code, num_tokens mask bytes
  // (nullptr when the shard has no loss mask), num_docs + 1 index entries.
  const void* tokens() const noexcept { return tokens_; }
  const std::uint8_t* mask() const noexcept { return mask_; }
  const std::uint64_t* index() const noexcept { return index_; }

  // The mapping; whoever holds it keeps the pointers above valid.
  const std::shared_ptr<const MappedFile>& file() const noexcept { return file_; }

 private:
  void validate();
  void validate_fields(const std::uint8_t* header);
  void validate_sections(const std::uint8_t* header);
  void validate_index() const;
  [[noreturn]] void fail(const std::string& field, std::uint64_t byte_offset,
                         const std::string& message) const;

  std::shared_ptr<const MappedFile> file_;
  std::uint64_t num_docs_ = 0;
  std::uint64_t num_tokens_ = 0;
  std::uint8_t dtype_code_ = 0;
  std::uint64_t itemsize_ = 0;
  std::uint64_t tokens_offset_ = 0;
  std::uint64_t mask_offset_ = 0;
  const std::uint64_t* index_ = nullptr;
  const void* tokens_ = nullptr;
  const std::uint8_t* mask_ = nullptr;
};

}  // namespace fastdata
