// Stored rows in four formats, read as float32 by the CPU kernels (no Python here).
//
// Keys may be stored as float32, float16, bfloat16 or int8 (with a per-row float32 scale
// applied by the caller). The kernels convert a tile of rows at a time into a small float32
// buffer that stays in L1/L2 and then run their float32 inner loops on it, so a narrow row
// is read from memory once, in its stored width. Every conversion is exact (float16,
// bfloat16 and int8 values are all float32 numbers).
//
// Two instruction sets, chosen at run time (cpuHasAvx2F16c):
// - `Avx2Rows`: AVX2 + FMA + F16C (x86-64-v3) with intrinsics, compiled through
//   `__attribute__((target(...)))` so that portable builds (no -march) still carry it. GCC
//   12's vectoriser does not turn a scalar `_Float16 -> float` loop into vcvtph2ps, and
//   `target_clones` functions cannot call F16C intrinsics from their default clone, hence
//   explicit target functions instead of the `target_clones` of retrieval.hpp.
// - `PortableRows`: plain C++ (branch-free bit manipulation for float16) for any other CPU.
// With MNEMONIX_NATIVE on an AVX2 machine, `-march=native` makes the check constant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MNEMONIX_HAVE_AVX2_PATH 1
#include <immintrin.h>
#define MNEMONIX_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MNEMONIX_HAVE_AVX512_PATH 1
#define MNEMONIX_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")))
#else
#define MNEMONIX_HAVE_AVX2_PATH 0
#define MNEMONIX_TARGET_AVX2
#define MNEMONIX_HAVE_AVX512_PATH 0
#define MNEMONIX_TARGET_AVX512
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MNEMONIX_PREFETCH(ptr) __builtin_prefetch((ptr), 0, 2)  // read, keep in L2
#ifndef MNEMONIX_ALWAYS_INLINE
#define MNEMONIX_ALWAYS_INLINE __attribute__((always_inline)) inline  // inlined into each ISA's kernel
#endif
#else
#define MNEMONIX_PREFETCH(ptr) ((void)(ptr))
#ifndef MNEMONIX_ALWAYS_INLINE
#define MNEMONIX_ALWAYS_INLINE inline
#endif
#endif

