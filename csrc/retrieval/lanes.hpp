// Query-lane tiles of the fused CPU retrieval: the scan of retrieval.hpp for batches of at least
// kLaneMinBatch queries over keys and values up to kLaneMaxDims wide.
//
// The row scan (scanRange) dots one or two queries with four keys along d and reduces 8 lanes
// per sum; at small d those reductions, and a load of each value row per query, cost as much
// as the multiply-adds. Here the queries lie across the lanes. The beta-scaled queries are
// transposed once per scan to qT [d][P] (P: the batch rounded up to 8, zero-padded), and a
// tile's scores are
//     S^T[r][b] = sum_i k[r][i] * qT[i][b]        (a broadcast key element times 8 queries),
// summed over i in order: no lane reduction, and a query's sums do not depend on the queries
// beside it. The online softmax runs on 8 queries per vector, and the weighted sums
//     acc[b][c] += sum_r S^T[r][b] * v[r][c]      (rows in order)
// load each value row once for four queries. Softmax semantics are scanRange's (first index of
// the max, NaN scores passed over by the max but reaching l and acc, a query whose scores are
// all -inf so far gets no weight).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/rows.hpp"
#include "retrieval/softmax.hpp"

namespace mnemonix {
namespace retrieval {

constexpr size_t kLaneMinBatch = 16;  // two threads still get a full vector of queries each
constexpr size_t kLaneMaxDims = 256;

// qT [d][P] of qs [B, d] (P = B rounded up to 8; the padding lanes are 0).
inline size_t lanePitch(size_t batch) { return (batch + 7) & ~size_t(7); }
inline void transposeQueries(const float* qs, size_t batch, size_t d, float* qT) {
  const size_t pitch = lanePitch(batch);
  std::fill(qT, qT + d * pitch, 0.0f);
  for (size_t b = 0; b < batch; ++b)
    for (size_t i = 0; i < d; ++i) qT[i * pitch + b] = qs[b * d + i];
}

// sT[r][j, j + 8 NV) for the tile's rows: four key rows by NV query vectors per register block.
template <int NV>
MNEMONIX_ALWAYS_INLINE void laneScoreBlock(const float* qT, size_t pitch, size_t j, const float* tile, size_t d,
                                           size_t rows, float* sT) {
  using rows::Lanes8;
  using rows::loadLanes8;
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* k0 = tile + r * d;
    Lanes8 a[4][NV] = {};
    for (size_t i = 0; i < d; ++i) {
      const float* qi = qT + i * pitch + j;
      const float x0 = k0[i], x1 = k0[d + i], x2 = k0[2 * d + i], x3 = k0[3 * d + i];
      for (int v = 0; v < NV; ++v) {
        const Lanes8 q = loadLanes8(qi + 8 * v);
        a[0][v] += x0 * q;
        a[1][v] += x1 * q;
        a[2][v] += x2 * q;
        a[3][v] += x3 * q;
      }
    }
    for (int k = 0; k < 4; ++k)
      for (int v = 0; v < NV; ++v) std::memcpy(sT + (r + k) * pitch + j + 8 * v, &a[k][v], sizeof(Lanes8));
  }
  for (; r < rows; ++r) {  // the last rows, one at a time, summed in the same order
    const float* k0 = tile + r * d;
    Lanes8 a[NV] = {};
    for (size_t i = 0; i < d; ++i)
      for (int v = 0; v < NV; ++v) a[v] += k0[i] * loadLanes8(qT + i * pitch + j + 8 * v);
    for (int v = 0; v < NV; ++v) std::memcpy(sT + r * pitch + j + 8 * v, &a[v], sizeof(Lanes8));
  }
}

MNEMONIX_ALWAYS_INLINE void laneScores(const float* qT, size_t pitch, const float* tile, size_t d, size_t rows,
                                       float* sT) {
  size_t j = 0;
  for (; j + 16 <= pitch; j += 16) laneScoreBlock<2>(qT, pitch, j, tile, d, rows, sT);
  for (; j < pitch; j += 8) laneScoreBlock<1>(qT, pitch, j, tile, d, rows, sT);
}

// The online softmax of the 8 queries b0.. (live of them real) over one tile's scores sT
// (keys t0..): running max, its first index, the rescaled sum and accumulator; sT's lanes
// become the weights.
MNEMONIX_ALWAYS_INLINE void laneSoftmax(float* sT, size_t pitch, size_t rows, size_t t0, size_t b0, size_t live,
                                        size_t dv, Partial& part) {
  float tileMax[8], zeros[8], mNew[8], sums[8] = {};
  for (int l = 0; l < 8; ++l) tileMax[l] = kNegInf, zeros[l] = 0.0f;
  for (size_t r = 0; r < rows; ++r) {
    const float* s = sT + r * pitch + b0;
#pragma omp simd
    for (int l = 0; l < 8; ++l) {
      tileMax[l] = s[l] > tileMax[l] ? s[l] : tileMax[l];  // NaN scores are passed over here
      zeros[l] += s[l] * 0.0f;                              // NaN iff a score is NaN or +-inf
    }
  }
  for (size_t l = 0; l < live; ++l) {
    part.scoreZeros += zeros[l];
    mNew[l] = raiseMax(part, b0 + l, tileMax[l], sT + b0 + l, pitch, t0);
  }
  for (size_t l = live; l < 8; ++l) mNew[l] = 0.0f;
  float shift[8];
  for (int l = 0; l < 8; ++l) shift[l] = mNew[l] == kNegInf ? 0.0f : mNew[l];
  for (size_t r = 0; r < rows; ++r) {
    float* s = sT + r * pitch + b0;
#pragma omp simd
    for (int l = 0; l < 8; ++l) {
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
    foldTile(part, b0 + l, dv, mNew[l], sums[l]);
  }
}

// acc[b0 + q][c, c + 8 W) += sum_r sT[r][b0 + q] v_r[c, c + 8 W) for NQ queries: each value
// row's W vectors are loaded once for the NQ queries.
template <int NQ, int W>
MNEMONIX_ALWAYS_INLINE void laneWeighted(const float* sT, size_t pitch, size_t b0, const float* v, size_t rows,
                                         size_t dv, size_t c, float* acc) {
  using rows::Lanes8;
  using rows::loadLanes8;
  Lanes8 a[NQ][W];
  for (int q = 0; q < NQ; ++q)
    for (int w = 0; w < W; ++w) a[q][w] = loadLanes8(acc + (b0 + q) * dv + c + 8 * w);
  for (size_t r = 0; r < rows; ++r) {
    Lanes8 x[W];
    for (int w = 0; w < W; ++w) x[w] = loadLanes8(v + r * dv + c + 8 * w);
    const float* p = sT + r * pitch + b0;
    for (int q = 0; q < NQ; ++q)
      for (int w = 0; w < W; ++w) a[q][w] += p[q] * x[w];
  }
  for (int q = 0; q < NQ; ++q)
    for (int w = 0; w < W; ++w) std::memcpy(acc + (b0 + q) * dv + c + 8 * w, &a[q][w], sizeof(Lanes8));
}

template <int NQ>
MNEMONIX_ALWAYS_INLINE void laneAccumulate(const float* sT, size_t pitch, size_t b0, const float* v, size_t rows,
                                           size_t dv, float* acc) {
  size_t c = 0;
  for (; c + 16 <= dv; c += 16) laneWeighted<NQ, 2>(sT, pitch, b0, v, rows, dv, c, acc);
  for (; c + 8 <= dv; c += 8) laneWeighted<NQ, 1>(sT, pitch, b0, v, rows, dv, c, acc);
  for (; c < dv; ++c) {  // the last columns, rows in the same order
    for (int q = 0; q < NQ; ++q) {
      float total = acc[(b0 + q) * dv + c];
      for (size_t r = 0; r < rows; ++r) total += sT[r * pitch + b0 + q] * v[r * dv + c];
      acc[(b0 + q) * dv + c] = total;
    }
  }
}

// scanRange with the queries across the lanes: stored patterns [n0, n1) into `part`.
// qs = beta * queries [B, d]; keys and values hold the rows from n0 on; values == nullptr means
// the values are the keys.
MNEMONIX_SIMD_CLONES
inline void scanRangeLanes(const float* qs, size_t batch, size_t d, const float* keys, const float* values,
                           size_t dv, const float* bias, size_t n0, size_t n1, Partial& part,
                           std::vector<float>& scratch) {
  const float* vals = values ? values : keys;
  const size_t pitch = lanePitch(batch), rowsPerTile = tileRows(d);
  scratch.resize(rowsPerTile * pitch + d * pitch);
  float* sT = scratch.data();
  float* qT = sT + rowsPerTile * pitch;
  transposeQueries(qs, batch, d, qT);
  for (size_t t0 = n0; t0 < n1; t0 += rowsPerTile) {
    const size_t rows = std::min(rowsPerTile, n1 - t0);
    laneScores(qT, pitch, keys + (t0 - n0) * d, d, rows, sT);
    if (bias) {
      for (size_t r = 0; r < rows; ++r)
        for (size_t b = 0; b < pitch; ++b) sT[r * pitch + b] += bias[t0 + r];
    }
    for (size_t b0 = 0; b0 < batch; b0 += 8)
      laneSoftmax(sT, pitch, rows, t0, b0, std::min<size_t>(8, batch - b0), dv, part);
    const float* v = vals + (t0 - n0) * dv;
    float* acc = part.acc.data();
    size_t b = 0;
    for (; b + 4 <= batch; b += 4) laneAccumulate<4>(sT, pitch, b, v, rows, dv, acc);
    for (; b + 2 <= batch; b += 2) laneAccumulate<2>(sT, pitch, b, v, rows, dv, acc);
    for (; b < batch; ++b) laneAccumulate<1>(sT, pitch, b, v, rows, dv, acc);
  }
}

}  // namespace retrieval
}  // namespace mnemonix
