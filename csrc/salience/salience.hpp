// Exact top-k salience recall on the CPU, fused: value checks, selection and the outputs in one
// call. Header-only core, no Python, no torch. The math of DESIGN.md's op 2, in float64 like
// the definition (python/mnemonix/reference.py's salience_topk), for every key:
//
//   cos[b, m] = (q_b . c_m) / (||q_b|| ||c_m||)   (0 when a norm is 0; sums over d in one
//                                                   fixed order, so equal keys tie exactly)
//   rank of m for query b: the real number cos * exp(log_s_m), compared without forming it
//   (it underflows): sign first, then log|cos| + log_s_m (larger wins for cos > 0, smaller
//   for cos < 0); equal values go to the lower index.
//   w_i = softmax(log_s) over the selected k, score_i = cos_i * exp(log_s_i - shift) with
//   shift = max over valid log_s, recall_b = sum_i w_i z_i (summed in float64).
//
// Exact in one pass: a float32 screen (SIMD dot products, the float32 backends' score) skips a
// key only when its screen score plus a proven error bound is below the k-th exact score so far;
// every other key is scored in float64 and offered to the running top k. So the result is the
// definition's whatever the data, with float64 work only for the few keys that come close.
// Queries are independent: OpenMP over ranges of queries once a call is large enough to pay for
// the threads, each range passing over cache-sized blocks of keys; results do not depend on the
// thread count, the blocking or the batch (batch-invariant).
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

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

// float32 sums of x.y over d for the screen (any order keeps its bound): eight partial sums, so
// the compiler keeps them in one vector register (8-wide with AVX2, two 4-wide with SSE) and
// ends with a short fixed tree, not a serial horizontal sum.
MNEMONIX_IN_CLONES inline float dot32(const float* x, const float* y, size_t d) {
  float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  size_t j = 0;
  for (; j + 8 <= d; j += 8)
    for (size_t l = 0; l < 8; ++l) acc[l] += x[j + l] * y[j + l];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; j < d; ++j) s += x[j] * y[j];
  return s;
}

MNEMONIX_IN_CLONES inline float squares32(const float* x, size_t d) { return dot32(x, x, d); }

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

// 2^-i for i in 0..127: the integer part of expScreen's power of two (a table lookup vectorises
// as a gather, a double-to-int64 bit trick would not before AVX-512).
struct Pow2Table {
  double v[128];
  Pow2Table() {
    for (int i = 0; i < 128; ++i) v[i] = std::ldexp(1.0, -i);
  }
};
inline const Pow2Table kPow2;

// exp(x) for x in [-81, 0], relative error < 2e-9 (a float32 factor needs 6e-8): 2^-i * e^y with
// |y| <= ln(2) / 2 and a degree-8 Taylor sum; no libm call and no branch, so the key loop
// vectorises.
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
  return p * kPow2.v[static_cast<int>(-n)];
}

// Entries [lo, hi) of the screen of keys [m0, m1) (`bs` already sized; lo a multiple of kGroup,
// so that threads filling separate ranges never share a group's flag).
MNEMONIX_IN_CLONES inline bool screenRange(const Recall& r, const double* logS, double shift, size_t m0, size_t lo,
                                           size_t hi, BlockScreen& bs) {
  float* weight = bs.weight.data();
  for (size_t i = lo; i < hi; ++i) {  // squared norms, checks, exact-only keys (weight: the square)
    if (!isValid(r, m0 + i)) continue;
    const float sq = squares32(r.keys + (m0 + i) * r.d, r.d);
    if (r.check && !(sq <= FLT_MAX)) return false;
    const bool exact = !(sq >= kScreenMinSquares && sq <= FLT_MAX);
    bs.exactOnly[i] = exact;
    bs.groupExact[i / kGroup] |= exact;
    weight[i] = exact ? 0.0f : sq;
  }
  const double* ls = logS + m0;
#pragma omp simd
  for (size_t i = lo; i < hi; ++i) {  // exp(log_s - shift) / ||c||: 0 below exp(-80) (the float32 backends')
    const double rel = std::min(0.0, std::max(ls[i] - shift, kNegligibleLog - 1.0));  // (invalid keys: > 0)
    const float scale = rel >= kNegligibleLog ? static_cast<float>(expScreen(rel)) : 0.0f;
    const float sq = weight[i];
    const float inv = 1.0f / std::sqrt(sq > 0.0f ? sq : 1.0f);
    weight[i] = sq > 0.0f ? scale * inv : 0.0f;
  }
  return true;
}

