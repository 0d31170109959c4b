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
// key only when its screen score plus a proven error bound is below the k-th exact score so far,
// or below the k-th screen score of the keys seen so far minus one bound; every other key is
// scored in float64 and offered to the running top k. So the result is the
// definition's whatever the data, with float64 work only for the few keys that come close.
// Queries are independent: OpenMP over ranges of queries once a call is large enough to pay for
// the threads, each range passing over cache-sized blocks of keys; results do not depend on the
// thread count, the blocking or the batch (batch-invariant). The inputs, the value checks and
// the float32 screen (weights, the error bound) are in screen.hpp, its dot products in
// screen_dots.cpp (compiled with FMA); the selection, the outputs and the threads here.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "common/rows.hpp"
#include "salience/screen.hpp"
#include "salience/screen_dots.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mnemonix {
namespace salience {

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
MNEMONIX_IN_CLONES inline Rank exactRank(const Recall& r, const double* logS, const float* q, double qNorm, size_t m) {
  typedef double Doubles4 __attribute__((vector_size(32)));  // lane l sums the j = l mod 4 terms
  typedef float Floats4 __attribute__((vector_size(16)));
  const float* c = r.keys + m * r.d;
  Doubles4 dot = {}, sq = {};
  size_t j = 0;
  for (; j + 4 <= r.d; j += 4) {
    Floats4 qf, cf;
    std::memcpy(&qf, q + j, sizeof(qf));
    std::memcpy(&cf, c + j, sizeof(cf));
    const Doubles4 qd = __builtin_convertvector(qf, Doubles4), cd = __builtin_convertvector(cf, Doubles4);
    dot += qd * cd;
    sq += cd * cd;
  }
  double dotSum = (dot[0] + dot[1]) + (dot[2] + dot[3]), cSq = (sq[0] + sq[1]) + (sq[2] + sq[3]);
  for (; j < r.d; ++j) {
    dotSum += static_cast<double>(q[j]) * static_cast<double>(c[j]);
    cSq += static_cast<double>(c[j]) * static_cast<double>(c[j]);
  }
  return rankOf(cosine(dotSum, qNorm, cSq), logS[m], static_cast<int64_t>(m));
}

// One query's running selection: the exact best k so far, the k-th's relative score, and the
// float32 screen's candidates (top32[0, held): screen scores above theta, cut back to the k
// largest whenever they reach 2k; theta a lower bound on the k-th largest screen score of the
// valid screenable keys so far, and equal to it after each block's pass).
struct QueryState {
  std::vector<Rank> best;
  std::vector<float> top32;  // room for 2k + kGroup: a group appends before the cut
  size_t held = 0;
  double qNorm = 0.0;    // float64, as the definition
  float qInv = 0.0f;     // float32 1 / ||q|| for the screen
  bool screen = false;   // the query's norm is in the screen's range
  double kth = -INFINITY;  // relative score of the k-th entry once the list is full
  float theta = -INFINITY;  // the k-th largest screen score of the valid screenable keys so far

