// Fused exact-search candidate scan on the CPU: the n_cand best rows per query by a float32
// inner product or cosine, one streaming pass over the stored rows.
//
// Header-only core, no Python, no torch. The caller (mnemonix.ops.search_topk) re-ranks the
// candidates exactly in float64; this scan only promises that every row outside a query's
// list scores <= the list's last value in float32, and that each float32 score is one dot
// product over d terms (any order, with or without FMA), int8 rows scaled after the dot
// (`dot * scale`), cosine rows divided by their float32 norm (see backends/search_exact.py
// for the error bound this gives).
//
// - Rows are read in their stored width (float32, float16, bfloat16, int8 + per-row scale):
//   a tile of rows is converted into a float32 buffer that stays in L1/L2 (common/rows.hpp,
//   F16C / AVX2 when the CPU has them) and serves every query; float32 rows are used in place.
// - The next tile is prefetched into L2 while the current one computes (memory-bound at small
//   B: the hardware prefetcher alone left the retrieval kernel at ~2.7x its floor, see
//   bench/NOTES.md).
// - An allowed-row mask is applied inside the scan; a tile with no allowed row is not read.
// - Two layouts of the scores' inner loop. `Rows` (small B, memory-bound): each query's dot
//   with four rows at a time, vectorised over d, one horizontal sum per (query, row); float32
//   rows are read in place. `Panels` (B >= kPanelsMinBatch, compute-bound): the tile is
//   repacked into panels of 16 rows stored column by column, and a register block of 6
//   queries x 16 rows accumulates broadcast(q[i]) * panel[i] with no horizontal sums (the
//   GEMM micro-kernel shape), so that many queries run near the FMA peak.
// - Running top-k per query: a min-heap of n_cand (value, row); a row enters only when it
//   beats the heap's smallest value, which after the first tiles is almost never, so the
//   selection costs one compare per (query, row).
// - N is split into contiguous parts taken dynamically by OpenMP threads; each part keeps
//   its own lists, merged exactly at the end (by value, then lower row).
// - Exceptions inside the parallel region are captured (FirstException) and rethrown.
// Stateless: any number of threads may call scan at once.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/errors.hpp"
#include "common/rows.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mnemonix {
namespace search {

using rows::RowType;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();
constexpr float kFloatMax = std::numeric_limits<float>::max();

enum class Layout { Auto, Rows, Panels };

// Batch size from which the Panels layout is used (Auto): below it the scan is memory-bound
// and the Rows layout reads float32 rows in place (bench/NOTES.md, "MemoryStore": measured
// with bench/compare_store.py --sweep).
constexpr size_t kPanelsMinBatch = 8;
constexpr size_t kPanelRows = 16;   // rows per panel: two 8-float vectors
constexpr int kPanelQueries = 6;    // queries per register block: 12 accumulators + 2 loads + 1 broadcast
constexpr size_t kQueryBlock = 256;  // queries per pass over a part (their scores per tile: 32 KB)

struct ScanInput {
  const float* queries = nullptr;  // [batch, d] float32, as scored (unit norm for cosine)
  size_t batch = 0;
  size_t d = 0;
  const void* keys = nullptr;  // [n, d] of `type`, row-major
  RowType type = RowType::Float32;
  size_t n = 0;
  const float* scales = nullptr;  // [n], int8 rows only: the stored row is keys[r] * scales[r]
  const uint8_t* mask = nullptr;  // [n] (0: the row never enters), or nullptr: every row
  bool cosine = false;            // divide each score by the row's float32 norm
  bool wantNorm = false;          // report the largest norm of an allowed row
  size_t nCand = 0;               // list length per query
  int threads = 0;                // <= 0: OpenMP's default
  bool portable = false;          // force the portable kernel (tests of the non-AVX2 path)
  Layout layout = Layout::Auto;   // force a layout (tests, benchmarks)
};

struct ScanOutput {
  float* values = nullptr;  // [batch, nCand], best first; -inf past the allowed rows
  int64_t* rows = nullptr;  // [batch, nCand]; -1 past the allowed rows
  float maxNorm = 0.0f;     // largest float32 norm of an allowed row (with wantNorm)
  int64_t nonFinite = 0;    // (query, allowed row) pairs whose score is NaN or +-Inf
  const char* isa = "";     // "avx2" or "portable"
  Layout layout = Layout::Rows;  // the layout used
  size_t parts = 0;         // contiguous ranges of N scanned (merged exactly)
};

// Per-query min-heaps of (value, row), capacity `cap` each, for one range of rows.
class TopKLists {
 public:
  void reset(size_t batch, size_t cap) {
    cap_ = cap;
    values_.assign(batch * cap, kNegInf);
    rows_.assign(batch * cap, -1);
    count_.assign(batch, 0);
    threshold_.assign(batch, cap == 0 ? kPosInf : kNegInf);
  }
  // A score must be greater than this to enter list b.
  float threshold(size_t b) const { return threshold_[b]; }
  size_t count(size_t b) const { return count_[b]; }
  const float* values(size_t b) const { return values_.data() + b * cap_; }
  const int64_t* rows(size_t b) const { return rows_.data() + b * cap_; }

