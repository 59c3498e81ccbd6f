// The integer types a ShardView's tokens may have. A fastdata shard holds uint16 or uint32
// (format.h); a view over a Megatron .bin range holds whatever integer type that .bin was
// written with. Pure C++17, no Python.h.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fastdata/format.h"

namespace fastdata {

enum class TokenType : std::uint8_t { kUint8, kInt8, kInt16, kUint16, kInt32, kUint32, kInt64 };

// numpy name of `type`.
constexpr const char* token_name(TokenType type) noexcept {
  switch (type) {
    case TokenType::kUint8:
      return "uint8";
    case TokenType::kInt8:
      return "int8";
    case TokenType::kInt16:
      return "int16";
    case TokenType::kUint16:
      return "uint16";
    case TokenType::kInt32:
      return "int32";
    case TokenType::kUint32:
      return "uint32";
    case TokenType::kInt64:
      return "int64";
  }
  return "?";
}

// The token type named `name` (a numpy dtype name); std::invalid_argument for any other.
inline TokenType token_type_named(const std::string& name) {
  for (const TokenType t : {TokenType::kUint8, TokenType::kInt8, TokenType::kInt16,
                            TokenType::kUint16, TokenType::kInt32, TokenType::kUint32,
                            TokenType::kInt64}) {
    if (name == token_name(t)) return t;
  }
  throw std::invalid_argument("unsupported token dtype '" + name +
                              "' (use uint8, int8, int16, uint16, int32, uint32 or int64)");
}

// The token type of a fastdata shard's dtype code (format.h); the code is validated first.
constexpr TokenType token_type_of_code(std::uint8_t code) noexcept {
  return code == format::kDtypeUint16 ? TokenType::kUint16 : TokenType::kUint32;
}

// Calls f(T{}) with T the C++ type of `type`, so one template serves every token type.
template <typename F>
decltype(auto) visit_token_type(TokenType type, F&& f) {
  switch (type) {
    case TokenType::kUint8:
      return f(std::uint8_t{});
    case TokenType::kInt8:
      return f(std::int8_t{});
    case TokenType::kInt16:
      return f(std::int16_t{});
    case TokenType::kUint16:
      return f(std::uint16_t{});
    case TokenType::kInt32:
      return f(std::int32_t{});
    case TokenType::kUint32:
      return f(std::uint32_t{});
    case TokenType::kInt64:
      break;
  }
  return f(std::int64_t{});
}

constexpr std::uint64_t token_size(TokenType type) noexcept {
  switch (type) {
    case TokenType::kUint8:
    case TokenType::kInt8:
      return 1;
    case TokenType::kInt16:
    case TokenType::kUint16:
      return 2;
    case TokenType::kInt32:
    case TokenType::kUint32:
      return 4;
    case TokenType::kInt64:
      break;
  }
  return 8;
}

}  // namespace fastdata