inline void sizeScreen(size_t width, BlockScreen& bs) {
  bs.weight.assign(width, 0.0f);
  bs.exactOnly.assign(width, 1);
  bs.groupExact.assign((width + kGroup - 1) / kGroup, 0);
}

MNEMONIX_IN_CLONES inline bool screenBlock(const Recall& r, const double* logS, double shift, size_t m0, size_t m1,
                                           BlockScreen& bs) {
  sizeScreen(m1 - m0, bs);
  return screenRange(r, logS, shift, m0, 0, m1 - m0, bs);
}

// screenBlock over OpenMP threads (ranges of whole groups) once the block is large.
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

struct Rank {  // the order of cos * exp(log_s): sign, then the signed log-magnitude, then -index
  int sign;
  double mag;
  int64_t index;
  double cos;
};

inline bool better(const Rank& a, const Rank& b) {
  if (a.sign != b.sign) return a.sign > b.sign;
  if (a.mag != b.mag) return a.mag > b.mag;
  return a.index < b.index;
}

inline Rank rankOf(double cos, double logS, int64_t index) {
  if (cos > 0.0) return Rank{1, std::log(cos) + logS, index, cos};
  if (cos < 0.0) return Rank{-1, -(std::log(-cos) + logS), index, cos};
  return Rank{0, 0.0, index, cos};  // NaN (unchecked input) lands here too: any order is safe
}

inline double cosine(double dot, double qNorm, double cSq) {
  const double denom = qNorm * std::sqrt(cSq);
  if (!(denom > 0.0)) return 0.0;
  return std::min(1.0, std::max(-1.0, dot / denom));
}

// Insert `cand` into the sorted list `best` (at most k entries, best first) if it belongs there.
inline void offer(std::vector<Rank>& best, size_t k, const Rank& cand) {
  if (best.size() == k && !better(cand, best.back())) return;
  auto at = std::upper_bound(best.begin(), best.end(), cand, better);
  if (best.size() == k) best.pop_back();
  best.insert(at, cand);
}

// The exact rank of key m for a query: float64 sums over d in one fixed order for every key (four
// interleaved partial sums, then a fixed tree: not latency-bound at large d), so equal keys tie
// exactly wherever they are.
inline Rank exactRank(const Recall& r, const double* logS, const float* q, double qNorm, size_t m) {
  const float* c = r.keys + m * r.d;
  double dot[4] = {0.0, 0.0, 0.0, 0.0}, sq[4] = {0.0, 0.0, 0.0, 0.0};
  size_t j = 0;
  for (; j + 4 <= r.d; j += 4)
    for (size_t l = 0; l < 4; ++l) {
      dot[l] += static_cast<double>(q[j + l]) * static_cast<double>(c[j + l]);
      sq[l] += static_cast<double>(c[j + l]) * static_cast<double>(c[j + l]);
    }
  double dotSum = (dot[0] + dot[1]) + (dot[2] + dot[3]), cSq = (sq[0] + sq[1]) + (sq[2] + sq[3]);
  for (; j < r.d; ++j) {
    dotSum += static_cast<double>(q[j]) * static_cast<double>(c[j]);
    cSq += static_cast<double>(c[j]) * static_cast<double>(c[j]);
  }
  return rankOf(cosine(dotSum, qNorm, cSq), logS[m], static_cast<int64_t>(m));
}