  void push(size_t b, float value, int64_t row) {
    float* v = values_.data() + b * cap_;
    int64_t* r = rows_.data() + b * cap_;
    size_t& count = count_[b];
    if (count < cap_) {  // filling: sift the new entry up
      size_t i = count++;
      while (i > 0) {
        const size_t parent = (i - 1) / 2;
        if (!(value < v[parent])) break;
        v[i] = v[parent];
        r[i] = r[parent];
        i = parent;
      }
      v[i] = value;
      r[i] = row;
      if (count == cap_) threshold_[b] = v[0];
      return;
    }
    size_t i = 0;  // full: replace the smallest and sift it down
    for (;;) {
      const size_t left = 2 * i + 1;
      if (left >= cap_) break;
      const size_t child = (left + 1 < cap_ && v[left + 1] < v[left]) ? left + 1 : left;
      if (!(v[child] < value)) break;
      v[i] = v[child];
      r[i] = r[child];
      i = child;
    }
    v[i] = value;
    r[i] = row;
    threshold_[b] = v[0];
  }

 private:
  size_t cap_ = 0;
  std::vector<float> values_;
  std::vector<int64_t> rows_;
  std::vector<size_t> count_;
  std::vector<float> threshold_;
};

// Rows per tile: the converted tile (rows x d float32) should stay in L1 while every query
// uses it; a multiple of the register block (4 rows, or a 16-row panel), at least one block.
inline size_t tileRows(size_t d, size_t block) {
  size_t rows = (16 * 1024) / (std::max<size_t>(d, 1) * sizeof(float));
  rows = std::max<size_t>(block, std::min<size_t>(64, rows));
  return rows / block * block;
}

// Sums of squares of `rows` tile rows, four rows at a time (independent sums).
MNEMONIX_ALWAYS_INLINE void rowSumSquares(const float* tile, size_t rows, size_t d, float* out) {
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* k0 = tile + r * d;
    const float* k1 = k0 + d;
    const float* k2 = k1 + d;
    const float* k3 = k2 + d;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (size_t i = 0; i < d; ++i) {
      s0 += k0[i] * k0[i];
      s1 += k1[i] * k1[i];
      s2 += k2[i] * k2[i];
      s3 += k3[i] * k3[i];
    }
    out[r] = s0;
    out[r + 1] = s1;
    out[r + 2] = s2;
    out[r + 3] = s3;
  }
  for (; r < rows; ++r) {
    const float* k0 = tile + r * d;
    float s0 = 0.0f;
#pragma omp simd reduction(+ : s0)
    for (size_t i = 0; i < d; ++i) s0 += k0[i] * k0[i];
    out[r] = s0;
  }
}

// GCC / clang vector extensions: one 8-float vector (AVX2 register in the AVX2 kernel, two
// SSE registers in the portable one); loads and stores through memcpy (unaligned, no aliasing).
typedef float Vec8 __attribute__((vector_size(32)));

// (By reference: a vector passed by value changes the ABI between the two instruction sets.)
MNEMONIX_ALWAYS_INLINE void load8(Vec8& v, const float* p) { std::memcpy(&v, p, sizeof(v)); }

MNEMONIX_ALWAYS_INLINE void store8(float* p, const Vec8& v) { std::memcpy(p, &v, sizeof(v)); }