namespace mnemonix {
namespace rows {

enum class RowType { Float32, Float16, BFloat16, Int8 };

inline size_t rowTypeBytes(RowType type) {
  switch (type) {
    case RowType::Float32: return 4;
    case RowType::Float16:
    case RowType::BFloat16: return 2;
    case RowType::Int8: return 1;
  }
  return 4;
}

inline const char* rowTypeName(RowType type) {
  switch (type) {
    case RowType::Float32: return "float32";
    case RowType::Float16: return "float16";
    case RowType::BFloat16: return "bfloat16";
    case RowType::Int8: return "int8";
  }
  return "?";
}

inline RowType parseRowType(const std::string& name, const char* argName) {
  if (name == "float32") return RowType::Float32;
  if (name == "float16") return RowType::Float16;
  if (name == "bfloat16") return RowType::BFloat16;
  if (name == "int8") return RowType::Int8;
  throw std::invalid_argument(std::string(argName) + " must be one of float32, float16, bfloat16, int8, got " + name);
}

// float16 bits -> float32, exactly, without float arithmetic on subnormals (which a DAZ
// mode would flush): zero / subnormal halves are mant * 2^-24 (a normal float32).
MNEMONIX_ALWAYS_INLINE float halfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  const float small = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // 2^-24
  uint32_t smallBits;
  std::memcpy(&smallBits, &small, sizeof(smallBits));
  const uint32_t normal = ((exponent + 112u) << 23) | (mantissa << 13);
  const uint32_t special = 0x7f800000u | (mantissa << 13);  // Inf / NaN
  const uint32_t bits = sign | (exponent == 0 ? smallBits : (exponent == 31 ? special : normal));
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

MNEMONIX_ALWAYS_INLINE float bfloat16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

// float32 -> float16 bits, rounded to nearest even in integer arithmetic (no FTZ/DAZ concern):
// beyond 65,504 (from 65,520 on) Inf, under 2^-14 a subnormal (mant * 2^-24), NaN a quiet NaN.
// torch's own conversion gives the same bits.
MNEMONIX_ALWAYS_INLINE uint16_t floatToHalf(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // |x| >= 65,520 rounds past the largest half: Inf
  if (a >= 0x38800000u) {                        // a normal half: drop 13 mantissa bits, rebias 127 -> 15
    const uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);
    return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
  }
  if (a < 0x33000000u) return sign;  // under 2^-25: zero (2^-25 itself ties to the even 0 below)
  const uint32_t shift = 126u - (a >> 23);               // |x| * 2^24 = significand >> shift, shift 14..24
  const uint32_t significand = (a & 0x7fffffu) | 0x800000u;
  uint32_t mant = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
  if (rest > halfway || (rest == halfway && (mant & 1u))) ++mant;  // 1024: the smallest normal, encoded right
  return sign | static_cast<uint16_t>(mant);
}

// float32 -> bfloat16 bits, rounded to nearest even; NaN: 0x7fc0 (torch's conversion).
MNEMONIX_ALWAYS_INLINE uint16_t floatToBfloat16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Prefetch `bytes` bytes from `ahead` (one cache line per 64 bytes); nullptr: nothing.
MNEMONIX_ALWAYS_INLINE void prefetchBytes(const void* ahead, size_t bytes) {
  if (!ahead) return;
  const char* p = static_cast<const char*>(ahead);
  for (size_t off = 0; off < bytes; off += 64) MNEMONIX_PREFETCH(p + off);
}

// Converts `count` rows of `d` values (type `type`, contiguous) into float32 `dst`.
// `ahead` (or nullptr) points at the bytes to prefetch while converting: the same number of
// bytes further on, i.e. the next tile, so that memory streams while this tile computes.
struct PortableRows {
  static constexpr const char* name = "portable";
  static constexpr bool kFusedDot = false;  // no dotRows: convert, then the float32 loops
  // 16 float32 rows (stride d) -> one panel stored column by column: panel[i * 16 + l] = row l's i.
  static void interleave16(const float* tile, size_t d, float* panel) {
    for (size_t l = 0; l < 16; ++l)
      for (size_t i = 0; i < d; ++i) panel[i * 16 + l] = tile[l * d + i];
  }
  static void convert(RowType type, const void* src, size_t count, size_t d, float* dst, const void* ahead) {
    const size_t rowBytes = d * rowTypeBytes(type);
    for (size_t r = 0; r < count; ++r) {
      prefetchBytes(ahead ? static_cast<const char*>(ahead) + r * rowBytes : nullptr, rowBytes);
      float* out = dst + r * d;
      if (type == RowType::Float16) {
        const uint16_t* in = static_cast<const uint16_t*>(src) + r * d;
        for (size_t i = 0; i < d; ++i) out[i] = halfToFloat(in[i]);
      } else if (type == RowType::BFloat16) {
        const uint16_t* in = static_cast<const uint16_t*>(src) + r * d;
        for (size_t i = 0; i < d; ++i) out[i] = bfloat16ToFloat(in[i]);
      } else if (type == RowType::Int8) {
        const int8_t* in = static_cast<const int8_t*>(src) + r * d;
        for (size_t i = 0; i < d; ++i) out[i] = static_cast<float>(in[i]);
      } else {
        std::memcpy(out, static_cast<const float*>(src) + r * d, d * sizeof(float));
      }
    }
  }
};

#if MNEMONIX_HAVE_AVX2_PATH
struct Avx2Rows {
  static constexpr const char* name = "avx2";
  static constexpr bool kFusedDot = true;

