// Query-lane tiles of the fused CPU retrieval: the scan of retrieval.hpp for batches of at least
// kLaneMinBatch queries over keys and values up to kLaneMaxDims wide.
//
// The row scan (scanRange) dots one or two queries with four keys along d and reduces 8 lanes
// per sum; at small d those reductions, and a load of each value row per query, cost as much
// as the multiply-adds. Here the queries lie across the lanes. The beta-scaled queries are
// transposed once per scan to qT [d][P] (P: the batch rounded up to L lanes, zero-padded), and
// a tile's scores are
//     S^T[r][b] = sum_i k[r][i] * qT[i][b]        (a broadcast key element times L queries),
// summed over i in order: no lane reduction, and a query's sums do not depend on the queries
// beside it. The online softmax runs on L queries per vector, and the weighted sums
//     acc[b][c] += sum_r S^T[r][b] * v[r][c]      (rows in order)
// load each value row once for four queries (eight with 16 lanes). The queries go 64 at a time
// (kLaneBlock). Softmax semantics are scanRange's (first index of the max, NaN scores passed
// over by the max but reaching l and acc, a query whose scores are all -inf so far gets no
// weight).
//
// Two widths: L = 8 (one AVX register; the AVX2 and portable clones of scanRangeLanes) and
// L = 16 (one AVX-512 register, scanRangeLanes16, where the CPU has AVX-512: twice the
// multiply-adds per instruction on the scores and the weighted sums). Every lane does the same
// operations in the same order at either width, so both give the same bits (tested).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/rows.hpp"
#include "retrieval/softmax.hpp"