// One query's running selection: the exact best k so far, and the k-th's relative score.
struct QueryState {
  std::vector<Rank> best;
  double qNorm = 0.0;    // float64, as the definition
  float qInv = 0.0f;     // float32 1 / ||q|| for the screen
  bool screen = false;   // the query's norm is in the screen's range
  double kth = -INFINITY;  // relative score of the k-th entry once the list is full
};

inline void startQuery(const Recall& r, size_t b, QueryState& st) {
  const float* q = r.queries + b * r.d;
  double qSq = 0.0;
  for (size_t j = 0; j < r.d; ++j) qSq += static_cast<double>(q[j]) * static_cast<double>(q[j]);
  st.qNorm = std::sqrt(qSq);
  const float sq = squares32(q, r.d);
  st.screen = sq >= kScreenMinSquares && sq <= FLT_MAX;
  st.qInv = st.screen ? 1.0f / std::sqrt(sq) : 0.0f;
  st.best.clear();
  st.kth = -INFINITY;
}

// Key m for one query: screened in float32 (`dot`: its float32 dot product) once the list is
// full; if it survives (or the screen cannot bound it), scored exactly and offered.
MNEMONIX_IN_CLONES inline void offerKey(const Recall& r, const double* logS, double shift, const BlockScreen& bs, double bound,
                     const float* q, size_t m, size_t m0, float dot, bool screening, QueryState& st) {
  if (screening && !bs.exactOnly[m - m0] &&
      static_cast<double>(dot * bs.weight[m - m0] * st.qInv) + bound < st.kth)
    return;
  const size_t before = st.best.size();
  const int64_t last = before ? st.best.back().index : -1;
  offer(st.best, r.k, exactRank(r, logS, q, st.qNorm, m));
  if (st.best.size() == r.k && (before < r.k || st.best.back().index != last)) {
    const Rank& kth = st.best.back();
    st.kth = kth.cos * std::exp(logS[kth.index] - shift);
  }
}

// Keys [m0, m1) (screened in `bs`) for one query, in groups of kGroup: once the list is full, a
// group whose largest float32 score plus the bound is below the k-th exact score is skipped
// whole (one vectorised max); the keys of other groups go through offerKey. A key is only ever skipped when its exact score is below the k-th.
// `dots` [m1 - m0]: the query's float32 dot products with these keys computed elsewhere (a GEMM:
// any summation order keeps the bound), or null to compute them here.
MNEMONIX_IN_CLONES inline void scanKeys(const Recall& r, const double* logS, double shift, const BlockScreen& bs, double bound,
                     size_t b, size_t m0, size_t m1, QueryState& st, const float* dots = nullptr) {
  const float* q = r.queries + b * r.d;
  float local[kGroup];
  for (size_t g0 = m0; g0 < m1; g0 += kGroup) {
    const size_t width = std::min(m1 - g0, kGroup);
    const bool screening = st.best.size() == r.k && st.screen;
    const float* dg = dots != nullptr ? dots + (g0 - m0) : local;
    if (dots == nullptr && screening)
      for (size_t i = 0; i < width; ++i) local[i] = dot32(q, r.keys + (g0 + i) * r.d, r.d);
    if (screening && !bs.groupExact[(g0 - m0) / kGroup]) {
      const float* weight = bs.weight.data() + (g0 - m0);
      float top = -FLT_MAX;  // invalid keys (weight 0) count as score 0: never a wrong skip
#pragma omp simd reduction(max : top)
      for (size_t i = 0; i < width; ++i) top = std::max(top, dg[i] * weight[i]);
      if (static_cast<double>(top * st.qInv) + bound < st.kth) continue;
    }
    for (size_t i = 0; i < width; ++i)
      if (isValid(r, g0 + i))
        offerKey(r, logS, shift, bs, bound, q, g0 + i, m0, screening ? dg[i] : 0.0f,
                 screening && st.best.size() == r.k, st);
  }
}

