// On-disk layout of a raw fastdata shard, format version 1 and its minor version 1.1
// (docs/format.md): v1.1 sets kFlagBlockTable and the three block fields that were reserved
// bytes in v1; a block table of xxh3-128 digests follows the document index.
//
// This header is the C++ definition of the format; fastdata/format/spec.py is the Python
// mirror and tests/test_spec.py checks that the two agree. Pure C++17, no Python.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fastdata::format {

inline constexpr char kMagic[8] = {'F', 'D', 'S', 'H', 'A', 'R', 'D', '\0'};
inline constexpr std::uint16_t kVersion = 1;
inline constexpr std::uint64_t kHeaderSize = 128;
inline constexpr std::uint64_t kPage = 4096;
inline constexpr std::uint64_t kIndexOffset = kHeaderSize;  // the document index follows the header
inline constexpr std::uint64_t kIndexEntrySize = 8;         // u64 token offsets

inline constexpr std::uint8_t kDtypeUint16 = 1;
inline constexpr std::uint8_t kDtypeUint32 = 2;

inline constexpr std::uint8_t kFlagLossMask = 1;
inline constexpr std::uint8_t kFlagBlockTable = 2;  // v1.1
inline constexpr std::uint8_t kKnownFlags = kFlagLossMask | kFlagBlockTable;

// v1.1 block table: one 16-byte xxh3-128 digest per payload block.
inline constexpr std::uint64_t kBlockEntrySize = 16;
inline constexpr std::uint64_t kMinBlockSize = 4096;
inline constexpr std::uint64_t kMaxBlockSize = std::uint64_t{64} << 20;

// Byte offset of each header field; error messages name the field and this offset.
namespace field {
inline constexpr std::size_t kMagic = 0;
inline constexpr std::size_t kVersion = 8;
inline constexpr std::size_t kDtype = 10;
inline constexpr std::size_t kFlags = 11;
inline constexpr std::size_t kHeaderCrc32 = 12;
inline constexpr std::size_t kNumDocs = 16;
inline constexpr std::size_t kNumTokens = 24;
inline constexpr std::size_t kIndexOffset = 32;
inline constexpr std::size_t kTokensOffset = 40;
inline constexpr std::size_t kMaskOffset = 48;
inline constexpr std::size_t kFileSize = 56;
inline constexpr std::size_t kBlockSize = 64;         // v1.1; reserved (zero) in v1
inline constexpr std::size_t kNumBlocks = 72;         // v1.1; reserved (zero) in v1
inline constexpr std::size_t kBlockTableOffset = 80;  // v1.1; reserved (zero) in v1
inline constexpr std::size_t kReserved = 88;
inline constexpr std::size_t kReservedSize = 40;
}  // namespace field

// The header as it lies on disk (little-endian). Only used for the layout checks below:
// fields are decoded with load_le so that no unaligned or type-punned read is needed.
struct ShardHeader {
  char magic[8];
  std::uint16_t version;
  std::uint8_t dtype;
  std::uint8_t flags;
  std::uint32_t header_crc32;
  std::uint64_t num_docs;
  std::uint64_t num_tokens;
  std::uint64_t index_offset;
  std::uint64_t tokens_offset;
  std::uint64_t mask_offset;
  std::uint64_t file_size;
  std::uint64_t block_size;
  std::uint64_t num_blocks;
  std::uint64_t block_table_offset;
  std::uint8_t reserved[field::kReservedSize];
};

static_assert(sizeof(ShardHeader) == kHeaderSize, "header must be 128 bytes");
static_assert(offsetof(ShardHeader, magic) == field::kMagic);
static_assert(offsetof(ShardHeader, version) == field::kVersion);
static_assert(offsetof(ShardHeader, dtype) == field::kDtype);
static_assert(offsetof(ShardHeader, flags) == field::kFlags);
static_assert(offsetof(ShardHeader, header_crc32) == field::kHeaderCrc32);
static_assert(offsetof(ShardHeader, num_docs) == field::kNumDocs);
static_assert(offsetof(ShardHeader, num_tokens) == field::kNumTokens);
static_assert(offsetof(ShardHeader, index_offset) == field::kIndexOffset);
static_assert(offsetof(ShardHeader, tokens_offset) == field::kTokensOffset);
static_assert(offsetof(ShardHeader, mask_offset) == field::kMaskOffset);
static_assert(offsetof(ShardHeader, file_size) == field::kFileSize);
static_assert(offsetof(ShardHeader, block_size) == field::kBlockSize);
static_assert(offsetof(ShardHeader, num_blocks) == field::kNumBlocks);
static_assert(offsetof(ShardHeader, block_table_offset) == field::kBlockTableOffset);
static_assert(offsetof(ShardHeader, reserved) == field::kReserved);
static_assert(kIndexOffset % kIndexEntrySize == 0, "index entries must be naturally aligned");

// Zero-copy views hand the mapped payload to numpy as native integers, which is only
// correct on a little-endian host.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fastdata shards are little-endian; big-endian hosts are not supported"
#endif

// Size in bytes of one token of `dtype_code`, or 0 for an unknown code.
constexpr std::uint64_t itemsize(std::uint8_t dtype_code) noexcept {
  switch (dtype_code) {
    case kDtypeUint16:
      return 2;
    case kDtypeUint32:
      return 4;
    default:
      return 0;
  }
}

// numpy name of `dtype_code`, or nullptr for an unknown code.
constexpr const char* dtype_name(std::uint8_t dtype_code) noexcept {
  switch (dtype_code) {
    case kDtypeUint16:
      return "uint16";
    case kDtypeUint32:
      return "uint32";
    default:
      return nullptr;
  }
}

// Reads a little-endian unsigned integer from possibly unaligned bytes.
template <typename T>
T load_le(const std::uint8_t* bytes) noexcept {
  T value;
  std::memcpy(&value, bytes, sizeof(T));
  return value;  // host is little-endian (checked above)
}

}  // namespace fastdata::format
