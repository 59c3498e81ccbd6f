// The batch hot path: copy token spans from several shards into one output buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fastdata/shard_view.h"

namespace fastdata {

enum class OutDtype { kInt64, kInt32, kUint16, kUint32 };

struct GatherOutput {
  void* tokens = nullptr;  // `size` elements of `dtype`
  OutDtype dtype = OutDtype::kInt64;
  std::uint64_t size = 0;
  std::uint8_t* mask = nullptr;  // `size` bytes, or nullptr for no mask output
};

// Copies spans (num_spans rows of int64 {shard index, token offset, length}, row-major)
// back to back into `out`, widening tokens to out.dtype, and the loss masks into out.mask
// (1 for shards without a mask). All spans are checked before anything is written:
// std::out_of_range for a shard index or token range outside its shard, and
// std::invalid_argument for a negative length, a uint32 shard with uint16 output, or spans
// whose lengths do not add up to out.size. uint32 tokens >= 2^31 wrap in int32 output,
// like numpy's astype. Needs no Python: callers may run it without the GIL.
void gather(const std::vector<const ShardView*>& shards, const std::int64_t* spans,
            std::size_t num_spans, const GatherOutput& out);

}  // namespace fastdata
