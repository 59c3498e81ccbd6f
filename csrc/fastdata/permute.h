// Keyed bijections of [0, n) evaluated per index (no permutation table), used to shuffle
// epochs of any size in O(1) memory. Must stay bit-identical to fastdata/sampling/permute.py.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastdata {

// splitmix64 finaliser: the round function and the key schedule.
std::uint64_t mix64(std::uint64_t x) noexcept;

// Image of `index` (< n) under the permutation of [0, n) keyed by `key`: a 4-round Feistel
// network over the smallest even-bit domain covering n, cycle-walking back into [0, n).
std::uint64_t permute_index(std::uint64_t index, std::uint64_t n, std::uint64_t key) noexcept;

// out[i] = permute_index(index[i], size[i], key[i]) for i < count. Throws
// std::invalid_argument when some index[i] >= size[i].
void permute_many(const std::int64_t* index, const std::int64_t* size, const std::uint64_t* key,
                  std::int64_t* out, std::size_t count);

}  // namespace fastdata