// Repacks `rows` tile rows (stride d) into panels of kPanelRows rows stored column by column
// ([d][16] each; Isa::interleave16); rows past `rows` in the last panel are zero. `ahead` is
// prefetched, as many bytes as the tile holds.
template <class Isa>
MNEMONIX_ALWAYS_INLINE void packPanels(const float* tile, size_t rows, size_t d, float* panels, const char* ahead,
                                       size_t rowBytes) {
  static_assert(kPanelRows == 16, "interleave16 packs 16 rows");
  rows::prefetchBytes(ahead, rows * rowBytes);
  for (size_t p0 = 0; p0 < rows; p0 += kPanelRows) {
    float* panel = panels + (p0 / kPanelRows) * d * kPanelRows;
    const size_t width = std::min(kPanelRows, rows - p0);
    if (width == kPanelRows) {
      Isa::interleave16(tile + p0 * d, d, panel);
      continue;
    }
    for (size_t l = 0; l < kPanelRows; ++l) {
      if (l < width) {
        for (size_t i = 0; i < d; ++i) panel[i * kPanelRows + l] = tile[(p0 + l) * d + i];
      } else {
        for (size_t i = 0; i < d; ++i) panel[i * kPanelRows + l] = 0.0f;
      }
    }
  }
}

// Scores of MQ queries (stride d) with one panel's 16 rows: out[j * outStride + l].
template <int MQ>
MNEMONIX_ALWAYS_INLINE void panelBlock(const float* q, size_t d, const float* panel, float* out, size_t outStride) {
  Vec8 lo[MQ], hi[MQ];
  for (int j = 0; j < MQ; ++j) lo[j] = hi[j] = Vec8{};
  for (size_t i = 0; i < d; ++i) {
    Vec8 k0, k1;
    load8(k0, panel + i * kPanelRows);
    load8(k1, panel + i * kPanelRows + 8);
    for (int j = 0; j < MQ; ++j) {
      const float x = q[j * d + i];
      const Vec8 qv = {x, x, x, x, x, x, x, x};
      lo[j] += qv * k0;
      hi[j] += qv * k1;
    }
  }
  for (int j = 0; j < MQ; ++j) {
    store8(out + j * outStride, lo[j]);
    store8(out + j * outStride + 8, hi[j]);
  }
}

// Scores [batch, stride] of every query with the packed tile (rows rounded up to panels).
MNEMONIX_ALWAYS_INLINE void panelScores(const float* q, size_t batch, size_t d, const float* panels, size_t rows,
                                        float* out, size_t stride) {
  for (size_t p0 = 0; p0 < rows; p0 += kPanelRows) {
    const float* panel = panels + (p0 / kPanelRows) * d * kPanelRows;
    size_t b = 0;
    for (; b + kPanelQueries <= batch; b += kPanelQueries) panelBlock<kPanelQueries>(q + b * d, d, panel, out + b * stride + p0, stride);
    const float* qr = q + b * d;
    float* o = out + b * stride + p0;
    switch (batch - b) {
      case 5: panelBlock<5>(qr, d, panel, o, stride); break;
      case 4: panelBlock<4>(qr, d, panel, o, stride); break;
      case 3: panelBlock<3>(qr, d, panel, o, stride); break;
      case 2: panelBlock<2>(qr, d, panel, o, stride); break;
      case 1: panelBlock<1>(qr, d, panel, o, stride); break;
      default: break;
    }
  }
}

// What one part (a contiguous range of rows) found besides its lists.
struct PartStats {
  float maxNorm = 0.0f;
  int64_t nonFinite = 0;
};

struct Scratch {
  std::vector<float> tile, panels, scores, sumSquares, factor;
};