  // 8 values of a row of type T from element i on, as float32 (exact).
  template <RowType T>
  MNEMONIX_TARGET_AVX2 static inline __m256 load8(const void* row, size_t i) {
    if constexpr (T == RowType::Float16) {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i)));
    } else if constexpr (T == RowType::BFloat16) {
      const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
    } else if constexpr (T == RowType::Int8) {
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(row) + i));
      return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
    } else {
      return _mm256_loadu_ps(static_cast<const float*>(row) + i);
    }
  }

  template <RowType T>
  static float scalarAt(const void* row, size_t i) {
    if constexpr (T == RowType::Float16) return halfToFloat(static_cast<const uint16_t*>(row)[i]);
    if constexpr (T == RowType::BFloat16) return bfloat16ToFloat(static_cast<const uint16_t*>(row)[i]);
    if constexpr (T == RowType::Int8) return static_cast<float>(static_cast<const int8_t*>(row)[i]);
    return static_cast<const float*>(row)[i];
  }

  MNEMONIX_TARGET_AVX2 static inline float hsum(__m256 v) {
    const __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 y = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(y, _mm_movehdup_ps(y)));
  }

  // One query's dots with `count` rows of type T read as stored (no float32 copy), four rows
  // at a time; with sumSquares != nullptr also each row's sum of squares. Memory-bound at a
  // single query: this halves the instructions per stored byte of the convert-then-dot path.
  template <RowType T>
  MNEMONIX_TARGET_AVX2 static void dotRowsT(const float* q, const void* src, size_t count, size_t d, float* out,
                                            float* sumSquares, const char* ahead) {
    const size_t rowBytes = d * rowTypeBytes(T);
    const char* base = static_cast<const char*>(src);
    size_t r = 0;
    for (; r + 4 <= count; r += 4) {
      if (ahead) prefetchBytes(ahead + r * rowBytes, 4 * rowBytes);
      const void* k[4] = {base + r * rowBytes, base + (r + 1) * rowBytes, base + (r + 2) * rowBytes,
                          base + (r + 3) * rowBytes};
      __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      size_t i = 0;
      for (; i + 8 <= d; i += 8) {
        const __m256 qv = _mm256_loadu_ps(q + i);
        for (int j = 0; j < 4; ++j) {
          const __m256 x = load8<T>(k[j], i);
          a[j] = _mm256_fmadd_ps(qv, x, a[j]);
          if (sumSquares) s[j] = _mm256_fmadd_ps(x, x, s[j]);
        }
      }
      for (int j = 0; j < 4; ++j) {
        float dot = hsum(a[j]), sq = hsum(s[j]);
        for (size_t t = i; t < d; ++t) {
          const float x = scalarAt<T>(k[j], t);
          dot += q[t] * x;
          sq += x * x;
        }
        out[r + j] = dot;
        if (sumSquares) sumSquares[r + j] = sq;
      }
    }
    for (; r < count; ++r) {
      const void* k0 = base + r * rowBytes;
      float dot = 0.0f, sq = 0.0f;
      for (size_t t = 0; t < d; ++t) {
        const float x = scalarAt<T>(k0, t);
        dot += q[t] * x;
        sq += x * x;
      }
      out[r] = dot;
      if (sumSquares) sumSquares[r] = sq;
    }
  }

  static void dotRows(RowType type, const float* q, const void* src, size_t count, size_t d, float* out,
                      float* sumSquares, const char* ahead) {
    switch (type) {
      case RowType::Float16: dotRowsT<RowType::Float16>(q, src, count, d, out, sumSquares, ahead); break;
      case RowType::BFloat16: dotRowsT<RowType::BFloat16>(q, src, count, d, out, sumSquares, ahead); break;
      case RowType::Int8: dotRowsT<RowType::Int8>(q, src, count, d, out, sumSquares, ahead); break;
      case RowType::Float32: dotRowsT<RowType::Float32>(q, src, count, d, out, sumSquares, ahead); break;
    }
  }
  // As PortableRows::interleave16, by 8 x 8 register transposes (unpack, shuffle, permute).
  MNEMONIX_TARGET_AVX2 static void interleave16(const float* tile, size_t d, float* panel) {
    size_t i0 = 0;
    for (; i0 + 8 <= d; i0 += 8) {
      for (size_t half = 0; half < 2; ++half) {
        const float* src = tile + half * 8 * d + i0;
        __m256 r[8];
        for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(src + l * d);
        __m256 t[8], u[8];
        for (int l = 0; l < 8; l += 2) {
          t[l] = _mm256_unpacklo_ps(r[l], r[l + 1]);
          t[l + 1] = _mm256_unpackhi_ps(r[l], r[l + 1]);
        }
        for (int l = 0; l < 8; l += 4) {
          u[l] = _mm256_shuffle_ps(t[l], t[l + 2], 0x44);
          u[l + 1] = _mm256_shuffle_ps(t[l], t[l + 2], 0xEE);
          u[l + 2] = _mm256_shuffle_ps(t[l + 1], t[l + 3], 0x44);
          u[l + 3] = _mm256_shuffle_ps(t[l + 1], t[l + 3], 0xEE);
        }
        float* dst = panel + i0 * 16 + half * 8;
        for (int c = 0; c < 4; ++c) {
          _mm256_storeu_ps(dst + c * 16, _mm256_permute2f128_ps(u[c], u[c + 4], 0x20));
          _mm256_storeu_ps(dst + (c + 4) * 16, _mm256_permute2f128_ps(u[c], u[c + 4], 0x31));
        }
      }
    }
    for (; i0 < d; ++i0)
      for (size_t l = 0; l < 16; ++l) panel[i0 * 16 + l] = tile[l * d + i0];
  }
  MNEMONIX_TARGET_AVX2 static void convert(RowType type, const void* src, size_t count, size_t d, float* dst,
                                           const void* ahead) {
    const size_t rowBytes = d * rowTypeBytes(type);
    for (size_t r = 0; r < count; ++r) {
      prefetchBytes(ahead ? static_cast<const char*>(ahead) + r * rowBytes : nullptr, rowBytes);
      float* out = dst + r * d;
      size_t i = 0;
      if (type == RowType::Float16) {
        const uint16_t* in = static_cast<const uint16_t*>(src) + r * d;
        for (; i + 8 <= d; i += 8)
          _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
        for (; i < d; ++i) out[i] = halfToFloat(in[i]);
      } else if (type == RowType::BFloat16) {
        const uint16_t* in = static_cast<const uint16_t*>(src) + r * d;
        for (; i + 8 <= d; i += 8) {
          const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
          _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
        }
        for (; i < d; ++i) out[i] = bfloat16ToFloat(in[i]);
      } else if (type == RowType::Int8) {
        const int8_t* in = static_cast<const int8_t*>(src) + r * d;
        for (; i + 8 <= d; i += 8) {
          const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i));
          _mm256_storeu_ps(out + i, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)));
        }
        for (; i < d; ++i) out[i] = static_cast<float>(in[i]);
      } else {
        std::memcpy(out, static_cast<const float*>(src) + r * d, d * sizeof(float));
      }
    }
  }
};
#endif

