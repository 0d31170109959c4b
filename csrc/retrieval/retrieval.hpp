// Fused modern-Hopfield retrieval on the CPU: out = softmax(beta * Q K^T + bias) V.
//
// Header-only core, no Python, no torch. One pass over the stored patterns with an online
// softmax (running max m, running sum l, accumulator acc; Milakov & Gimelshein 2018), N split
// over OpenMP threads with an exact merge (flash-decoding); a store too small to split that way
// (under 2048 rows) is cut into parts fixed by its shape, and the threads take (queries, part)
// jobs, so cache-sized stores use every core too. Keys are
// visited in tiles of a few rows that stay in L1/L2: each tile is read from memory once and
// serves both the dot products and, when the values are the keys, the weighted sum. From 8
// queries the tiles are scanned with the queries across the lanes (lanes.hpp). Inner loops are
// written for the compiler's vectoriser (`#pragma omp simd`, a polynomial exp), and x86-64
// builds carry an AVX2/FMA clone chosen at load time (GCC `target_clones`, glibc ifunc), so
// portable wheels stay fast. Exceptions thrown inside the parallel loop are captured
// (FirstException) and rethrown after it. Stateless: any number of threads may call retrieve at
// once.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/errors.hpp"
#include "common/rows.hpp"
#include "retrieval/lanes.hpp"
#include "retrieval/softmax.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mnemonix {
namespace retrieval {

// Scores of NQ queries (rows of q, stride d) against the `rows` key rows of `tile`, written to
// out[qi * outStride + r] (rows::dotBlock: four key rows at a time). With prefetchRows > 0 (the
// first query block of a tile) it asks for the rows that far ahead, i.e. the next tile, into L2.
template <int NQ>
MNEMONIX_ALWAYS_INLINE void scoreBlock(const float* q, size_t d, const float* tile, size_t rows,
                                       size_t prefetchRows, float* out, size_t outStride) {
  const char* ahead = prefetchRows ? reinterpret_cast<const char*>(tile + prefetchRows * d) : nullptr;
  ::mnemonix::rows::dotBlock<NQ>(q, d, tile, rows, out, outStride, ahead, d * sizeof(float));
}

// Value rows up to this wide are summed column block by column block (weightedRows); wider
// ones row by row, since a column block would walk the tile at a stride of dv floats (4 kB
// aliasing in L1: 3x slower at dv = 1024).
constexpr size_t kRegisterColumns = 64;

// acc[c, c + 8W) += sum_r p[r] v_r[c, c + 8W) over `rows` value rows (stride dv). The W vectors
// of acc stay in registers for the whole tile and take one add per four rows (a load and a
// store of acc per row would chain every row through memory).
template <int W>
MNEMONIX_ALWAYS_INLINE void weightedRows(const float* p, const float* v, size_t rows, size_t dv, size_t c,
                                         float* acc) {
  using rows::Lanes8;
  using rows::loadLanes8;
  Lanes8 a[W];
  for (int w = 0; w < W; ++w) a[w] = loadLanes8(acc + c + 8 * w);
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* v0 = v + r * dv + c;
    const float p0 = p[r], p1 = p[r + 1], p2 = p[r + 2], p3 = p[r + 3];
    for (int w = 0; w < W; ++w) {
      const size_t o = 8 * static_cast<size_t>(w);
      a[w] += (p0 * loadLanes8(v0 + o) + p1 * loadLanes8(v0 + dv + o)) +
              (p2 * loadLanes8(v0 + 2 * dv + o) + p3 * loadLanes8(v0 + 3 * dv + o));
    }
  }
  for (; r < rows; ++r) {
    for (int w = 0; w < W; ++w) a[w] += p[r] * loadLanes8(v + r * dv + c + 8 * static_cast<size_t>(w));
  }
  for (int w = 0; w < W; ++w) std::memcpy(acc + c + 8 * w, &a[w], sizeof(Lanes8));
}

