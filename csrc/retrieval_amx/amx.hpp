// bfloat16 retrieval on AMX tiles (Intel Sapphire Rapids and later): the compute-bound shapes.
//
//   out = softmax(beta * Q K^T) V,   lse = logsumexp(beta * Q K^T)   (per query row)
//
// Q [B, d], K [N, d], V [N, dv] in bfloat16; logits, softmax and sums in float32, out rounded
// to bfloat16 once (or written as float32). Every product of two bfloat16 values is exact in
// float32 and AMX accumulates in float32, so the logits carry float32 rounding, not the
// bfloat16 rounding of a 16-bit GEMM's output (torch's bf16 matmul, 7-9x the error of rounding
// the exact result: bench/half_accuracy.py). The weights P = exp(x - m) are split into two
// bfloat16 terms, P = P_hi + P_lo (|P - P_hi - P_lo| <= 2^-17 P), and P V = P_hi V + P_lo V,
// so the weighted sum keeps float32-level accuracy too, at twice the P V tile work.
//
// Layout (tiles of 16 rows x 64 bytes, all eight configured alike):
//   S^T = K Q^T:  A = 16 key rows x 32 d, the keys copied per block of 128 into contiguous 1 KB
//                 tiles; B = the queries packed once per call in AMX's pair layout
//                 ([d/2][16 queries][2]). The logits
//                 come out key-major ([key][16 queries]), so the online softmax of a block is
//                 vertical (a max and an exp per key row of 16 queries, no horizontal step).
//   O += P V:     A = P [16 queries][32 keys] (the key-major weights transposed, 16x16 dwords
//                 per 32 keys), B = V packed per block of keys ([keys/2][16 cols][2]), C = the
//                 running out of 16 queries, loaded from and stored to float32 memory.
// Work is split over OpenMP threads by keys (flash-decoding's split-K): each thread scans its
// own key range for every query and keeps (m, l, O) per query; the parts are merged exactly.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mnemonix {
namespace retrieval {
namespace amx {

// One call's operands: contiguous row-major bfloat16 buffers (v == k when the values are the
// keys), out [batch, dv] bfloat16 (or float32 when outFloat32), lse [batch] float32 or null.
struct Problem {
  const uint16_t* q;
  size_t batch, d;
  const uint16_t* k;
  size_t n;
  const uint16_t* v;
  size_t dv;
  float beta;
  void* out;
  bool outFloat32;
  float* lse;
};

// True when this CPU has AMX tiles with bfloat16 dot products (and AVX512-BF16, which every such
// CPU has: the weights' split) and the kernel asked Linux for
// the tile state (once per process); false on every other CPU, OS or build, and when the
// environment variable MNEMONIX_AMX is "0".
bool available();

// Runs the problem on up to `threads` threads (<= 0: OpenMP's default). Requires available().
void retrieve(const Problem& p, int threads);

}  // namespace amx
}  // namespace retrieval
}  // namespace mnemonix
