// Exact merge of softmax retrievals computed over disjoint parts of the stored patterns.
//
// torch's CPU flash kernel runs one task per block of (up to 32) queries, so a small batch
// leaves all but one core idle. Calling it on the keys cut into P parts (a batch of P
// problems) fills the cores, and this header merges the P results (flash-decoding's split-K):
//
//   M     = max(max_p lse_p, max_j l_j),   l_j = beta * <q, k_j> for the `rest` rows,
//   s     = sum_p e^(lse_p - M) + sum_j e^(l_j - M),
//   out   = (sum_p e^(lse_p - M) out_p + sum_j e^(l_j - M) v_j) / s,
//   lse   = M + log(s),
//
// where out_p is part p's normalised output and lse_p its log-sum-exp. The `rest` rows (fewer
// than P: what is left when N is not a multiple of P) are scored here, so the parts stay one
// strided view of the keys. Header-only, no Python, no torch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace mnemonix {
namespace retrieval {

// One call's operands: parts' results [P, B, dv] and [P, B] (contiguous, float32), the queries
// [B, d] (read only when rest > 0), the rest rows' keys and values (rows of `restStride` floats;
// values == keys when they are the keys), and the merged out [B, dv] and lse [B]. `out` may be
// part 0's buffer (partOut itself): row b of part 0 is read before row b of out is written.
struct PartsToMerge {
  const float* partOut;
  const float* partLse;
  size_t parts, batch, dv;
  const float* queries;
  size_t d;
  const float* restKeys;
  const float* restValues;
  size_t rest, restKeyStride, restValueStride;
  float beta;
  float* out;
  float* lse;
};

// Logits of query b against the rest rows (double sums: a handful of rows, once per call).
inline void restLogits(const PartsToMerge& m, size_t b, std::vector<float>& logits) {
  const float* q = m.queries + b * m.d;
  for (size_t j = 0; j < m.rest; ++j) {
    const float* k = m.restKeys + j * m.restKeyStride;
    double dot = 0.0;
    for (size_t i = 0; i < m.d; ++i) dot += static_cast<double>(q[i]) * k[i];
    logits[j] = static_cast<float>(static_cast<double>(m.beta) * dot);
  }
}

// Query b of the merge. A NaN or an infinite lse (a NaN operand, logits beyond float32) makes
// M or s NaN/Inf, which shows in out and lse: the caller checks them.
inline void mergeQueryParts(const PartsToMerge& m, size_t b, std::vector<float>& logits) {
  const size_t stride = m.batch * m.dv;
  restLogits(m, b, logits);
  float top = -std::numeric_limits<float>::infinity();
  for (size_t p = 0; p < m.parts; ++p) top = std::max(top, m.partLse[p * m.batch + b]);
  for (size_t j = 0; j < m.rest; ++j) top = std::max(top, logits[j]);
  float* o = m.out + b * m.dv;
  const float w0 = std::exp(m.partLse[b] - top);
  const float* first = m.partOut + b * m.dv;
  for (size_t i = 0; i < m.dv; ++i) o[i] = w0 * first[i];  // in place when out is part 0
  float sum = w0;
  for (size_t p = 1; p < m.parts; ++p) {
    const float w = std::exp(m.partLse[p * m.batch + b] - top);
    const float* src = m.partOut + p * stride + b * m.dv;
    for (size_t i = 0; i < m.dv; ++i) o[i] += w * src[i];
    sum += w;
  }
  for (size_t j = 0; j < m.rest; ++j) {
    const float w = std::exp(logits[j] - top);
    const float* v = m.restValues + j * m.restValueStride;
    for (size_t i = 0; i < m.dv; ++i) o[i] += w * v[i];
    sum += w;
  }
  const float inv = 1.0f / sum;
  for (size_t i = 0; i < m.dv; ++i) o[i] *= inv;
  m.lse[b] = top + std::log(sum);
}

inline void mergeParts(const PartsToMerge& m) {
  if (m.parts == 1 && m.rest == 0) {  // one part, nothing left: the merge is a copy (the same bits)
    if (m.out != m.partOut) std::copy(m.partOut, m.partOut + m.batch * m.dv, m.out);
    if (m.lse != m.partLse) std::copy(m.partLse, m.partLse + m.batch, m.lse);
    return;
  }
  std::vector<float> logits(m.rest);
  for (size_t b = 0; b < m.batch; ++b) mergeQueryParts(m, b, logits);
}

}  // namespace retrieval
}  // namespace mnemonix