// The online softmax update of query b over one tile's scores s[0, rows) (keys t0..): the
// running max, its first index, the rescaled sum and accumulator; s becomes the weights.
MNEMONIX_ALWAYS_INLINE void softmaxTile(float* s, size_t rows, size_t t0, size_t b, size_t dv, Partial& part) {
  float tileMax = kNegInf;  // NaN scores are passed over here (they reach l and acc below)
  float zeros = 0.0f;       // NaN iff a score is NaN or +-inf (x * 0)
#pragma omp simd reduction(max : tileMax) reduction(+ : zeros)
  for (size_t j = 0; j < rows; ++j) {
    tileMax = s[j] > tileMax ? s[j] : tileMax;
    zeros += s[j] * 0.0f;
  }
  part.scoreZeros += zeros;
  const float mNew = raiseMax(part, b, tileMax, s, 1, t0);
  if (mNew == kNegInf) {  // everything so far masked: no weight yet
    for (size_t j = 0; j < rows; ++j) s[j] = 0.0f;
    return;
  }
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (size_t j = 0; j < rows; ++j) {
    const float p = expNonPositive(s[j] - mNew);
    s[j] = p;
    sum += p;
  }
  foldTile(part, b, dv, mNew, sum);
}

// acc[0, dv) += sum_r p[r] v_r over one tile's value rows v (stride dv).
MNEMONIX_ALWAYS_INLINE void accumulateTile(const float* p, const float* v, size_t rows, size_t dv, float* acc) {
  if (dv <= kRegisterColumns) {
    size_t c = 0;
    for (; c + 32 <= dv; c += 32) weightedRows<4>(p, v, rows, dv, c, acc);
    for (; c + 8 <= dv; c += 8) weightedRows<1>(p, v, rows, dv, c, acc);
    for (; c < dv; ++c) {
      float total = acc[c];
      for (size_t r = 0; r < rows; ++r) total += p[r] * v[r * dv + c];
      acc[c] = total;
    }
    return;
  }
  size_t r = 0;  // wide rows: four rows per pass over acc (one load/store of acc per 4 FMAs)
  for (; r + 4 <= rows; r += 4) {
    const float* v0 = v + r * dv;
    const float* v1 = v0 + dv;
    const float* v2 = v1 + dv;
    const float* v3 = v2 + dv;
    const float p0 = p[r], p1 = p[r + 1], p2 = p[r + 2], p3 = p[r + 3];
#pragma omp simd
    for (size_t i = 0; i < dv; ++i) acc[i] += p0 * v0[i] + p1 * v1[i] + p2 * v2[i] + p3 * v3[i];
  }
  for (; r < rows; ++r) {
    const float* v0 = v + r * dv;
    const float p0 = p[r];
#pragma omp simd
    for (size_t i = 0; i < dv; ++i) acc[i] += p0 * v0[i];
  }
}