#if MNEMONIX_HAVE_AVX512_PATH
// Avx2Rows::convert of float16 / bfloat16 rows sixteen values per instruction (CPUs with
// AVX-512, cpuHasAvx512): half the conversion's instructions per value.
struct Avx512Rows {
  MNEMONIX_TARGET_AVX512 static void convert16Bit(RowType type, const void* src, size_t count, size_t d, float* dst,
                                                  const void* ahead) {
    const size_t rowBytes = d * 2;
    const bool half = type == RowType::Float16;
    for (size_t r = 0; r < count; ++r) {
      prefetchBytes(ahead ? static_cast<const char*>(ahead) + r * rowBytes : nullptr, rowBytes);
      const uint16_t* in = static_cast<const uint16_t*>(src) + r * d;
      float* out = dst + r * d;
      size_t i = 0;
      for (; i + 16 <= d; i += 16) {
        const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i));
        _mm512_storeu_ps(out + i, half ? _mm512_cvtph_ps(bits)
                                       : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16)));
      }
      for (; i < d; ++i) out[i] = half ? halfToFloat(in[i]) : bfloat16ToFloat(in[i]);
    }
  }
};
#endif

// Whether this CPU (and OS) runs the AVX2 + FMA + F16C kernels; checked once.
inline bool cpuHasAvx2F16c() {
#if MNEMONIX_HAVE_AVX2_PATH
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  return true;  // built with -march supporting them (MNEMONIX_NATIVE on such a machine)
#else
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return has;
#endif
#else
  return false;
#endif
}

// Whether this CPU (and OS) runs the AVX-512 (F, VL, BW, DQ) kernels; checked once.
inline bool cpuHasAvx512() {
#if MNEMONIX_HAVE_AVX512_PATH
  static const bool has = [] {
    __builtin_cpu_init();
    return cpuHasAvx2F16c() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  }();
  return has;
#else
  return false;
#endif
}

#if defined(__GNUC__) || defined(__clang__)
// Eight float32 lanes as a GCC vector: plain C++ that each target clone compiles to its own
// instructions (one AVX register, or two SSE ones in the portable clone).
typedef float Lanes8 __attribute__((vector_size(32)));
typedef int LaneIdx8 __attribute__((vector_size(32)));

MNEMONIX_ALWAYS_INLINE Lanes8 loadLanes8(const float* p) {
  Lanes8 v;
  std::memcpy(&v, p, sizeof(v));  // an unaligned load
  return v;
}

