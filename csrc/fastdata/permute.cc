#include "fastdata/permute.h"

#include <stdexcept>
#include <string>

namespace fastdata {

namespace {
constexpr int kRounds = 4;
constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

int half_bits(std::uint64_t n) noexcept {
  int bits = 0;
  for (std::uint64_t v = n - 1; v != 0; v >>= 1) ++bits;
  if (bits < 2) bits = 2;
  return (bits + 1) / 2;
}
}  // namespace

std::uint64_t mix64(std::uint64_t x) noexcept {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::uint64_t permute_index(std::uint64_t index, std::uint64_t n, std::uint64_t key) noexcept {
  if (n <= 1) return index;
  const int h = half_bits(n);
  const std::uint64_t mask = (std::uint64_t{1} << h) - 1;
  std::uint64_t round_keys[kRounds];
  for (int r = 0; r < kRounds; ++r) round_keys[r] = mix64(key + kGolden * static_cast<std::uint64_t>(r + 1));
  std::uint64_t x = index;
  do {  // cycle-walk: re-encrypt until the value is back inside [0, n)
    std::uint64_t left = x >> h;
    std::uint64_t right = x & mask;
    for (const std::uint64_t k : round_keys) {
      const std::uint64_t next = left ^ (mix64(right ^ k) & mask);
      left = right;
      right = next;
    }
    x = (left << h) | right;
  } while (x >= n);
  return x;
}

void permute_many(const std::int64_t* index, const std::int64_t* size, const std::uint64_t* key,
                  std::int64_t* out, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    if (size[i] < 0 || index[i] < 0 || index[i] >= size[i]) {
      throw std::invalid_argument("permute: index " + std::to_string(index[i]) +
                                  " outside [0, " + std::to_string(size[i]) + ")");
    }
  }
  for (std::size_t i = 0; i < count; ++i) {
    out[i] = static_cast<std::int64_t>(permute_index(static_cast<std::uint64_t>(index[i]),
                                                     static_cast<std::uint64_t>(size[i]), key[i]));
  }
}

}  // namespace fastdata