// Scan stored patterns [n0, n1) into `part`. qs = beta * queries [B, d] (row-major); keys and
// values hold the rows from n0 on (bias and the argmax count from row 0); values == nullptr
// means the values are the keys (dv == d). With `prefetch` each tile asks for the next one.
MNEMONIX_SIMD_CLONES
inline void scanRange(const float* qs, size_t batch, size_t d, const float* keys, const float* values,
                      size_t dv, const float* bias, size_t n0, size_t n1, bool prefetch, Partial& part,
                      std::vector<float>& scores) {
  const float* vals = values ? values : keys;
  const size_t rowsPerTile = tileRows(d);
  const size_t ahead = prefetch ? rowsPerTile : 0;
  scores.resize(batch * rowsPerTile);
  for (size_t t0 = n0; t0 < n1; t0 += rowsPerTile) {
    const size_t rows = std::min(rowsPerTile, n1 - t0);
    const float* tile = keys + (t0 - n0) * d;
    // 1. scores S[b, r] = (beta q_b) . k_r  (+ bias): register blocks of 2 queries x 4 rows
    //    (8 independent sums, 6 loads per 8 FMAs); the tile stays in cache across queries.
    size_t b = 0;
    for (; b + 2 <= batch; b += 2) {
      scoreBlock<2>(qs + b * d, d, tile, rows, b == 0 ? ahead : 0, scores.data() + b * rowsPerTile,
                    rowsPerTile);
    }
    for (; b < batch; ++b) {
      scoreBlock<1>(qs + b * d, d, tile, rows, b == 0 ? ahead : 0, scores.data() + b * rowsPerTile,
                    rowsPerTile);
    }
    if (bias) {
      for (size_t bb = 0; bb < batch; ++bb) {
        float* srow = scores.data() + bb * rowsPerTile;
        for (size_t j = 0; j < rows; ++j) srow[j] += bias[t0 + j];
      }
    }
    // 2. online softmax update per query; scores become probabilities in place
    for (size_t bb = 0; bb < batch; ++bb) softmaxTile(scores.data() + bb * rowsPerTile, rows, t0, bb, dv, part);
    // 3. acc_b += sum_r p[b, r] v_r; each value row (the cached key row when values are keys)
    //    serves every query. Zero weights are not skipped: a NaN/Inf row must reach acc (ops
    //    checks the result).
    for (size_t bb = 0; bb < batch; ++bb) {
      accumulateTile(scores.data() + bb * rowsPerTile, vals + (t0 - n0) * dv, rows, dv, part.acc.data() + bb * dv);
    }
  }
}

// out, lse and argmax of query b from the softmax states of parts[0, count) (index b within
// each part), merged exactly in part (= N) order: ties of the max go to the lower index.
inline void mergeQuery(const Partial* parts, size_t count, size_t b, size_t dv, float* o, float* lse,
                       int64_t* argmax) {
  float mMax = kNegInf;
  int64_t best = 0;
  for (const Partial* p = parts; p != parts + count; ++p) {
    if (p->m[b] > mMax) {
      mMax = p->m[b];
      best = p->arg[b];
    }
  }
  std::fill(o, o + dv, 0.0f);
  float l = 0.0f;
  for (const Partial* p = parts; p != parts + count; ++p) {
    if (p->m[b] == kNegInf) continue;
    const float w = std::exp(p->m[b] - mMax);
    l += w * p->l[b];
    const float* acc = p->acc.data() + b * dv;
    for (size_t i = 0; i < dv; ++i) o[i] += w * acc[i];
  }
  const float inv = 1.0f / l;
  for (size_t i = 0; i < dv; ++i) o[i] *= inv;
  *lse = mMax + std::log(l);
  *argmax = best;
}

// Whether every logit of the parts was finite (their score * 0 sums are all 0).
inline bool partsFinite(const std::vector<Partial>& parts) {
  float zeros = 0.0f;
  for (const Partial& p : parts) zeros += p.scoreZeros;
  return zeros == 0.0f;
}

// One operand set of retrieve (qs = beta * queries, float32). Keys and values are rows of
// `type`: float32, read in place, or float16 / bfloat16, converted to float32 a chunk at a time.
struct Problem {
  const float* qs;
  size_t batch, d;
  const void* keys;
  size_t n;
  const void* values;
  size_t dv;
  const float* bias;
  size_t lanes;  // 0: the row scan; 8 or 16: the queries across that many lanes (lanes.hpp)
  rows::RowType type;
};

// rows::Avx512Rows (16-bit rows) or rows::Avx2Rows::convert where the CPU runs them, else the
// portable loop: count rows of d values of `type` into float32 dst, prefetching `ahead` (the next
// chunk) as it goes. Exact.
inline void convertRows(rows::RowType type, const void* src, size_t count, size_t d, float* dst,
                        const void* ahead) {
#if MNEMONIX_HAVE_AVX512_PATH
  if (type != rows::RowType::Float32 && type != rows::RowType::Int8 && rows::cpuHasAvx512()) {
    rows::Avx512Rows::convert16Bit(type, src, count, d, dst, ahead);
    return;
  }
#endif
#if MNEMONIX_HAVE_AVX2_PATH
  if (rows::cpuHasAvx2F16c()) {
    rows::Avx2Rows::convert(type, src, count, d, dst, ahead);
    return;
  }
#endif
  rows::PortableRows::convert(type, src, count, d, dst, ahead);
}