// Pairwise sums in the manner of `hadd`: [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7].
MNEMONIX_ALWAYS_INLINE Lanes8 pairSums(Lanes8 a, Lanes8 b) {
  return __builtin_shuffle(a, b, LaneIdx8{0, 2, 8, 10, 4, 6, 12, 14}) +
         __builtin_shuffle(a, b, LaneIdx8{1, 3, 9, 11, 5, 7, 13, 15});
}

// The lane sums of four vectors, [sum a, sum b, sum c, sum d] in lanes 0..3 and again in 4..7,
// each summed as ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)).
MNEMONIX_ALWAYS_INLINE Lanes8 laneSums4(Lanes8 a, Lanes8 b, Lanes8 c, Lanes8 d) {
  const Lanes8 quads = pairSums(pairSums(a, b), pairSums(c, d));  // [a03 b03 c03 d03 | a47 b47 c47 d47]
  return quads + __builtin_shuffle(quads, LaneIdx8{4, 5, 6, 7, 0, 1, 2, 3});
}

// The lane sum of one vector, in laneSums4's order.
MNEMONIX_ALWAYS_INLINE float laneSum(Lanes8 a) { return laneSums4(a, a, a, a)[0]; }

// out[0..3] = the four lane sums plus each row's d % 8 tail (k0: the first of four rows, stride d)
MNEMONIX_ALWAYS_INLINE void storeRowSums(Lanes8 sums, const float* q, const float* k0, size_t d, size_t dv,
                                         float* out) {
  if (dv == d) {
    std::memcpy(out, &sums, 4 * sizeof(float));
    return;
  }
  for (int t = 0; t < 4; ++t) {
    float total = sums[t];
    for (size_t i = dv; i < d; ++i) total += q[i] * k0[t * d + i];
    out[t] = total;
  }
}

// out[0..3] = the four lane sums plus each row's d % 8 tail of squares (k0: the first of four
// rows, stride d)
MNEMONIX_ALWAYS_INLINE void storeRowSquares(Lanes8 sums, const float* k0, size_t d, size_t dv, float* out) {
  for (int t = 0; t < 4; ++t) {
    float total = sums[t];
    for (size_t i = dv; i < d; ++i) total += k0[t * d + i] * k0[t * d + i];
    out[t] = total;
  }
}