namespace mnemonix {
namespace retrieval {

// From 8 queries (one AVX2 vector, half an AVX-512 one): at B = 8 the lanes beat the row scan's
// lane reductions even half empty at 16 lanes (Xeon, N = 1e4, B = 8: 0.70-0.74x at d = 32..128;
// 16 lanes 0.71-0.77x of 8 there); at B = 4 they lost (1.10-1.17x at N = 1e4..1e5).
constexpr size_t kLaneMinBatch = 8;
// Up to this many queries (one AVX-512 vector, two AVX2 ones) a lane batch is one group of
// queries, which the threads share by rows: on a small store its rows go in parts fixed by the
// shape (retrieveSmallStore). Against groups of 8 queries, one thread each (Xeon, two threads):
// B = 12 0.58-0.81x, B = 16 0.77-0.92x at N = 1e3, d = 32..4,096; one group of 24 queries lost
// to 16 + 8 (1.03-1.31x at B = 20..31).
constexpr size_t kLaneOneGroupBatch = 16;
// Keys and values up to 4,096 wide: a block's transposed queries (64 x d floats, 1 MB at 4,096)
// stay in L2, and at every d up to there the lane scan beat the row scan at both widths on the
// Zen 5 EPYC (N = 1e4, B = 16, d = 4,096: 10.3 ms at 16 lanes, 18.9 at 8, 24.9 row by row); at
// d = 12,288 it lost (108 ms against 84; bench/NOTES.md, "Wide lanes"). The speed policy has its
// own, per-CPU limit below this one (cpp_lane_max_dims)
constexpr size_t kLaneMaxDims = 4096;

// L float32 lanes as a GCC vector, compiled by each target to its own instructions.
typedef float Lanes16 __attribute__((vector_size(64)));
template <int L> struct LaneVector;
template <> struct LaneVector<8> { using type = rows::Lanes8; };
template <> struct LaneVector<16> { using type = Lanes16; };
template <int L> using Lanes = typename LaneVector<L>::type;

template <int L>
MNEMONIX_ALWAYS_INLINE Lanes<L> loadLanes(const float* p) {
  Lanes<L> v;
  std::memcpy(&v, p, sizeof(v));  // an unaligned load
  return v;
}

// qT [d][P] of qs [B, d] (P = B rounded up to `width` lanes; the padding lanes are 0).
inline size_t lanePitch(size_t batch, size_t width) { return (batch + width - 1) / width * width; }
// Row by row of qT (its writes in order, the queries read as `batch` sequential streams): the
// column-by-column order wrote a new cache line per element, which at d = 2,048 cost more than
// the scores of a 16-bit chunk of 32 rows when that path transposed once per chunk (N = 1e4,
// B = 16, float16: 16.0 ms, 11.6 with this order, 8.7 transposed once per scan).
inline void transposeQueries(const float* qs, size_t batch, size_t d, size_t pitch, float* qT) {
  for (size_t i = 0; i < d; ++i) {
    float* row = qT + i * pitch;
    for (size_t b = 0; b < batch; ++b) row[b] = qs[b * d + i];
    std::fill(row + batch, row + pitch, 0.0f);
  }
}

// sT[r][j, j + L NV) for the tile's rows: RB key rows by NV query vectors per register block
// (RB x NV sums in flight: 8 with AVX2's 16 registers, 16 with AVX-512's 32).
template <int L, int NV, int RB = (L == 16 ? 8 : 4)>
MNEMONIX_ALWAYS_INLINE void laneScoreBlock(const float* qT, size_t pitch, size_t j, const float* tile, size_t d,
                                           size_t rows, float* sT) {
  using V = Lanes<L>;
  size_t r = 0;
  for (; r + RB <= rows; r += RB) {
    const float* k0 = tile + r * d;
    V a[RB][NV] = {};
    for (size_t i = 0; i < d; ++i) {
      const float* qi = qT + i * pitch + j;
      for (int v = 0; v < NV; ++v) {
        const V q = loadLanes<L>(qi + L * v);
        for (int k = 0; k < RB; ++k) a[k][v] += k0[k * d + i] * q;
      }
    }
    for (int k = 0; k < RB; ++k)
      for (int v = 0; v < NV; ++v) std::memcpy(sT + (r + k) * pitch + j + L * v, &a[k][v], sizeof(V));
  }
  for (; r < rows; ++r) {  // the last rows, one at a time, summed in the same order
    const float* k0 = tile + r * d;
    V a[NV] = {};
    for (size_t i = 0; i < d; ++i)
      for (int v = 0; v < NV; ++v) a[v] += k0[i] * loadLanes<L>(qT + i * pitch + j + L * v);
    for (int v = 0; v < NV; ++v) std::memcpy(sT + r * pitch + j + L * v, &a[v], sizeof(V));
  }
}

template <int L>
MNEMONIX_ALWAYS_INLINE void laneScores(const float* qT, size_t pitch, const float* tile, size_t d, size_t rows,
                                       float* sT) {
  size_t j = 0;
  for (; j + 2 * L <= pitch; j += 2 * L) laneScoreBlock<L, 2>(qT, pitch, j, tile, d, rows, sT);
  for (; j < pitch; j += L) laneScoreBlock<L, 1>(qT, pitch, j, tile, d, rows, sT);
}

// The online softmax of the L queries b0.. (live of them real; queries first + b0.. of `part`)
// over one tile's scores sT (keys t0..): running max, its first index, the rescaled sum and
// accumulator; sT's lanes become the weights.
template <int L>
MNEMONIX_ALWAYS_INLINE void laneSoftmax(float* sT, size_t pitch, size_t rows, size_t t0, size_t b0, size_t live,
                                        size_t dv, size_t first, Partial& part) {
  float tileMax[L], zeros[L], mNew[L], sums[L] = {};
  for (int l = 0; l < L; ++l) tileMax[l] = kNegInf, zeros[l] = 0.0f;
  for (size_t r = 0; r < rows; ++r) {
    const float* s = sT + r * pitch + b0;
#pragma omp simd
    for (int l = 0; l < L; ++l) {
      tileMax[l] = s[l] > tileMax[l] ? s[l] : tileMax[l];  // NaN scores are passed over here
      zeros[l] += s[l] * 0.0f;                              // NaN iff a score is NaN or +-inf
    }
  }
  for (size_t l = 0; l < live; ++l) {
    part.scoreZeros += zeros[l];
    mNew[l] = raiseMax(part, first + b0 + l, tileMax[l], sT + b0 + l, pitch, t0);
  }
  for (size_t l = live; l < L; ++l) mNew[l] = 0.0f;
  float shift[L];
  for (int l = 0; l < L; ++l) shift[l] = mNew[l] == kNegInf ? 0.0f : mNew[l];
  for (size_t r = 0; r < rows; ++r) {
    float* s = sT + r * pitch + b0;
#pragma omp simd
    for (int l = 0; l < L; ++l) {
      const float p = expNonPositive(s[l] - shift[l]);
      s[l] = p;
      sums[l] += p;
    }
  }
  for (size_t l = 0; l < live; ++l) {
    if (mNew[l] == kNegInf) {  // everything so far masked: no weight yet
      for (size_t r = 0; r < rows; ++r) sT[r * pitch + b0 + l] = 0.0f;
      continue;
    }
    foldTile(part, first + b0 + l, dv, mNew[l], sums[l]);
  }
}

// acc[b0 + q][c, c + C W) += sum_r sT[r][b0 + q] v_r[c, c + C W) for NQ queries, in vectors of
// C columns: each value row's W vectors are loaded once for the NQ queries.
template <int C, int NQ, int W>
MNEMONIX_ALWAYS_INLINE void laneWeighted(const float* sT, size_t pitch, size_t b0, const float* v, size_t rows,
                                         size_t dv, size_t c, float* acc) {
  using V = Lanes<C>;
  V a[NQ][W];
  for (int q = 0; q < NQ; ++q)
    for (int w = 0; w < W; ++w) a[q][w] = loadLanes<C>(acc + (b0 + q) * dv + c + C * w);
  for (size_t r = 0; r < rows; ++r) {
    V x[W];
    for (int w = 0; w < W; ++w) x[w] = loadLanes<C>(v + r * dv + c + C * w);
    const float* p = sT + r * pitch + b0;
    for (int q = 0; q < NQ; ++q)
      for (int w = 0; w < W; ++w) a[q][w] += p[q] * x[w];
  }
  for (int q = 0; q < NQ; ++q)
    for (int w = 0; w < W; ++w) std::memcpy(acc + (b0 + q) * dv + c + C * w, &a[q][w], sizeof(V));
}

// Column vectors of L lanes, then of 8, then single columns (each column's sum over the rows
// in the same order whatever its block).
template <int L, int NQ>
MNEMONIX_ALWAYS_INLINE void laneAccumulate(const float* sT, size_t pitch, size_t b0, const float* v, size_t rows,
                                           size_t dv, float* acc) {
  size_t c = 0;
  for (; c + 2 * L <= dv; c += 2 * L) laneWeighted<L, NQ, 2>(sT, pitch, b0, v, rows, dv, c, acc);
  for (; c + L <= dv; c += L) laneWeighted<L, NQ, 1>(sT, pitch, b0, v, rows, dv, c, acc);
  for (; c + 8 <= dv; c += 8) laneWeighted<8, NQ, 1>(sT, pitch, b0, v, rows, dv, c, acc);
  for (; c < dv; ++c) {  // the last columns, rows in the same order
    for (int q = 0; q < NQ; ++q) {
      float total = acc[(b0 + q) * dv + c];
      for (size_t r = 0; r < rows; ++r) total += sT[r * pitch + b0 + q] * v[r * dv + c];
      acc[(b0 + q) * dv + c] = total;
    }
  }
}

// Queries per block of the lane scan: a block's transposed queries, scores and accumulators
// (d x 64, 64 x 64 and 64 x dv floats) stay in L1/L2 while the keys pass; a larger batch scans
// the keys once per block (N = 1e3, d = 128, one thread: 4.3 us per query at B = 64, 7.5 at
// B = 256 in one block). A query's sums do not depend on its block.
constexpr size_t kLaneBlock = 64;

// scanRange with the queries across L lanes: stored patterns [n0, n1) into `part`, for the
// `batch` queries qs (beta-scaled, [batch, d]) that are queries first.. of `part`; keys and
// values hold the rows from n0 on; values == nullptr means the values are the keys. qTReady:
// the block's queries already transposed (transposeQueries at lanePitch(batch, L)), or nullptr.
template <int L>
MNEMONIX_ALWAYS_INLINE void scanLaneBlock(const float* qs, size_t batch, size_t first, size_t d, const float* keys,
                                          const float* values, size_t dv, const float* bias, size_t n0, size_t n1,
                                          Partial& part, std::vector<float>& scratch, const float* qTReady) {
  const float* vals = values ? values : keys;
  const size_t pitch = lanePitch(batch, L), rowsPerTile = tileRows(d);
  scratch.resize(rowsPerTile * pitch + (qTReady ? 0 : d * pitch));
  float* sT = scratch.data();
  const float* qT = qTReady;
  if (!qTReady) {
    transposeQueries(qs, batch, d, pitch, sT + rowsPerTile * pitch);
    qT = sT + rowsPerTile * pitch;
  }
  float* acc = part.acc.data() + first * dv;
  for (size_t t0 = n0; t0 < n1; t0 += rowsPerTile) {
    const size_t rows = std::min(rowsPerTile, n1 - t0);
    laneScores<L>(qT, pitch, keys + (t0 - n0) * d, d, rows, sT);
    if (bias) {
      for (size_t r = 0; r < rows; ++r)
        for (size_t b = 0; b < pitch; ++b) sT[r * pitch + b] += bias[t0 + r];
    }
    for (size_t b0 = 0; b0 < batch; b0 += L)
      laneSoftmax<L>(sT, pitch, rows, t0, b0, std::min<size_t>(L, batch - b0), dv, first, part);
    const float* v = vals + (t0 - n0) * dv;
    size_t b = 0;
    if constexpr (L == 16)
      for (; b + 8 <= batch; b += 8) laneAccumulate<L, 8>(sT, pitch, b, v, rows, dv, acc);
    for (; b + 4 <= batch; b += 4) laneAccumulate<L, 4>(sT, pitch, b, v, rows, dv, acc);
    for (; b + 2 <= batch; b += 2) laneAccumulate<L, 2>(sT, pitch, b, v, rows, dv, acc);
    for (; b < batch; ++b) laneAccumulate<L, 1>(sT, pitch, b, v, rows, dv, acc);
  }
}

// The lane scan of `batch` queries (queries 0.. of `part`), kLaneBlock at a time. qTReady: a
// single block's transposed queries (batch <= kLaneBlock), or nullptr.
template <int L>
MNEMONIX_ALWAYS_INLINE void scanLanes(const float* qs, size_t batch, size_t d, const float* keys,
                                      const float* values, size_t dv, const float* bias, size_t n0, size_t n1,
                                      Partial& part, std::vector<float>& scratch, const float* qTReady) {
  if (batch > kLaneBlock) qTReady = nullptr;
  for (size_t first = 0; first < batch; first += kLaneBlock)
    scanLaneBlock<L>(qs + first * d, std::min(kLaneBlock, batch - first), first, d, keys, values, dv, bias, n0, n1,
                     part, scratch, qTReady);
}

// scanLanes<8>, in the AVX2 clone and the portable one.
MNEMONIX_SIMD_CLONES
inline void scanRangeLanes(const float* qs, size_t batch, size_t d, const float* keys, const float* values,
                           size_t dv, const float* bias, size_t n0, size_t n1, Partial& part,
                           std::vector<float>& scratch, const float* qTReady = nullptr) {
  scanLanes<8>(qs, batch, d, keys, values, dv, bias, n0, n1, part, scratch, qTReady);
}

#if MNEMONIX_HAVE_AVX512_PATH
// scanLanes<16>, for CPUs with AVX-512 (cpuHasAvx512).
MNEMONIX_TARGET_AVX512
inline void scanRangeLanes16(const float* qs, size_t batch, size_t d, const float* keys, const float* values,
                             size_t dv, const float* bias, size_t n0, size_t n1, Partial& part,
                             std::vector<float>& scratch, const float* qTReady = nullptr) {
  scanLanes<16>(qs, batch, d, keys, values, dv, bias, n0, n1, part, scratch, qTReady);
}
#endif

}  // namespace retrieval
}  // namespace mnemonix