// Outputs of one query from its selection; false when a selected payload row is not finite.
inline bool writeQuery(const Recall& r, const double* logS, double shift, size_t b, const std::vector<Rank>& best) {
  const size_t take = best.size();
  double top = -INFINITY, total = 0.0;
  for (const Rank& x : best) top = std::max(top, logS[x.index]);
  std::vector<double> w(take);
  for (size_t i = 0; i < take; ++i) total += (w[i] = std::exp(logS[best[i].index] - top));
  for (size_t i = 0; i < r.k; ++i) {
    const bool used = i < take;
    r.indices[b * r.k + i] = used ? best[i].index : -1;
    r.weights[b * r.k + i] = used ? static_cast<float>(w[i] / total) : 0.0f;
    r.scores[b * r.k + i] =
        used ? static_cast<float>(best[i].cos * std::exp(logS[best[i].index] - shift)) : -INFINITY;
  }
  if (r.recall == nullptr) return true;
  bool finite = true;
  for (size_t j = 0; j < r.dz; ++j) {
    double acc = 0.0;
    for (size_t i = 0; i < take; ++i) {
      const float z = r.payloads[static_cast<size_t>(best[i].index) * r.dz + j];
      finite &= std::isfinite(z);
      acc += (w[i] / total) * static_cast<double>(z);
    }
    r.recall[b * r.dz + j] = static_cast<float>(acc);
  }
  return finite || !r.check;
}

// One thread's share: queries [b0, b1) over keys [m0, m1), in cache-sized key blocks; each
// query's running list lands in states[b]. False when a checked key fails (kKeys).
MNEMONIX_SIMD_CLONES inline bool scanShare(const Recall& r, const double* logS, double shift, size_t b0, size_t b1, size_t m0, size_t m1,
                      std::vector<QueryState>& states) {
  const double bound = screenBound(r.d);
  const size_t block = std::max<size_t>(16, (64u << 10) / (4 * r.d + 1));  // ~64 kB of keys
  for (size_t b = b0; b < b1; ++b) {
    states[b].best.reserve(r.k + 1);
    startQuery(r, b, states[b]);
  }
  BlockScreen bs;
  for (size_t k0 = m0; k0 < m1; k0 += block) {
    const size_t k1 = std::min(m1, k0 + block);
    if (!screenBlock(r, logS, shift, k0, k1, bs)) return false;
    for (size_t b = b0; b < b1; ++b) scanKeys(r, logS, shift, bs, bound, b, k0, k1, states[b]);
  }
  return true;
}

// The whole recall; kNone, or the first failed check (outputs then unspecified: the caller
// discards them). Large calls run on OpenMP threads: each takes a range of the queries, or, with
// fewer queries than threads, a range of the keys (the threads' exact lists are merged after).
inline Fault recall(const Recall& r, const double* logS) {
  if (r.check) {
    const Fault f = checkInputs(r, logS);
    if (f != kNone) return f;
  }
  double shift = -INFINITY;
  for (size_t m = 0; m < r.n; ++m)
    if (isValid(r, m)) shift = std::max(shift, logS[m]);
  const bool parallel = static_cast<double>(r.batch) * static_cast<double>(r.n) * static_cast<double>(r.d) > 4e6;
  size_t most = 1;
#ifdef _OPENMP
  if (parallel) most = static_cast<size_t>(std::max(1, omp_get_max_threads()));
#endif
  std::vector<std::vector<QueryState>> states(most, std::vector<QueryState>(r.batch));
  std::vector<uint8_t> keysOk(most, 1);
#pragma omp parallel num_threads(static_cast<int>(most)) if (parallel)
  {
    size_t t = 0, threads = 1;
#ifdef _OPENMP
    t = static_cast<size_t>(omp_get_thread_num());
    threads = static_cast<size_t>(omp_get_num_threads());
#endif
    const bool byKeys = r.batch < threads;
    const size_t b0 = byKeys ? 0 : r.batch * t / threads, b1 = byKeys ? r.batch : r.batch * (t + 1) / threads;
    const size_t m0 = byKeys ? r.n * t / threads : 0, m1 = byKeys ? r.n * (t + 1) / threads : r.n;
    keysOk[t] = scanShare(r, logS, shift, b0, b1, m0, m1, states[t]);
  }
  for (uint8_t ok : keysOk)
    if (!ok) return kKeys;
  bool payloadsFinite = true;
  std::vector<Rank> merged;
  for (size_t b = 0; b < r.batch; ++b) {
    merged.clear();
    for (auto& share : states) merged.insert(merged.end(), share[b].best.begin(), share[b].best.end());
    std::sort(merged.begin(), merged.end(), better);  // exact lists of disjoint keys: the exact top k
    if (merged.size() > r.k) merged.resize(r.k);
    payloadsFinite = writeQuery(r, logS, shift, b, merged) && payloadsFinite;
  }
  return payloadsFinite ? kNone : kPayloads;
}