// Per-row factor applied to the dot products of tile rows [t0, t0 + rows): the int8 scale,
// the inverse norm (cosine; NaN when the norm overflows float32, so that the score is
// reported as non-finite); and the largest norm of an allowed row (wantNorm).
MNEMONIX_ALWAYS_INLINE bool rowFactors(const ScanInput& in, size_t t0, size_t rows, Scratch& s, PartStats& stats) {
  const bool needNorm = in.cosine || in.wantNorm;
  const float* scale = in.scales ? in.scales + t0 : nullptr;
  if (!needNorm) {
    if (!scale) return false;
    std::copy(scale, scale + rows, s.factor.begin());
    return true;
  }
  const uint8_t* allowed = in.mask ? in.mask + t0 : nullptr;
  for (size_t j = 0; j < rows; ++j) {
    const float sumSq = s.sumSquares[j];
    const float norm = scale ? std::sqrt(sumSq) * std::fabs(scale[j]) : std::sqrt(sumSq);
    if (in.wantNorm && (!allowed || allowed[j]) && !(norm <= stats.maxNorm)) stats.maxNorm = norm;  // NaN too
    float f = scale ? scale[j] : 1.0f;
    if (in.cosine) {
      const float inv = norm > 0.0f ? 1.0f / norm : 0.0f;
      f = std::isinf(sumSq) ? std::numeric_limits<float>::quiet_NaN() : f * inv;
    }
    s.factor[j] = f;
  }
  return in.cosine || scale;
}

// How many allowed scores of a tile row need a look: above `threshold`, NaN or -Inf (one
// vectorised pass; almost always 0 once the lists are full).
MNEMONIX_ALWAYS_INLINE int flaggedScores(const float* score, const uint8_t* allowed, size_t rows, float threshold) {
  int flagged = 0;
  if (allowed) {
#pragma omp simd reduction(+ : flagged)
    for (size_t j = 0; j < rows; ++j)
      flagged += (allowed[j] != 0) & (!(score[j] <= threshold) | (score[j] < -kFloatMax));
  } else {
#pragma omp simd reduction(+ : flagged)
    for (size_t j = 0; j < rows; ++j) flagged += !(score[j] <= threshold) | (score[j] < -kFloatMax);
  }
  return flagged;
}

// Offers the scores of tile rows [t0, t0 + rows) to the lists of queries [q0, q1).
MNEMONIX_ALWAYS_INLINE void selectTile(const ScanInput& in, size_t q0, size_t q1, size_t t0, size_t rows,
                                       size_t stride, Scratch& s, bool scaled, TopKLists& top, PartStats& stats) {
  const uint8_t* allowed = in.mask ? in.mask + t0 : nullptr;
  for (size_t b = q0; b < q1; ++b) {
    float* score = s.scores.data() + (b - q0) * stride;
    if (scaled) {
      const float* f = s.factor.data();
#pragma omp simd
      for (size_t j = 0; j < rows; ++j) score[j] *= f[j];
    }
    float threshold = top.threshold(b);
    if (flaggedScores(score, allowed, rows, threshold) == 0) continue;
    for (size_t j = 0; j < rows; ++j) {
      if (allowed && !allowed[j]) continue;
      const float v = score[j];
      if (v > threshold) {
        if (v > kFloatMax) {
          ++stats.nonFinite;
          continue;
        }
        top.push(b, v, static_cast<int64_t>(t0 + j));
        threshold = top.threshold(b);
      } else if (!(v >= -kFloatMax)) {  // NaN or -Inf
        ++stats.nonFinite;
      }
    }
  }
}

inline bool anyAllowed(const uint8_t* allowed, size_t rows) {
  for (size_t j = 0; j < rows; ++j)
    if (allowed[j]) return true;
  return false;
}

