// Shared pieces of the fused CPU retrieval's scans (retrieval.hpp, lanes.hpp): the polynomial
// exp, the online-softmax state of a range of stored patterns and its per-tile update, and the
// tile height.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "common/rows.hpp"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__)
#define MNEMONIX_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MNEMONIX_SIMD_CLONES
#endif
// MNEMONIX_ALWAYS_INLINE (common/rows.hpp): helpers are inlined into each clone

namespace mnemonix {
namespace retrieval {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The constants of the Cephes expf polynomial (expNonPositive here; the AMX kernel's 16-lane
// exp16, retrieval_amx/tiles.hpp): exp(x) = 2^n (1 + r + r^2 p(r)), n = round(x / ln 2),
// r = x - n ln 2 (ln 2 in two parts), p of degree 5, x clamped at kExpMin.
constexpr float kExpMin = -87.0f;
constexpr float kExpShifter = 12582912.0f;  // 1.5 * 2^23: t + kExpShifter rounds t to an integer
constexpr float kExpLog2e = 1.44269504088896341f;
constexpr float kExpLn2Hi = 0.693359375f, kExpLn2Lo = 2.12194440e-4f;  // ln 2 = kExpLn2Hi - kExpLn2Lo
constexpr float kExpPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                               4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

// exp(x) for x <= 0 (Cephes expf polynomial, ~1 ulp), exactly 0 below -87 and for -inf.
// Branch-free plain arithmetic so that the `omp simd` loops calling it vectorise: the power of
// two is rounded with the 1.5 * 2^23 shifter (adds, no floor: SSE2 has no vector floor, and a
// scalar floor or a select on an integer kept GCC 12 from vectorising the softmax loop).
MNEMONIX_ALWAYS_INLINE float expNonPositive(float x) {
  const float xc = x < kExpMin ? kExpMin : x;  // maxps: also maps -inf to -87
  const float shifted = xc * kExpLog2e + kExpShifter;
  const float n = shifted - kExpShifter;  // round(x / ln 2), in [-126, 0]
  const float r = xc - n * kExpLn2Hi + n * kExpLn2Lo;
  float p = kExpPoly[0];
  p = p * r + kExpPoly[1];
  p = p * r + kExpPoly[2];
  p = p * r + kExpPoly[3];
  p = p * r + kExpPoly[4];
  p = p * r + kExpPoly[5];
  const float y = p * r * r + r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof(bits));  // the low mantissa bits of `shifted` hold n
  bits = (bits - 0x4B400000 + 127) << 23;      // 0x4B400000: the bits of kExpShifter
  // below -87 (and -inf) the scale becomes +0 by a mask, not a select: GCC 12 turns a select
  // (or a multiply by the comparison) into a branch, which stops the vectoriser
  bits &= -static_cast<int32_t>(x >= kExpMin);
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

// Softmax state of one query over one range of stored patterns.
struct Partial {
  std::vector<float> m, l, acc;  // [B], [B], [B * dv]
  std::vector<int64_t> arg;      // [B]
  float scoreZeros = 0.0f;       // sum of score * 0 over the range: NaN iff a score was NaN or +-inf
  void reset(size_t batch, size_t dv) {
    m.assign(batch, kNegInf);
    l.assign(batch, 0.0f);
    acc.assign(batch * dv, 0.0f);
    arg.assign(batch, 0);
    scoreZeros = 0.0f;
  }
};

// Query b's new running max after a tile whose largest score is tileMax; when it beats the old
// one (rare after the first tiles), its first index among the tile's scores s[0], s[stride],
// ... (keys t0..) becomes the argmax. The state's max itself moves in foldTile.
MNEMONIX_ALWAYS_INLINE float raiseMax(Partial& part, size_t b, float tileMax, const float* s, size_t stride,
                                      size_t t0) {
  if (tileMax > part.m[b]) {
    size_t j = 0;
    while (s[j * stride] != tileMax) ++j;
    part.arg[b] = static_cast<int64_t>(t0 + j);
  }
  return std::max(part.m[b], tileMax);
}

// Folds a tile's weights exp(s - mNew), summing to `sum`, into query b's state: the accumulator
// and sum rescaled to the new max when it rose, then the new max (mNew > -inf: a query whose
// scores are all -inf so far takes no weight).
MNEMONIX_ALWAYS_INLINE void foldTile(Partial& part, size_t b, size_t dv, float mNew, float sum) {
  const float mOld = part.m[b];
  if (mNew > mOld) {
    const float alpha = (mOld == kNegInf) ? 0.0f : std::exp(mOld - mNew);
    float* acc = part.acc.data() + b * dv;
#pragma omp simd
    for (size_t i = 0; i < dv; ++i) acc[i] *= alpha;
    part.l[b] *= alpha;
  }
  part.l[b] += sum;
  part.m[b] = mNew;
}

// Rows per tile: the tile (rows x d floats) should stay in the per-core cache while it is
// used for the scores of every query and then for the weighted sums.
inline size_t tileRows(size_t d) {
  size_t rows = (128 * 1024) / (std::max<size_t>(d, 1) * sizeof(float));
  rows = std::max<size_t>(4, std::min<size_t>(64, rows));
  return rows & ~size_t(3);
}

}  // namespace retrieval
}  // namespace mnemonix