// Multiply-adds a stored value costs on this problem's scan, in float32 row-scan units: 16-bit
// rows on the row scan pay their conversion too, about as much again (raw kernel, one thread,
// N = 1e3, d = 128, B = 1: float32 11.5 us, bfloat16 19.4), so the work bounds that share a
// call over the threads count them twice. The lane scan spreads a conversion over 8 queries or
// more (1: its float32 bits stay the same at any dtype).
inline size_t valueCost(const Problem& pb) {
  return pb.type != rows::RowType::Float32 && !pb.lanes ? 2 : 1;
}

// Rows of 16-bit keys (and values) converted per chunk on the lane scan: ~64k float32 values
// (256 kB, in L2 while the scan reads them back), whole tiles (a batch of more than kLaneBlock
// queries transposes each block once per chunk: B x d against the chunk's B x rows x d
// multiply-adds; a single block is transposed once per scan).
inline size_t convertedChunkRows(size_t d, size_t valueDims) {
  const size_t tile = tileRows(d);
  const size_t rows = (size_t(1) << 16) / std::max<size_t>(d + valueDims, 1);
  return std::max(tile, rows / tile * tile);
}

// The row scan converts 16-bit rows in chunks of ~8k float32 values (32 kB: keys, and values
// apart from them), whole groups of four rows, at most a tile: a chunk stays in L1 while the
// dots and the weighted sum read it back. Chunks of a tile (128 kB) went through L2: against
// them, bfloat16, Xeon, N = 1e3, d = 1,024, B = 1 took 0.77x, N = 1e4, d = 512, B = 4 0.72x;
// 16 kB chunks lost at d = 128 (1.13x at N = 1e4). float32 tiles stay at 128 kB: 32 kB ones lost
// 3.5-6% on stores that stream (N = 1e5, d = 512..1,024; bench/NOTES.md, "16-bit row scan").
// The online softmax folds per chunk, so these results round differently from float32's on the
// widened rows (the lane scan's chunks are whole tiles: the same bits there).
constexpr size_t kRowScanChunkValues = size_t(1) << 13;

inline size_t rowScanChunkRows(size_t d, size_t valueDims) {
  const size_t rows = kRowScanChunkValues / std::max<size_t>(d + valueDims, 1);
  return std::max<size_t>(4, std::min(tileRows(d), rows) & ~size_t(3));
}

inline void scanFloat(const Problem& pb, const float* qs, size_t batch, const float* keys, const float* values,
                      size_t n0, size_t n1, bool prefetch, Partial& part, std::vector<float>& buf,
                      const float* qTReady = nullptr) {
#if MNEMONIX_HAVE_AVX512_PATH
  if (pb.lanes == 16)
    scanRangeLanes16(qs, batch, pb.d, keys, values, pb.dv, pb.bias, n0, n1, part, buf, qTReady);
  else
#endif
  if (pb.lanes)
    scanRangeLanes(qs, batch, pb.d, keys, values, pb.dv, pb.bias, n0, n1, part, buf, qTReady);
  else
    scanRange(qs, batch, pb.d, keys, values, pb.dv, pb.bias, n0, n1, prefetch, part, buf);
}

// The row scan asks for the next tile ahead (into L2) only on float32 ranges past this many
// bytes: a range the L2 cache holds gains nothing from it and pays its instructions (N = 1e3,
// d = 512, B = 1, one thread: 110 us with, 90 without; N = 1e6, d = 32: 8.3-8.9 ms with,
// 10.7-11.0 without). 16-bit rows are prefetched by their conversion instead.
constexpr size_t kPrefetchMinBytes = size_t(2) << 20;

