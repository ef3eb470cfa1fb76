#pragma once
// Copy-only kernels (shuffle, gather forward) move bits, not numbers: they are instantiated once per
// element size, and the same machine code serves float, int32, bf16, half...
#include <cstdint>

namespace hdssl::ops {

/// The unsigned integer type of exactly Size bytes.
template <int Size>
struct ElementBits;
template <>
struct ElementBits<1> {
  using type = std::uint8_t;
};
template <>
struct ElementBits<2> {
  using type = std::uint16_t;
};
template <>
struct ElementBits<4> {
  using type = std::uint32_t;
};
template <>
struct ElementBits<8> {
  using type = std::uint64_t;
};
template <int Size>
using element_bits_t = typename ElementBits<Size>::type;

}  // namespace hdssl::ops