// Dot products of NQ queries (rows of q, stride d) with `count` tile rows (stride d), written
// to out[j * outStride + r]. Register blocks of NQ queries x 4 rows: 8-lane partial sums over
// d, then one shuffle tree for the four rows' totals (a horizontal sum per dot product would
// cost as much as the products at d = 32), then the d % 8 tail. Every row's sum has the same
// order whatever NQ and its position, so results do not depend on the batch. `ahead` (or
// nullptr) is prefetched, rowBytes per tile row. Squares (with NQ = 1): the second register
// block sums each row's squares instead, written to out[outStride + r] (squaresBlock's
// values, in the same pass over the rows).
template <int NQ, bool Squares = false>
MNEMONIX_ALWAYS_INLINE void dotBlock(const float* q, size_t d, const float* tile, size_t count, float* out,
                                     size_t outStride, const char* ahead, size_t rowBytes) {
  static_assert(NQ == 1 || NQ == 2, "one or two queries per register block");
  static_assert(!Squares || NQ == 1, "squares take the second query's registers");
  const size_t dv = d & ~size_t(7);
  const float* qb = q + (NQ == 2 ? d : 0);
  size_t r = 0;
  if constexpr (NQ == 1 && !Squares) {
    // One query: eight rows per pass, eight independent sums. Four would leave each FMA waiting
    // on the one before it in its sum (latency-bound at half the FMA rate); each row's sum keeps
    // the same order, so the bits are the four-row loop's.
    for (; r + 8 <= count; r += 8) {
      const float* k0 = tile + r * d;
      const float* k4 = k0 + 4 * d;
      if (ahead) prefetchBytes(ahead + r * rowBytes, 8 * rowBytes);
      Lanes8 a0 = {}, a1 = {}, a2 = {}, a3 = {}, a4 = {}, a5 = {}, a6 = {}, a7 = {};
      for (size_t i = 0; i < dv; i += 8) {
        const Lanes8 qa = loadLanes8(q + i);
        a0 += qa * loadLanes8(k0 + i);
        a1 += qa * loadLanes8(k0 + d + i);
        a2 += qa * loadLanes8(k0 + 2 * d + i);
        a3 += qa * loadLanes8(k0 + 3 * d + i);
        a4 += qa * loadLanes8(k4 + i);
        a5 += qa * loadLanes8(k4 + d + i);
        a6 += qa * loadLanes8(k4 + 2 * d + i);
        a7 += qa * loadLanes8(k4 + 3 * d + i);
      }
      storeRowSums(laneSums4(a0, a1, a2, a3), q, k0, d, dv, out + r);
      storeRowSums(laneSums4(a4, a5, a6, a7), q, k4, d, dv, out + r + 4);
    }
  }
  for (; r + 4 <= count; r += 4) {
    const float* k0 = tile + r * d;
    if (ahead) prefetchBytes(ahead + r * rowBytes, 4 * rowBytes);
    Lanes8 a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
    for (size_t i = 0; i < dv; i += 8) {
      const Lanes8 x0 = loadLanes8(k0 + i), x1 = loadLanes8(k0 + d + i), x2 = loadLanes8(k0 + 2 * d + i),
                   x3 = loadLanes8(k0 + 3 * d + i), qa = loadLanes8(q + i);
      a0 += qa * x0;
      a1 += qa * x1;
      a2 += qa * x2;
      a3 += qa * x3;
      if constexpr (NQ == 2 || Squares) {
        const Lanes8 qbi = NQ == 2 ? loadLanes8(qb + i) : Lanes8{};
        b0 += (Squares ? x0 : qbi) * x0;
        b1 += (Squares ? x1 : qbi) * x1;
        b2 += (Squares ? x2 : qbi) * x2;
        b3 += (Squares ? x3 : qbi) * x3;
      }
    }
    storeRowSums(laneSums4(a0, a1, a2, a3), q, k0, d, dv, out + r);
    if constexpr (NQ == 2) storeRowSums(laneSums4(b0, b1, b2, b3), qb, k0, d, dv, out + outStride + r);
    if constexpr (Squares) storeRowSquares(laneSums4(b0, b1, b2, b3), k0, d, dv, out + outStride + r);
  }
  for (; r < count; ++r) {  // the last rows, one at a time, summed in the same order
    const float* k0 = tile + r * d;
    for (int j = 0; j < (Squares ? 2 : NQ); ++j) {
      const float* qj = Squares && j == 1 ? k0 : q + j * d;
      Lanes8 acc = {};
      for (size_t i = 0; i < dv; i += 8) acc += loadLanes8(qj + i) * loadLanes8(k0 + i);
      float total = laneSum(acc);
      for (size_t i = dv; i < d; ++i) total += qj[i] * k0[i];
      out[j * outStride + r] = total;
    }
  }
}

// Sums of squares of `count` rows (stride d) into out[r]: four rows at a time, 8-lane partial
// sums and one shuffle tree (dotBlock's shape, for a key's own norm).
MNEMONIX_ALWAYS_INLINE void squaresBlock(const float* tile, size_t d, size_t count, float* out) {
  const size_t dv = d & ~size_t(7);
  size_t r = 0;
  for (; r + 4 <= count; r += 4) {
    const float* k0 = tile + r * d;
    Lanes8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (size_t i = 0; i < dv; i += 8) {
      const Lanes8 x0 = loadLanes8(k0 + i), x1 = loadLanes8(k0 + d + i), x2 = loadLanes8(k0 + 2 * d + i),
                   x3 = loadLanes8(k0 + 3 * d + i);
      a0 += x0 * x0;
      a1 += x1 * x1;
      a2 += x2 * x2;
      a3 += x3 * x3;
    }
    storeRowSquares(laneSums4(a0, a1, a2, a3), k0, d, dv, out + r);
  }
  for (; r < count; ++r) {
    const float* k0 = tile + r * d;
    Lanes8 acc = {};
    for (size_t i = 0; i < dv; i += 8) acc += loadLanes8(k0 + i) * loadLanes8(k0 + i);
    float total = laneSum(acc);
    for (size_t i = dv; i < d; ++i) total += k0[i] * k0[i];
    out[r] = total;
  }
}
#else
#error "mnemonix's CPU kernels need GCC or Clang vector extensions"
#endif

}  // namespace rows
}  // namespace mnemonix