// Stored patterns [n0, n1) into `part` for `batch` queries from qs (beta-scaled). 16-bit rows
// go through a float32 chunk of this thread's; each is read from memory once, in its width.
inline void scan(const Problem& pb, const float* qs, size_t batch, size_t n0, size_t n1, Partial& part,
                 std::vector<float>& buf) {
  const size_t d = pb.d, dv = pb.dv;
  if (pb.type == rows::RowType::Float32) {
    const float* values = static_cast<const float*>(pb.values);
    const bool prefetch = (n1 - n0) * (d + (values ? dv : 0)) * sizeof(float) > kPrefetchMinBytes;
    scanFloat(pb, qs, batch, static_cast<const float*>(pb.keys) + n0 * d, values ? values + n0 * dv : nullptr,
              n0, n1, prefetch, part, buf);
    return;
  }
  const size_t width = rows::rowTypeBytes(pb.type);
  const size_t valueDims = pb.values ? dv : 0;
  const size_t chunkRows = pb.lanes ? convertedChunkRows(d, valueDims) : rowScanChunkRows(d, valueDims);
  thread_local std::vector<float> chunk;
  chunk.resize(chunkRows * (d + valueDims));
  // One block of lane queries is transposed once here, not once per chunk (N = 1e4, d = 2,048,
  // B = 16, float16: chunks of 32 rows took 16.0 ms transposing per chunk)
  thread_local std::vector<float> qT;
  const float* qTReady = nullptr;
  if (pb.lanes && batch <= kLaneBlock) {
    const size_t pitch = lanePitch(batch, pb.lanes);
    qT.resize(d * pitch);
    transposeQueries(qs, batch, d, pitch, qT.data());
    qTReady = qT.data();
  }
  const char* keys = static_cast<const char*>(pb.keys);
  const char* values = static_cast<const char*>(pb.values);
  for (size_t c0 = n0; c0 < n1; c0 += chunkRows) {
    const size_t count = std::min(chunkRows, n1 - c0);
    const bool more = c0 + count < n1;  // prefetch the next chunk's rows (memory streams meanwhile)
    convertRows(pb.type, keys + c0 * d * width, count, d, chunk.data(),
                more ? keys + (c0 + count) * d * width : nullptr);
    float* convertedValues = nullptr;
    if (values) {
      convertedValues = chunk.data() + chunkRows * d;
      convertRows(pb.type, values + c0 * dv * width, count, dv, convertedValues,
                  more ? values + (c0 + count) * dv * width : nullptr);
    }
    scanFloat(pb, qs, batch, chunk.data(), convertedValues, c0, c0 + count, false, part, buf, qTReady);
  }
}

// The widest query-lane scan this CPU runs (16 with AVX-512, else 8), capped by
// maxLaneWidth(): a process-wide setting for tests and benchmarks (both widths give the same
// bits; the cap shows it and measures the gain).
inline std::atomic<int>& maxLaneWidth() {
  static std::atomic<int> cap{16};
  return cap;
}
inline size_t laneWidth() { return rows::cpuHasAvx512() && maxLaneWidth().load() >= 16 ? 16 : 8; }

// Runs job(i, scratch) for i in [0, jobs) on nThreads threads, dynamically (if the OS
// deschedules one thread, the others take its jobs), or with `sameThreads` in contiguous blocks,
// thread t always the same jobs (a cache-sized store's rows then stay in the same core's cache
// from call to call); exceptions are rethrown here.
template <typename Job>
void runJobs(size_t jobs, int nThreads, Job job, bool sameThreads = false) {
  std::vector<std::vector<float>> scratch(nThreads);
  FirstException error;  // an exception must not leave the parallel region (std::terminate)
  const long long count = static_cast<long long>(jobs);
#ifdef _OPENMP
  auto run = [&](long long t) { error.run([&] { job(static_cast<size_t>(t), scratch[omp_get_thread_num()]); }); };
  if (sameThreads) {
#pragma omp parallel for num_threads(nThreads) schedule(static)
    for (long long t = 0; t < count; ++t) run(t);
  } else {
#pragma omp parallel for num_threads(nThreads) schedule(dynamic, 1)
    for (long long t = 0; t < count; ++t) run(t);
  }
#else
  (void)sameThreads;
  for (long long t = 0; t < count; ++t) error.run([&] { job(static_cast<size_t>(t), scratch[0]); });
#endif
  error.rethrow();  // e.g. std::bad_alloc of a scratch buffer, raised in the calling thread
}

