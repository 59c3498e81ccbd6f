// A validated, read-only view of one raw shard (docs/format.md).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fastdata/mapped_file.h"
#include "fastdata/token_type.h"

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
  // A view of raw tokens with no fastdata header: the doc_offsets.back() tokens of `type`
  // starting at byte `byte_offset` of `path` (a range of a Megatron .bin, or a cached copy of
  // that range at offset 0), cut into documents at `doc_offsets` (num_docs + 1 token offsets
  // from 0, never decreasing). Only that byte range is mapped. Throws FormatError for
  // malformed offsets, a byte_offset that is not a multiple of the token size, or a file that
  // ends before the range does; IoError when the file cannot be opened or mapped.
  ShardView(const std::string& path, std::uint64_t byte_offset, TokenType type,
            std::vector<std::uint64_t> doc_offsets);

  // index_ may point into owned_index_: a copy would dangle.
  ShardView(const ShardView&) = delete;
  ShardView& operator=(const ShardView&) = delete;

  const std::string& path() const noexcept { return file_->path(); }
  std::uint64_t num_docs() const noexcept { return num_docs_; }
  std::uint64_t num_tokens() const noexcept { return num_tokens_; }
  // The fastdata dtype code (format.h); 0 for a raw token view.
  std::uint8_t dtype_code() const noexcept { return dtype_code_; }
  TokenType token_type() const noexcept { return token_type_; }
  std::uint64_t itemsize() const noexcept { return itemsize_; }
  bool has_mask() const noexcept { return mask_ != nullptr; }
  std::uint64_t file_size() const noexcept { return file_->size(); }

  // First token and token count of document i; throw std::out_of_range unless i < num_docs.
  std::uint64_t doc_start(std::uint64_t i) const;
  std::uint64_t doc_len(std::uint64_t i) const;
  // Throws std::out_of_range unless start <= stop <= num_tokens.
  void check_token_range(std::uint64_t start, std::uint64_t stop) const;

  // Pointers into the mapping: num_tokens tokens of token_type, num_tokens mask bytes
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
  void validate_blocks(const std::uint8_t* header, std::uint64_t index_end);
  void validate_index() const;
  void validate_raw(std::uint64_t byte_offset);
  [[noreturn]] void fail(const std::string& field, std::uint64_t byte_offset,
                         const std::string& message) const;

  std::shared_ptr<const MappedFile> file_;
  std::uint64_t num_docs_ = 0;
  std::uint64_t num_tokens_ = 0;
  std::uint8_t dtype_code_ = 0;
  TokenType token_type_ = TokenType::kUint16;
  std::uint64_t itemsize_ = 0;
  std::uint64_t tokens_offset_ = 0;
  std::uint64_t mask_offset_ = 0;
  std::uint64_t block_size_ = 0;  // v1.1 only
  std::uint64_t num_blocks_ = 0;
  std::uint64_t block_table_offset_ = 0;
  const std::uint64_t* index_ = nullptr;
  const void* tokens_ = nullptr;
  const std::uint8_t* mask_ = nullptr;
  std::vector<std::uint64_t> owned_index_;  // a raw view's document index
};

}  // namespace fastdata
