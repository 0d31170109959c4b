// The inputs of a salience recall (borrowed buffers, value checks, log-salience) and its float32
// screen: per key the weight exp(log_s - shift) / ||c|| and the squared norm, and the proven
// bound on the screen's error (the dot products of queries with a block of keys are
// screen_dots.cpp's). Part of salience.hpp's header-only core (no Python, no torch).
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/rows.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

// The float32 screen's loops, compiled for AVX2 too and picked at load time (GCC's ifunc target
// clones): a portable build that still uses 8-wide vectors (an AVX-512 clone measured 2x slower
// on the development machine). The float64 scores are sums in one fixed order without contraction
// in every clone: the same bits.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MNEMONIX_SIMD_CLONES __attribute__((target_clones("avx2", "default"), noinline))
#define MNEMONIX_IN_CLONES __attribute__((always_inline))  // compiled inside each clone
#else
#define MNEMONIX_SIMD_CLONES
#define MNEMONIX_IN_CLONES
#endif

namespace mnemonix {
namespace salience {

// The first failed value check, in the order the Python op checks them. The Python side
// maps each code to the general path's error (the fast path falls back to it instead).
enum Fault : int {
  kNone = 0,
  kLogSalience = 1,  // a NaN / Inf log-salience
  kR0 = 2,           // a NaN / Inf r0
  kTau = 3,          // a NaN / Inf tau
  kR0NotPositive = 4,
  kKeyNorms = 5,     // a NaN / Inf / negative cached key norm
  kQueries = 6,      // a NaN / Inf query
  kKeys = 7,         // a NaN / Inf valid key, or a squared norm beyond float32
  kPayloads = 8,     // a NaN / Inf value in a selected payload row
};

struct Recall {  // borrowed input and output buffers, row-major
  const float* queries;    // [B, d]
  const float* keys;       // [N, d]
  const float* payloads;   // [N, dz] or null
  const bool* valid;       // [N] or null (every slot valid)
  const double* keyNorms;  // [N] or null: only checked (the kernel computes norms in float64)
  size_t batch, d, n, dz, k;
  bool check;
  int64_t* indices;  // [B, k]
  float* weights;    // [B, k]
  float* scores;     // [B, k]
  float* recall;     // [B, dz] or null
};

inline bool isValid(const Recall& r, size_t m) { return r.valid == nullptr || r.valid[m]; }

// log s_m = log r0_m - alpha * (latest - tau_m), latest = the largest valid tau (every tau when
// no slot is valid): the op's _log_salience, ages measured from the latest store time.
inline Fault logSalienceOf(const double* r0, const double* tau, double alpha, const bool* valid, size_t n,
                           bool check, double* logS) {
  if (check) {
    for (size_t m = 0; m < n; ++m)
      if (!std::isfinite(r0[m])) return kR0;
    for (size_t m = 0; m < n; ++m)
      if (!std::isfinite(tau[m])) return kTau;
    for (size_t m = 0; m < n; ++m)
      if (!(r0[m] > 0.0)) return kR0NotPositive;
  }
  double latest = -INFINITY, latestValid = -INFINITY;
  for (size_t m = 0; m < n; ++m) {
    latest = std::max(latest, tau[m]);
    if (valid == nullptr || valid[m]) latestValid = std::max(latestValid, tau[m]);
  }
  if (latestValid != -INFINITY) latest = latestValid;
  for (size_t m = 0; m < n; ++m) logS[m] = std::log(r0[m]) - alpha * (latest - tau[m]);
  return kNone;
}

// Every value check that needs no selection: log-salience, cached norms, queries, valid keys.
inline Fault checkInputs(const Recall& r, const double* logS) {
  for (size_t m = 0; m < r.n; ++m)
    if (!std::isfinite(logS[m])) return kLogSalience;
  if (r.keyNorms != nullptr)
    for (size_t m = 0; m < r.n; ++m)
      if (!(r.keyNorms[m] >= 0.0 && r.keyNorms[m] < INFINITY)) return kKeyNorms;
  for (size_t i = 0; i < r.batch * r.d; ++i)
    if (!std::isfinite(r.queries[i])) return kQueries;
  return kNone;
}

// float32 sums of squares for the screen (any order keeps its bound), in rows.hpp's shuffle-tree
// order.
MNEMONIX_IN_CLONES inline float squares32(const float* x, size_t d) {
  float out;
  rows::squaresBlock(x, d, 1, &out);
  return out;
}

constexpr float kScreenMinSquares = 1e-30f;
constexpr double kNegligibleLog = -80.0;  // backends/salience_exact.py's NEGLIGIBLE_LOG

// The float32 screen of keys [m0, m1): exp(log_s_m - shift) / ||c_m||, and whether the key must always be scored
// exactly (a squared norm under 1e-30 or beyond float32: the screen's error bound needs neither
// underflow nor overflow). Computed per cache-sized block, just before the queries pass over it.
// False when checked and a valid key is NaN / Inf or its float32 squared norm overflows (the
// float32 backends raise on it): kKeys.
constexpr size_t kGroup = 16;  // keys screened together: one vectorised max decides most groups

struct BlockScreen {
  std::vector<float> weight;         // exp(log_s - shift) / ||c||: score = dot * weight / ||q||
                                     // (0 for invalid keys: they never raise a group's maximum)
  std::vector<uint8_t> exactOnly;
  std::vector<uint8_t> groupExact;  // per group of kGroup keys from m0: holds a valid exact-only key
};

// exp(x) for x in [-81, 0], relative error < 2e-9 (a float32 factor needs 6e-8): 2^n * e^y with
// |y| <= ln(2) / 2 and a degree-8 Taylor sum; no libm call and no branch, so the key loop
// vectorises. 2^n comes from the bits: n + 1.5 * 2^52 holds the integer n in its low mantissa
// bits, and (those bits + 1023) << 52 is 2^n's pattern, the rest shifting out (unsigned: it
// wraps). A table of 2^-i would need a gather, which kept GCC from vectorising the loop.
MNEMONIX_IN_CLONES inline double expScreen(double x) {
  const double t = x * 1.4426950408889634;  // log2(e); t in [-117, 0]
  const double n = std::floor(t + 0.5);
  const double y = (t - n) * 0.6931471805599453;
  double p = 1.0 / 40320.0;
  p = p * y + 1.0 / 5040.0;
  p = p * y + 1.0 / 720.0;
  p = p * y + 1.0 / 120.0;
  p = p * y + 1.0 / 24.0;
  p = p * y + 1.0 / 6.0;
  p = p * y + 0.5;
  p = p * y + 1.0;
  p = p * y + 1.0;
  const double shifted = n + 6755399441055744.0;
  uint64_t bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  bits = (bits + 1023u) << 52;
  double two;
  std::memcpy(&two, &bits, sizeof(two));
  return p * two;
}

// Entries [lo, hi) of the screen of keys [m0, m1) from their float32 squared norms squares[lo, hi)
// (block-relative, like bs; may be bs.weight itself): checks, exact-only keys, weights.
MNEMONIX_IN_CLONES inline bool screenFromSquares(const Recall& r, const double* logS, double shift, size_t m0,
                                                 size_t lo, size_t hi, const float* squares, BlockScreen& bs) {
  float* weight = bs.weight.data();
  uint8_t* exactOnly = bs.exactOnly.data();
  const bool* valid = r.valid == nullptr ? nullptr : r.valid + m0;
  uint8_t bad = 0;  // a valid key's squared norm beyond float32 (or NaN)
  for (size_t g0 = lo; g0 < hi;) {  // checks, exact-only keys (weight: the squared norm), a group at a time
    const size_t g1 = std::min(hi, (g0 / kGroup + 1) * kGroup);
    uint8_t groupExact = 0;
#pragma omp simd reduction(| : groupExact, bad)
    for (size_t i = g0; i < g1; ++i) {
      const float sq = squares[i];
      const uint8_t in = valid == nullptr ? 1 : valid[i];
      const uint8_t exact = !(sq >= kScreenMinSquares && sq <= FLT_MAX);
      bad |= in & !(sq <= FLT_MAX);
      groupExact |= in & exact;
      exactOnly[i] = exact | !in;  // (an invalid key is never offered: any value)
      weight[i] = (in & !exact) ? sq : 0.0f;
    }
    bs.groupExact[g0 / kGroup] |= groupExact;
    g0 = g1;
  }
  if (r.check && bad) return false;
  const double* ls = logS + m0;
  // exp(log_s - shift) / ||c||: 0 below exp(-80) (the float32 backends'). Branch-free, no
  // std::min / std::max of temporaries (they went through memory) and, with bindings.cpp's
  // -fno-math-errno -fno-trapping-math, vectorised: 1.19 -> 0.86 ms at N = 1e5, d = 32, B = 1.
#pragma omp simd
  for (size_t i = lo; i < hi; ++i) {
    double rel = ls[i] - shift;  // (invalid keys: > 0)
    rel = rel > kNegligibleLog - 1.0 ? rel : kNegligibleLog - 1.0;
    rel = rel < 0.0 ? rel : 0.0;
    const float e = static_cast<float>(expScreen(rel));
    const float scale = rel >= kNegligibleLog ? e : 0.0f;
    const float sq = weight[i];
    const float inv = 1.0f / std::sqrt(sq > 0.0f ? sq : 1.0f);
    weight[i] = sq > 0.0f ? scale * inv : 0.0f;
  }
  return true;
}

// Entries [lo, hi) of the screen of keys [m0, m1) (`bs` already sized; lo a multiple of kGroup,
// so that threads filling separate ranges never share a group's flag).
MNEMONIX_IN_CLONES inline bool screenRange(const Recall& r, const double* logS, double shift, size_t m0, size_t lo,
                                           size_t hi, BlockScreen& bs) {
  rows::squaresBlock(r.keys + (m0 + lo) * r.d, r.d, hi - lo, bs.weight.data() + lo);
  return screenFromSquares(r, logS, shift, m0, lo, hi, bs.weight.data(), bs);
}

inline void sizeScreen(size_t width, BlockScreen& bs) {
  bs.weight.assign(width, 0.0f);
  bs.exactOnly.assign(width, 1);
  bs.groupExact.assign((width + kGroup - 1) / kGroup, 0);
}

// The screen of keys [m0, m1) (screenRange), over OpenMP threads (ranges of whole groups) once
// the block is large.
MNEMONIX_SIMD_CLONES inline bool screenBlockParallel(const Recall& r, const double* logS, double shift, size_t m0,
                                                     size_t m1, BlockScreen& bs) {
  sizeScreen(m1 - m0, bs);
  const size_t groups = (m1 - m0 + kGroup - 1) / kGroup, per = 256;  // 4096 keys per task
  bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok) if ((m1 - m0) * r.d > (1u << 18))
  for (int64_t t = 0; t < static_cast<int64_t>((groups + per - 1) / per); ++t) {
    const size_t lo = static_cast<size_t>(t) * per * kGroup, hi = std::min(m1 - m0, lo + per * kGroup);
    ok = screenRange(r, logS, shift, m0, lo, hi, bs) && ok;
  }
  return ok;
}

// Bound on |float32 screen score - exact relative score| (scores <= 1 in magnitude): dot and norm
// rounding, the negligible factors taken as 0; doubled (backends/salience_exact.py's
// score_error_bound). A key whose screen score plus this bound is below the k-th exact score
// cannot enter the top k.
inline double screenBound(size_t d) {
  return 2.0 * ((1.5 * static_cast<double>(d) + 8.0) * 0x1p-24 + 0x1p-17 + std::exp(kNegligibleLog));
}

}  // namespace salience
}  // namespace mnemonix
