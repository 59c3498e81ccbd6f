#include "fastdata/shard_view.h"

#include <array>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "fastdata/errors.h"
#include "fastdata/format.h"

namespace fastdata {
namespace {

namespace fmt = format;
namespace field = format::field;

constexpr std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1u) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<std::uint32_t, 256> kCrcTable = make_crc_table();

// Concatenates values into a message (pass bytes as unsigned, or they print as chars).
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

std::string hex(unsigned value) { return cat("0x", std::hex, value); }

// Python-style bytes literal, so a bad magic shows what the file starts with.
std::string quote_bytes(const std::uint8_t* bytes, std::size_t n) {
  std::ostringstream out;
  out << "b'" << std::hex;
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned b = bytes[i];
    if (b >= 0x20 && b < 0x7f && b != '\\' && b != '\'') {
      out << static_cast<char>(b);
    } else {
      out << (b < 16 ? "\\x0" : "\\x") << b;
    }
  }
  return out.str() + "'";
}

}  // namespace

std::uint32_t crc32(const std::uint8_t* data, std::uint64_t size, std::uint32_t crc) noexcept {
  crc = ~crc;
  for (std::uint64_t i = 0; i < size; ++i) crc = kCrcTable[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

ShardView::ShardView(const std::string& path)
    : ShardView(std::make_shared<const MappedFile>(path)) {}

ShardView::ShardView(std::shared_ptr<const MappedFile> file) : file_(std::move(file)) {
  validate();
}

ShardView::ShardView(const std::string& path, std::uint64_t byte_offset, TokenType type,
                     std::vector<std::uint64_t> doc_offsets)
    : token_type_(type), itemsize_(token_size(type)), owned_index_(std::move(doc_offsets)) {
  if (owned_index_.empty()) {
    throw FormatError(path, "doc_offsets", byte_offset, "a raw view needs at least one offset (0)");
  }
  num_docs_ = owned_index_.size() - 1;
  num_tokens_ = owned_index_.back();
  std::uint64_t length = 0;
  if (__builtin_mul_overflow(num_tokens_, itemsize_, &length)) {
    throw FormatError(path, "tokens", byte_offset, cat(num_tokens_, " tokens do not fit a file"));
  }
  file_ = std::make_shared<const MappedFile>(path, byte_offset, length);
  validate_raw(byte_offset);
}

void ShardView::fail(const std::string& field_name, std::uint64_t byte_offset,
                     const std::string& message) const {
  throw FormatError(path(), field_name, byte_offset, message);
}

// The checks of docs/format.md, in its order: a newer version is reported as such even if
// the rest of the header means something else in that version.
void ShardView::validate() {
  const std::uint8_t* data = file_->data();
  const std::uint64_t size = file_->size();
  const auto* magic = reinterpret_cast<const std::uint8_t*>(fmt::kMagic);
  if (size >= sizeof(fmt::kMagic) && std::memcmp(data, magic, sizeof(fmt::kMagic)) != 0) {
    fail("magic", field::kMagic,
         cat("bad magic ", quote_bytes(data, sizeof(fmt::kMagic)), ", expected ",
             quote_bytes(magic, sizeof(fmt::kMagic)), " (not a fastdata shard)"));
  }
  if (size < fmt::kHeaderSize) {
    fail("header", 0,
         cat("file is ", size, " bytes, shorter than the ", fmt::kHeaderSize,
             "-byte header (truncated?)"));
  }
  validate_fields(data);
  token_type_ = token_type_of_code(dtype_code_);
  validate_sections(data);

  std::array<std::uint8_t, fmt::kHeaderSize> header{};
  std::memcpy(header.data(), data, header.size());
  std::memset(header.data() + field::kHeaderCrc32, 0, sizeof(std::uint32_t));
  const std::uint64_t index_bytes = (num_docs_ + 1) * fmt::kIndexEntrySize;  // checked: no wrap
  file_->will_need(fmt::kIndexOffset, index_bytes);
  std::uint32_t computed =
      crc32(data + fmt::kIndexOffset, index_bytes, crc32(header.data(), header.size()));
  if (num_blocks_ != 0) {  // v1.1: the CRC covers the block table too (checked to lie inside)
    computed = crc32(data + block_table_offset_, num_blocks_ * fmt::kBlockEntrySize, computed);
  }
  const auto stored = fmt::load_le<std::uint32_t>(data + field::kHeaderCrc32);
  if (computed != stored) {
    fail("header_crc32", field::kHeaderCrc32,
         cat("CRC-32 mismatch: stored ", hex(stored), ", computed ", hex(computed),
             num_blocks_ != 0 ? " over the header, document index and block table"
                              : " over the header and document index",
             " (the file is corrupt)"));
  }
  validate_index();
}

void ShardView::validate_fields(const std::uint8_t* h) {
  const auto version = fmt::load_le<std::uint16_t>(h + field::kVersion);
  if (version != fmt::kVersion) {
    fail("version", field::kVersion,
         cat(version > fmt::kVersion ? "unsupported" : "invalid", " format version ", version,
             " (this fastdata reads <= ", fmt::kVersion, ")"));
  }
  dtype_code_ = h[field::kDtype];
  itemsize_ = fmt::itemsize(dtype_code_);
  if (itemsize_ == 0) {
    fail("dtype", field::kDtype,
         cat("unknown dtype ", unsigned{dtype_code_}, " (known: 1 = uint16, 2 = uint32)"));
  }
  const unsigned unknown_flags = h[field::kFlags] & ~unsigned{fmt::kKnownFlags} & 0xFFu;
  if (unknown_flags != 0) {
    fail("flags", field::kFlags,
         cat("unknown flag bits ", hex(unknown_flags), " (this fastdata knows ",
             hex(fmt::kKnownFlags), ")"));
  }
  for (std::size_t k = field::kReserved; k < field::kReserved + field::kReservedSize; ++k) {
    if (h[k] != 0) fail("reserved", k, cat("reserved byte is ", hex(h[k]), ", must be 0"));
  }
  if ((h[field::kFlags] & fmt::kFlagBlockTable) == 0) {  // v1: the block fields are reserved
    for (std::size_t k = field::kBlockSize; k < field::kReserved; ++k) {
      if (h[k] != 0) {
        fail("reserved", k,
             cat("reserved byte is ", hex(h[k]), ", must be 0 (the block_table flag is clear)"));
      }
    }
  }
  const auto declared = fmt::load_le<std::uint64_t>(h + field::kFileSize);
  if (declared != file_->size()) {
    fail("file_size", field::kFileSize,
         cat("the header says the file is ", declared, " bytes but it is ", file_->size(),
             " bytes (truncated or partly written? re-download or re-pack it)"));
  }
  const auto index_offset = fmt::load_le<std::uint64_t>(h + field::kIndexOffset);
  if (index_offset != fmt::kIndexOffset) {
    fail("index_offset", field::kIndexOffset,
         cat("index_offset is ", index_offset, ", must be ", fmt::kIndexOffset));
  }
  num_docs_ = fmt::load_le<std::uint64_t>(h + field::kNumDocs);
  num_tokens_ = fmt::load_le<std::uint64_t>(h + field::kNumTokens);
}

// Sections lie inside the file, in order (index, tokens, mask), page-aligned, ending exactly
// at file_size. Sizes use checked arithmetic and bounds subtract from the file size, so a
// count near 2^64 is refused instead of wrapping.
void ShardView::validate_sections(const std::uint8_t* h) {
  const std::uint64_t size = file_->size();
  std::uint64_t index_end = 0;
  if (__builtin_add_overflow(num_docs_, 1, &index_end) ||
      __builtin_mul_overflow(index_end, fmt::kIndexEntrySize, &index_end) ||
      __builtin_add_overflow(index_end, fmt::kIndexOffset, &index_end) || index_end > size) {
    fail("num_docs", field::kNumDocs,
         cat("num_docs is ", num_docs_, ": its index of num_docs + 1 u64 entries from byte ",
             fmt::kIndexOffset, " does not fit in the ", size, "-byte file"));
  }
  tokens_offset_ = fmt::load_le<std::uint64_t>(h + field::kTokensOffset);
  if (tokens_offset_ % fmt::kPage != 0 || tokens_offset_ < index_end || tokens_offset_ > size) {
    fail("tokens_offset", field::kTokensOffset,
         cat("tokens_offset is ", tokens_offset_, ", must be a multiple of ", fmt::kPage,
             " between the end of the document index (byte ", index_end,
             ") and the end of the file (byte ", size, ")"));
  }
  std::uint64_t tokens_bytes = 0;
  if (__builtin_mul_overflow(num_tokens_, itemsize_, &tokens_bytes) ||
      tokens_bytes > size - tokens_offset_) {
    fail("num_tokens", field::kNumTokens,
         cat("num_tokens ", num_tokens_, " x ", itemsize_, " bytes from byte ", tokens_offset_,
             " runs past the end of the ", size, "-byte file"));
  }
  const std::uint64_t tokens_end = tokens_offset_ + tokens_bytes;
  const bool has_mask = (h[field::kFlags] & fmt::kFlagLossMask) != 0;
  mask_offset_ = fmt::load_le<std::uint64_t>(h + field::kMaskOffset);
  if (!has_mask && mask_offset_ != 0) {
    fail("mask_offset", field::kMaskOffset,
         cat("mask_offset is ", mask_offset_, " but the loss_mask flag is clear; must be 0"));
  }
  if (has_mask && (mask_offset_ % fmt::kPage != 0 || mask_offset_ < tokens_end ||
                   mask_offset_ > size || num_tokens_ > size - mask_offset_)) {
    fail("mask_offset", field::kMaskOffset,
         cat("mask_offset is ", mask_offset_, ", must be a multiple of ", fmt::kPage,
             " at or after the end of the token payload (byte ", tokens_end, "), with ",
             num_tokens_, " mask bytes inside the ", size, "-byte file"));
  }
  const std::uint64_t end = has_mask ? mask_offset_ + num_tokens_ : tokens_end;
  if (end != size) {
    fail("file_size", field::kFileSize,
         cat("file_size is ", size, " but the last section ends at byte ", end));
  }
  if ((h[field::kFlags] & fmt::kFlagBlockTable) != 0) validate_blocks(h, index_end);
  const std::uint8_t* data = file_->data();
  index_ = reinterpret_cast<const std::uint64_t*>(data + fmt::kIndexOffset);  // 8-byte aligned
  tokens_ = data + tokens_offset_;
  mask_ = has_mask ? data + mask_offset_ : nullptr;
}

// v1.1: the block size is a power of two in [kMinBlockSize, kMaxBlockSize] and no larger
// than the payload needs, num_blocks cuts the payload [tokens_offset, file_size) into such
// blocks, and the table lies between the document index and the payload. The table's
// contents (the hashes) are not used here; the CRC covers them.
void ShardView::validate_blocks(const std::uint8_t* h, std::uint64_t index_end) {
  const std::uint64_t size = file_->size();
  const std::uint64_t payload = size - tokens_offset_;  // tokens_offset_ <= size: checked
  const auto block_size = fmt::load_le<std::uint64_t>(h + field::kBlockSize);
  const bool pow2 = block_size != 0 && (block_size & (block_size - 1)) == 0;
  if (!pow2 || block_size < fmt::kMinBlockSize || block_size > fmt::kMaxBlockSize) {
    fail("block_size", field::kBlockSize,
         cat("block_size is ", block_size, ", must be a power of two from ", fmt::kMinBlockSize,
             " to ", fmt::kMaxBlockSize));
  }
  std::uint64_t largest = fmt::kMinBlockSize;
  while (largest < payload) largest *= 2;  // payload < 2^63: the file is mapped
  if (block_size > largest) {
    fail("block_size", field::kBlockSize,
         cat("block_size is ", block_size, ", larger than the shard: its ", payload,
             "-byte payload needs at most ", largest));
  }
  const auto num_blocks = fmt::load_le<std::uint64_t>(h + field::kNumBlocks);
  const std::uint64_t expected = payload / block_size + (payload % block_size != 0 ? 1 : 0);
  if (num_blocks != expected) {
    fail("num_blocks", field::kNumBlocks,
         cat("num_blocks is ", num_blocks, ", but the ", payload, "-byte payload holds ", expected,
             " blocks of ", block_size, " bytes"));
  }
  const auto table = fmt::load_le<std::uint64_t>(h + field::kBlockTableOffset);
  // num_blocks <= payload / 4096 + 1, so the table size cannot wrap.
  const std::uint64_t table_bytes = num_blocks * fmt::kBlockEntrySize;
  if (table > size || table_bytes > size - table) {
    fail("block_table_offset", field::kBlockTableOffset,
         cat("the block table at byte ", table, " (", table_bytes,
             " bytes) ends past the end of the ", size, "-byte file"));
  }
  if (table_bytes > tokens_offset_ || table > tokens_offset_ - table_bytes) {
    fail("block_table_offset", field::kBlockTableOffset,
         cat("the block table at byte ", table, " (", table_bytes,
             " bytes) runs into the payload, which starts at byte ", tokens_offset_));
  }
  if (table < index_end || table % fmt::kIndexEntrySize != 0) {
    fail("block_table_offset", field::kBlockTableOffset,
         cat("block_table_offset is ", table, ", must be a multiple of 8 at or after the end of the ",
             "document index (byte ", index_end, ")"));
  }
  block_size_ = block_size;
  num_blocks_ = num_blocks;
  block_table_offset_ = table;
}

// A raw view: the range lies inside the file, is aligned for its token type, and the
// caller's document offsets start at 0, never decrease and end at num_tokens.
void ShardView::validate_raw(std::uint64_t byte_offset) {
  const std::uint64_t length = num_tokens_ * itemsize_;  // checked by the constructor
  if (byte_offset % itemsize_ != 0) {
    fail("tokens", byte_offset,
         cat("byte offset ", byte_offset, " is not a multiple of the ", itemsize_, "-byte ",
             token_name(token_type_), " tokens"));
  }
  if (file_->size() != length || byte_offset > file_->file_size()) {
    fail("tokens", byte_offset,
         cat(num_tokens_, " ", token_name(token_type_), " tokens need bytes [", byte_offset, ", ",
             byte_offset + length, ") but the file is ", file_->file_size(),
             " bytes (truncated?)"));
  }
  // Keep tokens_ non-null for an empty range, as numpy wants a pointer even for 0 items.
  static const std::uint64_t kNothing = 0;
  tokens_ = length == 0 ? static_cast<const void*>(&kNothing) : file_->data();
  index_ = owned_index_.data();
  if (index_[0] != 0) {
    fail("doc_offsets[0]", byte_offset,
         cat("the first document offset is ", index_[0], ", must be 0"));
  }
  for (std::uint64_t k = 1; k <= num_docs_; ++k) {
    if (index_[k] < index_[k - 1]) {
      fail(cat("doc_offsets[", k, "]"), byte_offset,
           cat("document offset ", index_[k], " is smaller than the previous one (",
               index_[k - 1], ")"));
    }
  }
}

void ShardView::validate_index() const {
  const auto where = [](std::uint64_t k) { return fmt::kIndexOffset + k * fmt::kIndexEntrySize; };
  const auto name = [](std::uint64_t k) { return cat("doc_index[", k, "]"); };
  if (index_[0] != 0)
    fail(name(0), where(0), cat("the first document offset is ", index_[0], ", must be 0"));
  for (std::uint64_t k = 1; k <= num_docs_; ++k) {
    if (index_[k] < index_[k - 1]) {
      fail(name(k), where(k),
           cat("document offset ", index_[k], " is smaller than the previous one (", index_[k - 1],
               "); the index must never decrease"));
    }
  }
  if (index_[num_docs_] != num_tokens_) {
    fail(name(num_docs_), where(num_docs_),
         cat("the last document offset is ", index_[num_docs_], ", must equal num_tokens (",
             num_tokens_, ")"));
  }
}

std::uint64_t ShardView::doc_start(std::uint64_t i) const {
  if (i >= num_docs_) {
    throw std::out_of_range(
        cat("document ", i, " out of range for ", path(), " (", num_docs_, " documents)"));
  }
  return index_[i];
}

std::uint64_t ShardView::doc_len(std::uint64_t i) const {
  const std::uint64_t start = doc_start(i);  // bounds-checks i before index_[i + 1] is read
  return index_[i + 1] - start;
}

void ShardView::check_token_range(std::uint64_t start, std::uint64_t stop) const {
  if (start > stop || stop > num_tokens_) {
    throw std::out_of_range(cat("token range [", start, ", ", stop, ") out of range for ", path(),
                                " (", num_tokens_, " tokens)"));
  }
}

}  // namespace fastdata
