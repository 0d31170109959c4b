// Plastic prefix memory: the value types the engine hands out (a node's fields, an infer
// walk, a copied graph) and the checks a saved graph passes before Engine::restore builds
// from it. Header-only, no Python, no torch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "plastic/strings.hpp"

namespace mnemonix {
namespace plastic {

struct NodeInfo {
  int64_t count;
  int64_t rLevel;
};

struct InferResult {
  std::vector<Str> path;      // visited node strings, start node first (empty: no node is a prefix)
  std::vector<double> probs;  // probability of each step (path.size() - 1 entries)
};

// The whole graph, copied under one read lock (the layout of PlasticMemory.save).
struct Snapshot {
  std::vector<uint32_t> codepoints;      // node strings concatenated, node order
  std::vector<int64_t> offsets{0};       // [n + 1]: node i is codepoints[offsets[i], offsets[i + 1])
  std::vector<int64_t> count, rLevel;    // [n]
  std::vector<int64_t> edgeSrc, edgeDst; // [e] node ids, edge order
  int64_t samples = 0;
  size_t memoryBytes = 0;
  size_t numNodes() const { return count.size(); }
};

// Read-only views of the arrays of a saved graph (Engine::restore).
template <typename T>
struct Span {
  const T* data = nullptr;
  size_t size = 0;
  const T& operator[](size_t i) const { return data[i]; }
};
struct SnapshotView {
  Span<uint32_t> codepoints;
  Span<int64_t> offsets, count, rLevel, edgeSrc, edgeDst;
};

// Every size, range and value of a saved graph, checked before any of it is used
// (std::invalid_argument naming the field). What needs the graph itself (a repeated node
// string, a duplicate edge) is checked by Engine::restore while it builds.
inline void checkSnapshot(int64_t samples, const SnapshotView& a) {
  const size_t n = a.count.size;
  auto str = [](auto v) { return std::to_string(v); };
  if (a.offsets.size != n + 1)
    throw std::invalid_argument("offsets must have len(count) + 1 = " + str(n + 1) + " entries, got " +
                                str(a.offsets.size));
  if (a.rLevel.size != n)
    throw std::invalid_argument("r_level must have len(count) = " + str(n) + " entries, got " + str(a.rLevel.size));
  if (a.edgeSrc.size != a.edgeDst.size)
    throw std::invalid_argument("edge_src and edge_dst differ in length (" + str(a.edgeSrc.size) + " and " +
                                str(a.edgeDst.size) + ")");
  if (samples < 0) throw std::invalid_argument("samples must be >= 0, got " + str(samples));
  if (a.offsets[0] != 0) throw std::invalid_argument("offsets must start at 0, got " + str(a.offsets[0]));
  for (size_t i = 0; i < n; ++i) {
    if (a.offsets[i + 1] < a.offsets[i] || a.offsets[i + 1] > static_cast<int64_t>(a.codepoints.size))
      throw std::invalid_argument("offsets are not increasing within len(codepoints) at node " + str(i));
    if (a.count[i] < 0) throw std::invalid_argument("count[" + str(i) + "] is negative (" + str(a.count[i]) + ")");
  }
  for (size_t k = 0; k < static_cast<size_t>(a.offsets[n]); ++k) {
    const uint32_t c = a.codepoints[k];
    if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
      throw std::invalid_argument("codepoints holds " + str(c) + ", which is not a unicode scalar value");
  }
  for (size_t k = 0; k < a.edgeSrc.size; ++k) {
    const int64_t u = a.edgeSrc[k], v = a.edgeDst[k];
    if (u < 0 || v < 0 || u >= static_cast<int64_t>(n) || v >= static_cast<int64_t>(n))
      throw std::invalid_argument("edge " + str(k) + " (" + str(u) + " -> " + str(v) + ") has an endpoint outside [0, " +
                                  str(n) + ")");
  }
}

}  // namespace plastic
}  // namespace mnemonix