// How many parts' softmax states (B x (dv + 2) floats each) fit in ~16M floats, at least one.
inline size_t stateParts(size_t batch, size_t dv) {
  return std::max<size_t>(1, (size_t(1) << 24) / std::max<size_t>(batch * (dv + 2), 1));
}

// Rows split into parts (a contiguous range each), up to 8 per thread, taken dynamically. Each
// part keeps its own softmax state (at most ~16M floats in all) and the merge runs in part
// order, so the result does not depend on which thread ran which part.
inline void retrieveByRows(const Problem& pb, int nThreads, size_t maxParts, float* out, float* lse,
                           int64_t* argmax, bool* scoresFinite) {
  const size_t memParts = stateParts(pb.batch, pb.dv);
  const size_t threads = static_cast<size_t>(nThreads);
  const size_t nParts = threads == 1 ? 1 : std::max(threads, std::min({maxParts, 8 * threads, memParts}));
  std::vector<Partial> parts(nParts);
  for (auto& p : parts) p.reset(pb.batch, pb.dv);
  const size_t per = (pb.n + nParts - 1) / nParts;
  runJobs(nParts, nThreads, [&](size_t t, std::vector<float>& buf) {
    const size_t n0 = std::min(pb.n, t * per);
    const size_t n1 = std::min(pb.n, n0 + per);
    scan(pb, pb.qs, pb.batch, n0, n1, parts[t], buf);
  });
  // Every logit finite? Without a bias a -inf logit is a NaN/Inf key (the queries are checked
  // finite first) whose weight is 0: with values apart from the keys nothing else would show it.
  if (scoresFinite) *scoresFinite = partsFinite(parts);
  for (size_t b = 0; b < pb.batch; ++b)
    mergeQuery(parts.data(), nParts, b, pb.dv, out + b * pb.dv, lse + b, argmax + b);
}

// Rows of a store too small to split over the threads: parts fixed by the shape alone, so that
// a query's out, lse and argmax are the same bits whatever the thread count and the batch beside
// it within its class: below kLaneMinBatch queries (the row scan), up to kLaneOneGroupBatch (one
// lane group: parts as for one query, at eight queries' work) and past it (the lanes change
// the summation order, and past kLaneOneGroupBatch the lane scan takes the rows as one part: its
// per-call transpose of the queries made parts cost 7% at N = 1,500, d = 128, B = 128 and
// 1.3-1.5x at N = 1e3, d = 4,096, B = 16). Where one query is worth two
// threads (kSmallStoreSplitWork multiply-adds, twice a thread's share below: N = 2,000, d = 100,
// B = 1 took 19.3 us on one thread, 14.3 on two; N = 1e3, d = 150, 16.0 against 17.1), an even
// number of parts, at least two (two threads then take as many each: N = 1e3, d = 1,024, B = 1
// took 86 us in seven parts, 66 in six; N = 100, d = 12,288: 280 us in one, 133 in two), of at
// least 128 rows and 128k multiply-adds where the store has them; one part below. One query on
// ~2 MB of keys then uses every core: N = 1e3, d = 512, B = 1 took 57 us in two parts of 500
// rows (the previous split, from 512k multiply-adds a part) and 26 us in six (Xeon; 0.33-0.78x
// at N = 300..3,000, d = 300..4,096; bench/NOTES.md, "Small stores").
constexpr size_t kSmallStoreSplitWork = 400000;
constexpr size_t kSmallStorePartRows = 128;
constexpr size_t kSmallStorePartWork = size_t(1) << 17;
constexpr size_t kSmallStoreMaxParts = 16;