// Scan rows [n0, n1) for queries [q0, q1) into `top`, with the row conversion of `Isa`
// (common/rows.hpp).
template <class Isa>
MNEMONIX_ALWAYS_INLINE void scanBlock(const ScanInput& in, bool panels, size_t q0, size_t q1, size_t n0, size_t n1,
                                      TopKLists& top, Scratch& s, PartStats& stats) {
  const size_t d = in.d;
  const size_t batch = q1 - q0;
  const float* queries = in.queries + q0 * d;
  const size_t perTile = tileRows(d, panels ? kPanelRows : 4);
  const size_t rowBytes = d * rows::rowTypeBytes(in.type);
  const char* base = static_cast<const char*>(in.keys);
  const bool direct = in.type == RowType::Float32;
  s.tile.resize(direct ? 0 : perTile * d);
  s.panels.resize(panels ? perTile * d : 0);
  s.scores.resize(batch * perTile);
  s.sumSquares.resize(perTile);
  s.factor.resize(perTile);
  for (size_t t0 = n0; t0 < n1; t0 += perTile) {
    const size_t rows = std::min(perTile, n1 - t0);
    if (in.mask && !anyAllowed(in.mask + t0, rows)) continue;  // nothing allowed: not even read
    const char* ahead = t0 + perTile < n1 ? base + (t0 + perTile) * rowBytes : nullptr;
    const bool normsNeeded = in.cosine || in.wantNorm;
    if constexpr (Isa::kFusedDot) {
      if (!direct && !panels && batch == 1) {  // one query: dot the rows as stored (and their norms)
        Isa::dotRows(in.type, queries, base + t0 * rowBytes, rows, d, s.scores.data(),
                     normsNeeded ? s.sumSquares.data() : nullptr, ahead);
        const bool scaled = rowFactors(in, t0, rows, s, stats);
        selectTile(in, q0, q1, t0, rows, perTile, s, scaled, top, stats);
        continue;
      }
    }
    const float* tile;
    if (direct) {
      tile = reinterpret_cast<const float*>(base + t0 * rowBytes);
    } else {
      Isa::convert(in.type, base + t0 * rowBytes, rows, d, s.tile.data(), ahead);
      tile = s.tile.data();
      ahead = nullptr;  // prefetched while converting
    }
    if (panels) {
      packPanels<Isa>(tile, rows, d, s.panels.data(), ahead, rowBytes);
      panelScores(queries, batch, d, s.panels.data(), rows, s.scores.data(), perTile);
    } else {
      size_t b = 0;
      for (; b + 2 <= batch; b += 2) {
        ::mnemonix::rows::dotBlock<2>(queries + b * d, d, tile, rows, s.scores.data() + b * perTile, perTile,
                                       b == 0 ? ahead : nullptr, rowBytes);
      }
      for (; b < batch; ++b) {
        ::mnemonix::rows::dotBlock<1>(queries + b * d, d, tile, rows, s.scores.data() + b * perTile, perTile,
                                       b == 0 ? ahead : nullptr, rowBytes);
      }
    }
    if (normsNeeded) rowSumSquares(tile, rows, d, s.sumSquares.data());
    const bool scaled = rowFactors(in, t0, rows, s, stats);
    selectTile(in, q0, q1, t0, rows, perTile, s, scaled, top, stats);
  }
}

// Scan rows [n0, n1) for every query, kQueryBlock queries at a time: a block's queries and
// scores stay in L2 however large the batch (each block re-reads the rows: by then the scan
// is compute-bound, ~kQueryBlock * d multiply-adds per row read).
template <class Isa>
MNEMONIX_ALWAYS_INLINE void scanRangeImpl(const ScanInput& in, bool panels, size_t n0, size_t n1, TopKLists& top,
                                          Scratch& s, PartStats& stats) {
  for (size_t q0 = 0; q0 < in.batch; q0 += kQueryBlock)
    scanBlock<Isa>(in, panels, q0, std::min(in.batch, q0 + kQueryBlock), n0, n1, top, s, stats);
}

inline void scanRangePortable(const ScanInput& in, bool panels, size_t n0, size_t n1, TopKLists& top, Scratch& s,
                              PartStats& stats) {
  scanRangeImpl<rows::PortableRows>(in, panels, n0, n1, top, s, stats);
}

#if MNEMONIX_HAVE_AVX2_PATH
MNEMONIX_TARGET_AVX2 inline void scanRangeAvx2(const ScanInput& in, bool panels, size_t n0, size_t n1, TopKLists& top,
                                               Scratch& s, PartStats& stats) {
  scanRangeImpl<rows::Avx2Rows>(in, panels, n0, n1, top, s, stats);
}
#endif

// The exact merge of every part's list for query b: value descending, then lower row.
inline void mergeQuery(const std::vector<TopKLists>& parts, size_t b, size_t nCand, float* values, int64_t* rows) {
  std::vector<std::pair<float, int64_t>> all;
  for (const auto& p : parts)
    for (size_t i = 0; i < p.count(b); ++i) all.emplace_back(p.values(b)[i], p.rows(b)[i]);
  const size_t take = std::min(nCand, all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(take), all.end(),
                    [](const auto& x, const auto& y) { return x.first > y.first || (x.first == y.first && x.second < y.second); });
  for (size_t i = 0; i < nCand; ++i) {
    values[i] = i < take ? all[i].first : kNegInf;
    rows[i] = i < take ? all[i].second : -1;
  }
}

