// AMX tile helpers of the bfloat16 retrieval kernel (amx.cpp): the tile shapes and their
// configuration, and the AVX-512 pieces around the tiles (exp, bfloat16 rounding, a 16 x 16
// dword transpose). x86-64 Linux GCC builds only; every function is compiled for AMX and
// AVX-512 and must run only after amx::available().
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "retrieval/softmax.hpp"  // the exp polynomial's constants, kNegInf

#define MNEMONIX_TARGET_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")))

namespace mnemonix {
namespace retrieval {
namespace amx {
namespace {

constexpr size_t kRows = 16;                // rows of a tile: keys of a logit tile, queries of a query tile
constexpr size_t kDepth = 32;               // bfloat16 values in a tile row (64 bytes)
constexpr size_t kTile = kRows * kDepth;    // bfloat16 values in an A or B tile (1 KB)
constexpr size_t kCTile = kRows * kRows;    // float32 values in a C tile (1 KB)

size_t roundUp(size_t x, size_t m) { return (x + m - 1) / m * m; }

struct alignas(64) TileConfig {
  uint8_t palette = 1, startRow = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

MNEMONIX_TARGET_AMX void configureTiles() {
  TileConfig c;
  for (int i = 0; i < 8; ++i) {
    c.colsb[i] = 64;
    c.rows[i] = kRows;
  }
  _tile_loadconfig(&c);
}

// The accumulators, C tiles 0-3: zeroed, or loaded from / stored to four consecutive 1 KB tiles.
MNEMONIX_TARGET_AMX inline void zeroAccumulators() {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
}

MNEMONIX_TARGET_AMX inline void loadAccumulators(const float* c) {
  _tile_loadd(0, c, 64);
  _tile_loadd(1, c + kCTile, 64);
  _tile_loadd(2, c + 2 * kCTile, 64);
  _tile_loadd(3, c + 3 * kCTile, 64);
}

MNEMONIX_TARGET_AMX inline void storeAccumulators(float* c) {
  _tile_stored(0, c, 64);
  _tile_stored(1, c + kCTile, 64);
  _tile_stored(2, c + 2 * kCTile, 64);
  _tile_stored(3, c + 3 * kCTile, 64);
}

// exp(x) for x <= 88 on 16 lanes (the Cephes polynomial of softmax.hpp's expNonPositive; the
// kernel's weights take x <= kMaxSlack), 0 for x < -87 and for -inf.
MNEMONIX_TARGET_AMX inline __m512 exp16(__m512 x) {
  const __m512 xc = _mm512_max_ps(x, _mm512_set1_ps(kExpMin));
  const __m512 shifter = _mm512_set1_ps(kExpShifter);
  const __m512 shifted = _mm512_fmadd_ps(xc, _mm512_set1_ps(kExpLog2e), shifter);
  const __m512 n = _mm512_sub_ps(shifted, shifter);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kExpLn2Hi), xc);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(kExpLn2Lo), r);
  __m512 p = _mm512_set1_ps(kExpPoly[0]);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[1]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[2]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[3]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[4]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[5]));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  __m512i bits = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B400000 - 127));
  bits = _mm512_slli_epi32(bits, 23);
  const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(kExpMin), _CMP_GE_OQ);
  return _mm512_maskz_mul_ps(live, y, _mm512_castsi512_ps(bits));
}

// float32 -> bfloat16 bits in the low half of each lane, to nearest even (a NaN stays a NaN).
MNEMONIX_TARGET_AMX inline __m512i bf16Bits(__m512 x) {
  const __m512i b = _mm512_castps_si512(x);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  return _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
}

// 16 x 16 dwords transposed in registers: r[i] lane j -> r[j] lane i.
MNEMONIX_TARGET_AMX inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {  // then 128-bit lanes: two rounds of 2 x 2 block swaps
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

// The mask of the first `width` (<= 32) 16-bit lanes.
inline __mmask32 firstLanes(size_t width) {
  return width >= 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << width) - 1);
}

}  // namespace
}  // namespace amx
}  // namespace retrieval
}  // namespace mnemonix