inline size_t smallStoreParts(size_t n, size_t d, size_t dv, size_t cost) {
  const size_t work = n * (d + dv) * cost;
  if (work < kSmallStoreSplitWork) return 1;
  const size_t parts = std::min({n / kSmallStorePartRows, work / kSmallStorePartWork, kSmallStoreMaxParts});
  return std::max<size_t>(2, parts & ~size_t(1));  // even: two threads take as many each
}

// Each query group's row parts keep their own softmax states and merge in part order. With a
// group per thread a job scans its group's parts in turn (N = 1e3, d = 256, B = 2: a job per
// part took 35 us against 28); with fewer groups, as for one query, a job takes one part, and
// each thread the same parts at every call, so that its rows stay in its core's L2 (N = 1e5,
// d = 4, B = 1: 254 -> 182 us against parts taken dynamically; N = 1e3, d = 512: 30.3 -> 27.7;
// N = 1e3, d = 1,024 lost 3%: 80 -> 82). Groups of queries are whole 8-lane vectors when the
// scan runs across the lanes (as many groups at either width; a batch up to kLaneOneGroupBatch
// is one group: 8 + 4 queries cost two 8-query scans at 16 lanes). The states are bounded (~16M
// floats): past that (B x dv x parts > 16M) fewer parts, which then depend on the batch.
// `work`: the call's multiply-adds, N (d + dv) B.
inline void retrieveSmallStore(const Problem& pb, size_t groups, size_t threads, size_t work, float* out,
                               float* lse, int64_t* argmax, bool* scoresFinite) {
  const size_t shapeParts = !pb.lanes                        ? smallStoreParts(pb.n, pb.d, pb.dv, valueCost(pb))
                            : pb.batch <= kLaneOneGroupBatch ? smallStoreParts(pb.n, pb.d, pb.dv, kLaneMinBatch)
                                                             : 1;
  const size_t nParts = std::min(shapeParts, stateParts(pb.batch, pb.dv));
  // 16-bit rows: each group converts every row it scans, so where the parts can feed every
  // thread the queries stay one group (each row converted once)
  if (pb.type != rows::RowType::Float32 && !pb.lanes && nParts >= threads) groups = 1;
  size_t per = (pb.batch + groups - 1) / groups;
  if (pb.lanes) {  // one group up to kLaneOneGroupBatch: its parts share the threads evenly
    per = pb.batch <= kLaneOneGroupBatch ? pb.batch : lanePitch(per, 8);
    groups = (pb.batch + per - 1) / per;
  }
  const size_t rowsPer = (pb.n + nParts - 1) / nParts;
  const bool jobPerGroup = groups >= threads;
  const size_t partsPerJob = jobPerGroup ? nParts : 1;
  const size_t jobs = groups * nParts / partsPerJob;
  // A thread per group of 64k multiply-adds, per 200k (kSmallStoreSplitWork / 2) when the threads
  // share one group's parts
  const size_t perThread = jobPerGroup ? (size_t(1) << 16) : kSmallStoreSplitWork / 2;
  const size_t nThreads = std::max<size_t>(1, std::min({threads, jobs, work / perThread}));
  std::vector<Partial> parts(groups * nParts);  // [group][part]
  runJobs(jobs, static_cast<int>(nThreads), [&](size_t job, std::vector<float>& buf) {
    for (size_t i = job * partsPerJob; i < (job + 1) * partsPerJob; ++i) {
      const size_t g = i / nParts, p = i % nParts;
      const size_t b0 = std::min(pb.batch, g * per), b1 = std::min(pb.batch, b0 + per);
      const size_t n0 = std::min(pb.n, p * rowsPer), n1 = std::min(pb.n, n0 + rowsPer);
      parts[i].reset(b1 - b0, pb.dv);
      if (b0 < b1 && n0 < n1) scan(pb, pb.qs + b0 * pb.d, b1 - b0, n0, n1, parts[i], buf);
    }
  }, !jobPerGroup);
  if (scoresFinite) *scoresFinite = partsFinite(parts);
  for (size_t b = 0; b < pb.batch; ++b) {
    const size_t g = b / per;
    mergeQuery(&parts[g * nParts], nParts, b - g * per, pb.dv, out + b * pb.dv, lse + b, argmax + b);
  }
}