inline void checkInput(const ScanInput& in) {
  if (in.d == 0) throw std::invalid_argument("keys must have d >= 1 columns, got 0");
  if ((in.type == RowType::Int8) != (in.scales != nullptr))
    throw std::invalid_argument(in.type == RowType::Int8 ? "scales must be given with int8 keys"
                                                         : "scales must be None unless keys are int8");
  if (in.n > 0 && !in.keys) throw std::invalid_argument("keys must not be null");
  if (in.batch > 0 && !in.queries) throw std::invalid_argument("queries must not be null");
}

// The number of parts of a scan: each at least 1024 rows and ~1M multiply-adds (~30 us: below
// that a second thread costs more than it saves); up to 8 per thread, taken dynamically, so
// that a thread the OS deschedules (a busy machine) does not hold the others up.
inline size_t partCount(const ScanInput& in, int& nThreads) {
  int threads = in.threads;
#ifdef _OPENMP
  if (threads <= 0) threads = omp_get_max_threads();
#else
  threads = 1;
#endif
  const size_t work = in.n * in.d * std::max<size_t>(in.batch, 1);
  const size_t maxParts = std::max<size_t>(1, std::min(in.n / 1024, work / (size_t(1) << 20)));
  nThreads = static_cast<int>(std::min<size_t>(static_cast<size_t>(std::max(threads, 1)), maxParts));
  return nThreads == 1 ? 1 : std::max<size_t>(nThreads, std::min(maxParts, 8 * static_cast<size_t>(nThreads)));
}

// The n_cand best rows per query (see the file comment). Results do not depend on the
// number of threads except through which of several float32-equal rows fill the last places.
inline void scan(const ScanInput& in, ScanOutput& out) {
  checkInput(in);
  const bool avx2 = !in.portable && rows::cpuHasAvx2F16c();
  out.isa = avx2 ? "avx2" : "portable";
  const bool panels = in.layout == Layout::Panels || (in.layout == Layout::Auto && in.batch >= kPanelsMinBatch);
  out.layout = panels ? Layout::Panels : Layout::Rows;
  int nThreads = 1;
  const size_t nParts = in.n == 0 ? 1 : partCount(in, nThreads);
  const size_t per = (in.n + nParts - 1) / nParts;
  std::vector<TopKLists> lists(nParts);
  std::vector<PartStats> stats(nParts);
  std::vector<Scratch> scratch(static_cast<size_t>(nThreads));
  FirstException error;  // an exception must not leave the parallel region (std::terminate)
#ifdef _OPENMP
#pragma omp parallel for num_threads(nThreads) schedule(dynamic, 1)
#endif
  for (long long t = 0; t < static_cast<long long>(nParts); ++t) {
    error.run([&] {
      const size_t n0 = std::min(in.n, static_cast<size_t>(t) * per);
      const size_t n1 = std::min(in.n, n0 + per);
#ifdef _OPENMP
      Scratch& s = scratch[static_cast<size_t>(omp_get_thread_num())];
#else
      Scratch& s = scratch[0];
#endif
      lists[t].reset(in.batch, std::min(in.nCand, n1 - n0));
#if MNEMONIX_HAVE_AVX2_PATH
      if (avx2) {
        scanRangeAvx2(in, panels, n0, n1, lists[t], s, stats[t]);
        return;
      }
#endif
      scanRangePortable(in, panels, n0, n1, lists[t], s, stats[t]);
    });
  }
  error.rethrow();  // e.g. std::bad_alloc of a list, raised in the calling thread
  out.parts = nParts;
  for (const auto& st : stats) {
    out.nonFinite += st.nonFinite;
    if (!(st.maxNorm <= out.maxNorm)) out.maxNorm = st.maxNorm;
  }
#ifdef _OPENMP
#pragma omp parallel for num_threads(nThreads) schedule(static) if (in.batch > 1 && nParts > 1)
#endif
  for (long long b = 0; b < static_cast<long long>(in.batch); ++b) {
    error.run([&] {
      mergeQuery(lists, static_cast<size_t>(b), in.nCand, out.values + b * in.nCand, out.rows + b * in.nCand);
    });
  }
  error.rethrow();
}

}  // namespace search
}  // namespace mnemonix