// Every query over keys [m0, m1) (screened in `bs`) with their dot products dots [B, m1 - m0].
MNEMONIX_SIMD_CLONES inline void scanRows(const Recall& r, const double* logS, double shift, const BlockScreen& bs,
                                          const float* dots, size_t m0, size_t m1, std::vector<QueryState>& states) {
  const double bound = screenBound(r.d);
  const bool parallel = static_cast<double>(r.batch) * static_cast<double>(m1 - m0) > 2e5;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t b = 0; b < static_cast<int64_t>(r.batch); ++b)
    scanKeys(r, logS, shift, bs, bound, static_cast<size_t>(b), m0, m1, states[static_cast<size_t>(b)],
             dots + static_cast<size_t>(b) * (m1 - m0));
}

// A recall whose float32 dot products come from outside, one chunk of keys at a time (the
// Python backend computes them with torch's GEMM, far faster than this portable build's SIMD at
// large batches): the same screen and exact scoring as recall(), OpenMP over the queries.
class ChunkedRecall {
 public:
  ChunkedRecall(const Recall& r, const double* logS) : r_(r), logS_(logS), states_(r.batch) {
    if (r.check) fault_ = checkInputs(r, logS);
    for (size_t m = 0; m < r.n; ++m)
      if (isValid(r, m)) shift_ = std::max(shift_, logS[m]);
    for (size_t b = 0; b < r.batch; ++b) {
      states_[b].best.reserve(r.k + 1);
      startQuery(r, b, states_[b]);
    }
  }

  Fault fault() const { return fault_; }

  // Keys [m0, m1) with their dot products dots [B, m1 - m0] (row-major); false once a check failed.
  bool scan(const float* dots, size_t m0, size_t m1) {
    if (fault_ != kNone) return false;
    if (!screenBlockParallel(r_, logS_, shift_, m0, m1, screen_)) {
      fault_ = kKeys;
      return false;
    }
    scanRows(r_, logS_, shift_, screen_, dots, m0, m1, states_);
    return true;
  }

  // Outputs into `out` (r_ with its output buffers); kNone or the first failed check.
  Fault finish(const Recall& out) {
    if (fault_ != kNone) return fault_;
    bool payloadsFinite = true;
    for (size_t b = 0; b < out.batch; ++b) payloadsFinite = writeQuery(out, logS_, shift_, b, states_[b].best) && payloadsFinite;
    return payloadsFinite ? kNone : kPayloads;
  }

 private:
  Recall r_;
  const double* logS_;
  std::vector<QueryState> states_;
  BlockScreen screen_;
  double shift_ = -INFINITY;
  Fault fault_ = kNone;
};

}  // namespace salience
}  // namespace mnemonix