  // Keys whose screen score plus `bound` is below this cannot enter the top k: below the exact
  // k-th, or below theta - bound, which k seen keys' exact scores reach.
  double cut(double bound) const { return std::max(kth, static_cast<double>(theta) - bound); }
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
  st.best.reserve(r.k + 1);
  st.top32.assign(2 * r.k + kGroup, 0.0f);
  st.held = 0;
  st.kth = -INFINITY;
  st.theta = -INFINITY;
}

// The query's float32 candidates cut to their k largest (std::nth_element), theta raised to the
// k-th. A buffer cut when it holds 2k, in place of a heap: a pop and a push per candidate, and a
// branch per key on whether it is one, were most of the gemm path's selection at N = 1e3,
// B = 1024.
inline void cutScreen(QueryState& st, size_t k) {
  if (st.held < k) return;
  float* top = st.top32.data();
  if (st.held > k) std::nth_element(top, top + (k - 1), top + st.held, std::greater<float>());
  st.theta = std::max(st.theta, *std::min_element(top, top + k));  // (k held: their least)
  st.held = k;
}

// Key m for one query: skipped when the screen proves it out (`score`: its float32 screen
// score), else scored exactly and offered.
MNEMONIX_IN_CLONES inline void offerKey(const Recall& r, const double* logS, double shift, const BlockScreen& bs,
                                        double bound, const float* q, size_t m, size_t m0, float score,
                                        QueryState& st) {
  if (st.screen && !bs.exactOnly[m - m0] && static_cast<double>(score) + bound < st.cut(bound)) return;
  const size_t before = st.best.size();
  const int64_t last = before ? st.best.back().index : -1;
  offer(st.best, r.k, exactRank(r, logS, q, st.qNorm, m));
  if (st.best.size() == r.k && (before < r.k || st.best.back().index != last)) {
    const Rank& kth = st.best.back();
    st.kth = kth.cos * std::exp(logS[kth.index] - shift);
  }
}

// Scratch of one thread's scanKeys: the screen scores of a block and each group's largest.
struct ScanScratch {
  std::vector<float> scores, groupTop, positive;
};

// A lower bound on the k-th largest screen score of a block from its groups' largest: the k-th
// largest of them when at least k are positive and above theta (k groups each hold a key at
// least that high, and a positive score is a valid screenable key's), else -inf.
inline float groupFloor(const std::vector<float>& groupTop, size_t k, float theta, std::vector<float>& positive) {
  if (groupTop.size() < k) return -INFINITY;
  positive.resize(groupTop.size());
  const float floor = std::max(theta, 0.0f);
  size_t n = 0;
  for (float top : groupTop) {  // branch-free
    positive[n] = top;
    n += top > floor;
  }
  if (n < k) return -INFINITY;
  std::nth_element(positive.begin(), positive.begin() + static_cast<std::ptrdiff_t>(k - 1),
                   positive.begin() + static_cast<std::ptrdiff_t>(n), std::greater<float>());
  return positive[k - 1];
}

// Screen scores s[i] = dots[i] * weight[i] * qInv of keys [lo, hi) (one group) and their largest
// (at least -FLT_MAX; a NaN never wins, as std::max(top, s)). A whole group is two vectors and a
// lane maximum: GCC left the reduction scalar, one dependent vmaxss per key (a quarter of the
// gemm path's selection at N = 1e3, B = 1024).
MNEMONIX_IN_CLONES inline float groupScores(const float* dots, const float* weight, float qInv, size_t lo, size_t hi,
                                            float* s) {
  using rows::Lanes8;
  using rows::loadLanes8;
  static_assert(kGroup == 16, "a group is two vectors of eight");
  float top = -FLT_MAX;  // invalid keys (weight 0) count as score 0: never a wrong skip
  if (hi - lo == kGroup) {
    const Lanes8 a = loadLanes8(dots + lo) * loadLanes8(weight + lo) * qInv;
    const Lanes8 b = loadLanes8(dots + lo + 8) * loadLanes8(weight + lo + 8) * qInv;
    std::memcpy(s + lo, &a, sizeof(a));
    std::memcpy(s + lo + 8, &b, sizeof(b));
    Lanes8 m = Lanes8{} - FLT_MAX;
    m = m < a ? a : m;
    m = m < b ? b : m;
    for (int i = 0; i < 8; ++i) top = std::max(top, m[i]);
    return top;
  }
  for (size_t i = lo; i < hi; ++i) {
    s[i] = dots[i] * weight[i] * qInv;
    top = std::max(top, s[i]);
  }
  return top;
}

// Pass 1 over a block for one query: screen scores s_i = dot_i * weight_i / ||q|| and each
// group's largest, then theta from the groups' largest (groupFloor) and the block's valid
// screenable keys above it into the query's candidates, so that theta knows the whole block
// before any of it is scored exactly (the first blocks would otherwise score ~k ln(N / k) keys in
// float64, each raising the k-th a little). Only groups whose largest passes theta are read again.
MNEMONIX_IN_CLONES inline void screenScores(const Recall& r, const BlockScreen& bs, const float* dots, size_t m0,
                                            size_t m1, QueryState& st, ScanScratch& scratch) {
  const size_t width = m1 - m0, groups = (width + kGroup - 1) / kGroup;
  scratch.scores.resize(width);
  scratch.groupTop.resize(groups);
  float* s = scratch.scores.data();
  const float* weight = bs.weight.data();
  const float qInv = st.qInv;
  for (size_t g = 0; g < groups; ++g)
    scratch.groupTop[g] = groupScores(dots, weight, qInv, g * kGroup, std::min(width, (g + 1) * kGroup), s);
  st.theta = std::max(st.theta, groupFloor(scratch.groupTop, r.k, st.theta, scratch.positive));
  for (size_t g = 0; g < groups; ++g) {
    if (!(scratch.groupTop[g] > st.theta)) continue;
    const size_t lo = g * kGroup, hi = std::min(width, lo + kGroup);
    const float theta = st.theta;
    float* held = st.top32.data();
    size_t n = st.held;
    for (size_t i = lo; i < hi; ++i) {  // branch-free: every key written, the candidates kept
      held[n] = s[i];
      n += (s[i] > theta) & !bs.exactOnly[i];  // (exactOnly holds the invalid keys too)
    }
    st.held = n;
    if (n >= 2 * r.k) cutScreen(st, r.k);
  }
  cutScreen(st, r.k);  // theta: the k-th largest screen score so far, as exact as a heap's
}

// Keys [m0, m1) (screened in `bs`) for one query, in two passes: screenScores, then groups of
// kGroup keys, a group whose largest screen score plus the bound is below the cut skipped whole
// and the keys of the others going through offerKey. A key is only ever skipped when its exact
// score cannot reach the top k. `dots` [m1 - m0]: the query's float32 dot products with these
// keys (any summation order keeps the bound).
MNEMONIX_IN_CLONES inline void scanKeys(const Recall& r, const double* logS, double shift, const BlockScreen& bs,
                                        double bound, size_t b, size_t m0, size_t m1, QueryState& st,
                                        const float* dots, ScanScratch& scratch) {
  const float* q = r.queries + b * r.d;
  if (st.screen) screenScores(r, bs, dots, m0, m1, st, scratch);
  for (size_t g0 = m0; g0 < m1; g0 += kGroup) {
    const size_t width = std::min(m1 - g0, kGroup), g = (g0 - m0) / kGroup;
    if (st.screen && !bs.groupExact[g] && static_cast<double>(scratch.groupTop[g]) + bound < st.cut(bound))
      continue;
    if (!st.screen || bs.groupExact[g]) {
      for (size_t i = 0; i < width; ++i)
        if (isValid(r, g0 + i))
          offerKey(r, logS, shift, bs, bound, q, g0 + i, m0, st.screen ? scratch.scores[g0 - m0 + i] : 0.0f, st);
      continue;
    }
    // No valid exact-only key: the valid keys that pass the cut as it stands take a bit each,
    // branch-free; offerKey checks each against the cut of its turn (it only rises), so the
    // keys scored are the same as with one branch per key.
    const float* score = scratch.scores.data() + (g0 - m0);
    const uint8_t* exactOnly = bs.exactOnly.data() + (g0 - m0);
    const double cut = st.cut(bound);
    uint32_t pass = 0;
    for (size_t i = 0; i < width; ++i)
      pass |= static_cast<uint32_t>(!(static_cast<double>(score[i]) + bound < cut) & !exactOnly[i]) << i;
    for (; pass != 0; pass &= pass - 1) {
      const size_t i = static_cast<size_t>(__builtin_ctz(pass));
      offerKey(r, logS, shift, bs, bound, q, g0 + i, m0, score[i], st);
    }
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
  // recall_j = sum_i w_i z_ij, summed over i in order (rows outer, so that it vectorises over j).
  // A convex combination of finite float32 values cannot overflow float64, and w_i * NaN or
  // w_i * Inf is never finite (0 * Inf is NaN): the sums are finite iff the selected rows are.
  std::vector<double> acc(r.dz, 0.0);
  for (size_t i = 0; i < take; ++i) {
    const float* z = r.payloads + static_cast<size_t>(best[i].index) * r.dz;
    const double wi = w[i] / total;
    for (size_t j = 0; j < r.dz; ++j) acc[j] += wi * static_cast<double>(z[j]);
  }
  bool finite = true;
  for (size_t j = 0; j < r.dz; ++j) {
    finite &= std::isfinite(acc[j]);
    r.recall[b * r.dz + j] = static_cast<float>(acc[j]);
  }
  return finite || !r.check;
}

// Payload values summed (B x k x dz) past which the outputs are written on OpenMP threads: the
// selected rows are scattered reads, ~2.4 ms on one thread at B = 256, k = 10, dz = 768.
constexpr double kParallelOutputValues = 1e5;

// Outputs of every query, `best(b)` giving query b's exact list (queries are independent: the
// same bits on any number of threads); kNone, or kPayloads when a selected payload row is not
// finite.
template <class BestOf>
inline Fault writeQueries(const Recall& r, const double* logS, double shift, BestOf best) {
  const bool parallel = static_cast<double>(r.batch) * static_cast<double>(r.k) *
                            static_cast<double>(std::max<size_t>(r.dz, 1)) > kParallelOutputValues;
  const auto write = [&](size_t b) { return writeQuery(r, logS, shift, b, best(b)); };
  bool payloadsFinite = true;
  if (!parallel) {  // no OpenMP region at all: entering one, even of one thread, costs microseconds
    for (size_t b = 0; b < r.batch; ++b) payloadsFinite = write(b) && payloadsFinite;
  } else {
#pragma omp parallel for schedule(static) reduction(&& : payloadsFinite)
    for (int64_t b = 0; b < static_cast<int64_t>(r.batch); ++b)
      payloadsFinite = write(static_cast<size_t>(b)) && payloadsFinite;
  }
  return payloadsFinite ? kNone : kPayloads;
}

// Keys per block: 256 kB of them, held in L2 while the queries pass over them two at a time.
// 64 kB blocks (L1) cost more in per-block work (the screen's k-th and the keys scored exactly
// start over at every block) than they saved: N = 1e3, d = 128, B = 64: 507 -> 391 us; B = 4:
// 43.6 -> 34.9 us; d = 32, B = 64: 167 -> 147 us; memory-bound calls unchanged (+-2%).
constexpr size_t kBlockBytes = 256u << 10;

// One thread's share: queries [b0, b1) over keys [m0, m1), in cache-sized key blocks; each
// query's running list lands in states[b]. One pass over a block gives the first query's (for
// short rows, the first two queries') float32 dot products and the keys' squared norms, so a
// block comes from memory once; the other queries then take it two at a time from cache. False
// when a checked key fails (kKeys).
MNEMONIX_SIMD_CLONES inline bool scanShare(const Recall& r, const double* logS, double shift, size_t b0, size_t b1,
                                           size_t m0, size_t m1, std::vector<QueryState>& states) {
  const double bound = screenBound(r.d);
  const size_t block = std::max<size_t>(16, kBlockBytes / (4 * r.d + 1));
  for (size_t b = b0; b < b1; ++b) startQuery(r, b, states[b]);
  BlockScreen bs;
  ScanScratch scratch;
  std::vector<float> dots(3 * block);  // two queries' dot products, then the squared norms
  for (size_t k0 = m0; k0 < m1; k0 += block) {
    const size_t k1 = std::min(m1, k0 + block), width = k1 - k0;
    const float* tile = r.keys + k0 * r.d;
    const char* ahead = k1 + width <= m1 ? reinterpret_cast<const char*>(r.keys + k1 * r.d) : nullptr;
    sizeScreen(width, bs);
    const bool firstPair = screenFirstPass(r.queries + b0 * r.d, r.d, tile, width, dots.data(), block,
                                           b0 + 1 < b1, ahead);
    if (!screenFromSquares(r, logS, shift, k0, 0, width, dots.data() + 2 * block, bs)) return false;
    scanKeys(r, logS, shift, bs, bound, b0, k0, k1, states[b0], dots.data(), scratch);
    if (firstPair) scanKeys(r, logS, shift, bs, bound, b0 + 1, k0, k1, states[b0 + 1], dots.data() + block, scratch);
    for (size_t b = b0 + (firstPair ? 2 : 1); b < b1; b += 2) {
      const bool pair = b + 1 < b1;
      screenQueryPass(r.queries + b * r.d, r.d, tile, width, dots.data(), block, pair);
      scanKeys(r, logS, shift, bs, bound, b, k0, k1, states[b], dots.data(), scratch);
      if (pair) scanKeys(r, logS, shift, bs, bound, b + 1, k0, k1, states[b + 1], dots.data() + block, scratch);
    }
  }
  return true;
}

// The threads split the keys, not the queries, when there are fewer than kQueriesPerThread
// queries per thread or the keys outgrow kCachedKeyBytes: each key is then read and screened once
// (N = 1e5, d = 32, B = 4: 1.9 -> 1.5 ms; N = 1e4, d = 32, B = 4: 223 -> 164 us). With many
// queries over cached keys, splitting the queries scores fewer keys exactly (each thread's lists
// fill once: N = 1e3, d = 32, B = 16: 78 -> 65 us).
constexpr size_t kQueriesPerThread = 4;
constexpr size_t kCachedKeyBytes = 8u << 20;

// Calls of more float32 multiply-adds than this run on OpenMP threads (2-core VM: two threads
// already gain 15% at B N d = 1.3e5, ~40% from 3e5 on; none at 3e4).
constexpr double kParallelMultiplyAdds = 1e5;

// The whole recall; kNone, or the first failed check (outputs then unspecified: the caller
// discards them). Large calls run on OpenMP threads: each takes a range of the queries, or, with
// fewer queries than threads or keys beyond the caches, a range of the keys (the threads' exact
// lists are merged after).
inline Fault recall(const Recall& r, const double* logS) {
  if (r.check) {
    const Fault f = checkInputs(r, logS);
    if (f != kNone) return f;
  }
  double shift = -INFINITY;
  for (size_t m = 0; m < r.n; ++m)
    if (isValid(r, m)) shift = std::max(shift, logS[m]);
  const bool parallel = static_cast<double>(r.batch) * static_cast<double>(r.n) * static_cast<double>(r.d) >
                        kParallelMultiplyAdds;
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
    const bool byKeys = r.batch < kQueriesPerThread * threads || r.n * r.d * sizeof(float) > kCachedKeyBytes;
    const size_t b0 = byKeys ? 0 : r.batch * t / threads, b1 = byKeys ? r.batch : r.batch * (t + 1) / threads;
    const size_t m0 = byKeys ? r.n * t / threads : 0, m1 = byKeys ? r.n * (t + 1) / threads : r.n;
    keysOk[t] = scanShare(r, logS, shift, b0, b1, m0, m1, states[t]);
  }
  for (uint8_t ok : keysOk)
    if (!ok) return kKeys;
  if (states.size() == 1) return writeQueries(r, logS, shift, [&](size_t b) -> const std::vector<Rank>& {
    return states[0][b].best;
  });
  std::vector<std::vector<Rank>> merged(r.batch);
  for (size_t b = 0; b < r.batch; ++b) {
    for (auto& share : states) merged[b].insert(merged[b].end(), share[b].best.begin(), share[b].best.end());
    std::sort(merged[b].begin(), merged[b].end(), better);  // exact lists of disjoint keys: the exact top k
    if (merged[b].size() > r.k) merged[b].resize(r.k);
  }
  return writeQueries(r, logS, shift, [&](size_t b) -> const std::vector<Rank>& { return merged[b]; });
}

// Every query over keys [m0, m1) (screened in `bs`) with their dot products dots [B, m1 - m0].
MNEMONIX_SIMD_CLONES inline void scanRows(const Recall& r, const double* logS, double shift, const BlockScreen& bs,
                                          const float* dots, size_t m0, size_t m1, std::vector<QueryState>& states) {
  const double bound = screenBound(r.d);
  const bool parallel = static_cast<double>(r.batch) * static_cast<double>(m1 - m0) > 2e5;
#pragma omp parallel if (parallel)
  {
    ScanScratch scratch;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < static_cast<int64_t>(r.batch); ++b)
      scanKeys(r, logS, shift, bs, bound, static_cast<size_t>(b), m0, m1, states[static_cast<size_t>(b)],
               dots + static_cast<size_t>(b) * (m1 - m0), scratch);
  }
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
    for (size_t b = 0; b < r.batch; ++b) startQuery(r, b, states_[b]);
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
    return writeQueries(out, logS_, shift_, [&](size_t b) -> const std::vector<Rank>& { return states_[b].best; });
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