// Full retrieval. queries [B, d], keys [N, d], values [N, dv] or nullptr (then dv == d), all
// rows of `type` (float32, float16 or bfloat16; 16-bit rows are converted exactly to float32 and
// computed as float32), bias [N] or nullptr (-inf entries exclude patterns). Writes out [B, dv],
// lse [B] and argmax [B] (first index of the largest logit), float32. Results depend on
// `threads` only through float rounding of the merge (the number of parts), and not at all on
// stores too small to split (retrieveSmallStore); a given thread count is deterministic. With
// `scoresFinite`, also whether every logit (bias included) was finite.
inline void retrieveRows(rows::RowType type, const void* queries, size_t batch, size_t d, const void* keys,
                         size_t n, const void* values, size_t dv, float beta, const float* bias, float* out,
                         float* lse, int64_t* argmax, int threads, bool* scoresFinite = nullptr) {
  if (n == 0) throw std::invalid_argument("keys must hold at least one stored pattern (N >= 1), got 0 rows");
  if (!(beta > 0.0f) || !std::isfinite(beta))
    throw std::invalid_argument("beta must be finite and > 0 (as a float32), got " + std::to_string(beta));
  if (type == rows::RowType::Int8) throw std::invalid_argument("retrieve: rows must be float32, float16 or bfloat16");
  std::vector<float> qs(batch * d);
  convertRows(type, queries, batch, d, qs.data(), nullptr);
  for (float& x : qs) x *= beta;
#ifdef _OPENMP
  if (threads <= 0) threads = omp_get_max_threads();
#else
  threads = 1;
#endif
  threads = std::max(threads, 1);
  // Queries across the lanes from 8 of them (the scores of a query then depend on the batch's
  // size only through this choice), while a value row's column blocks stay within L1's ways.
  const bool acrossLanes = batch >= kLaneMinBatch && d <= kLaneMaxDims && dv <= kLaneMaxDims;
  const size_t lanes = acrossLanes ? laneWidth() : 0;
  const Problem pb{qs.data(), batch, d, keys, n, values, dv, bias, lanes, type};
  // A part of the rows needs ~1M multiply-adds (~30 us) and 1024 rows: each adds a softmax
  // state to merge. A group of queries needs 64k (~3 us, against ~1 us to wake a spinning
  // thread): N = 1e3, d = 32, B = 16, one thread took 46.5 us and two 26.6 (EPYC); B = 4, one
  // group 15.2 us and two 13.3 (Xeon; 128k per group kept that call on one thread).
  const size_t work = n * (d + dv) * std::max<size_t>(batch, 1) * valueCost(pb);
  const size_t maxParts = std::max<size_t>(1, std::min(n / 1024, work / (size_t(1) << 20)));
  if (maxParts == 1) {
    const size_t groups = std::max<size_t>(1, std::min({static_cast<size_t>(threads), batch,
                                                        work / (size_t(1) << 16)}));
    retrieveSmallStore(pb, groups, static_cast<size_t>(threads), work, out, lse, argmax, scoresFinite);
    return;
  }
  retrieveByRows(pb, static_cast<int>(std::min<size_t>(threads, maxParts)), maxParts, out, lse, argmax,
                 scoresFinite);
}

// retrieveRows on float32 rows.
inline void retrieve(const float* queries, size_t batch, size_t d, const float* keys, size_t n,
                     const float* values, size_t dv, float beta, const float* bias, float* out,
                     float* lse, int64_t* argmax, int threads, bool* scoresFinite = nullptr) {
  retrieveRows(rows::RowType::Float32, queries, batch, d, keys, n, values, dv, beta, bias, out, lse, argmax,
               threads, scoresFinite);
}

}  // namespace retrieval
}  // namespace mnemonix
