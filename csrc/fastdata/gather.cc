#include "fastdata/gather.h"

#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "fastdata/format.h"
#include "fastdata/token_type.h"

namespace fastdata {
namespace {

struct Resolved {
  const ShardView* shard;
  std::uint64_t offset;
  std::uint64_t length;
};

std::string span_name(std::size_t row) { return "span " + std::to_string(row) + ": "; }

// Checks every span and returns them resolved, so that the copy reads each span exactly once
// from validated values even if the caller's array changes meanwhile.
std::vector<Resolved> resolve(const std::vector<const ShardView*>& shards,
                              const std::int64_t* spans, std::size_t num_spans,
                              const GatherOutput& out) {
  std::vector<Resolved> plan;
  plan.reserve(num_spans);
  std::uint64_t total = 0;
  for (std::size_t row = 0; row < num_spans; ++row) {
    const std::int64_t index = spans[3 * row];
    const std::int64_t offset = spans[3 * row + 1];
    const std::int64_t length = spans[3 * row + 2];
    if (index < 0 || static_cast<std::uint64_t>(index) >= shards.size()) {
      throw std::out_of_range(span_name(row) + "shard index " + std::to_string(index) +
                              " out of range for " + std::to_string(shards.size()) + " shards");
    }
    const ShardView* shard = shards[static_cast<std::size_t>(index)];
    if (length < 0) {
      throw std::invalid_argument(span_name(row) + "negative length " + std::to_string(length));
    }
    const auto ulen = static_cast<std::uint64_t>(length);
    if (offset < 0 || static_cast<std::uint64_t>(offset) > shard->num_tokens() ||
        ulen > shard->num_tokens() - static_cast<std::uint64_t>(offset)) {
      throw std::out_of_range(span_name(row) + std::to_string(length) + " tokens at offset " +
                              std::to_string(offset) + " out of range for " + shard->path() + " (" +
                              std::to_string(shard->num_tokens()) + " tokens)");
    }
    const TokenType type = shard->token_type();
    if (out.dtype == OutDtype::kUint16 && type != TokenType::kUint16 && type != TokenType::kUint8) {
      throw std::invalid_argument(span_name(row) + shard->path() + " holds " + token_name(type) +
                                  " tokens, which do not fit a uint16 output");
    }
    if (ulen > out.size - total) {
      throw std::invalid_argument("spans cover more tokens than the output's " +
                                  std::to_string(out.size) + " elements (at span " +
                                  std::to_string(row) + ")");
    }
    total += ulen;
    plan.push_back({shard, static_cast<std::uint64_t>(offset), ulen});
  }
  if (total != out.size) {
    throw std::invalid_argument("spans cover " + std::to_string(total) +
                                " tokens but the output has " + std::to_string(out.size) +
                                " elements");
  }
  return plan;
}

// One tight loop per (source, destination) type pair, so the compiler can vectorise it.
template <typename Src, typename Dst>
void convert(const Src* src, Dst* dst, std::uint64_t n) {
  if constexpr (std::is_same_v<Src, Dst>) {
    std::memcpy(dst, src, n * sizeof(Src));
  } else {
    for (std::uint64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(src[i]);
  }
}

template <typename Dst>
void copy_all(const std::vector<Resolved>& plan, Dst* dst, std::uint8_t* mask) {
  for (const Resolved& span : plan) {
    if (span.length == 0) continue;
    const ShardView& shard = *span.shard;
    visit_token_type(shard.token_type(), [&](auto tag) {
      using Src = decltype(tag);
      convert(static_cast<const Src*>(shard.tokens()) + span.offset, dst, span.length);
    });
    dst += span.length;
    if (mask != nullptr) {
      if (shard.has_mask()) {
        std::memcpy(mask, shard.mask() + span.offset, span.length);
      } else {
        std::memset(mask, 1, span.length);  // no mask: every token is trained on
      }
      mask += span.length;
    }
  }
}

}  // namespace

void gather(const std::vector<const ShardView*>& shards, const std::int64_t* spans,
            std::size_t num_spans, const GatherOutput& out) {
  const std::vector<Resolved> plan = resolve(shards, spans, num_spans, out);
  switch (out.dtype) {
    case OutDtype::kInt64:
      copy_all(plan, static_cast<std::int64_t*>(out.tokens), out.mask);
      break;
    case OutDtype::kInt32:
      copy_all(plan, static_cast<std::int32_t*>(out.tokens), out.mask);
      break;
    case OutDtype::kUint16:
      copy_all(plan, static_cast<std::uint16_t*>(out.tokens), out.mask);
      break;
    case OutDtype::kUint32:
      copy_all(plan, static_cast<std::uint32_t*>(out.tokens), out.mask);
      break;
  }
}

}  // namespace fastdata
