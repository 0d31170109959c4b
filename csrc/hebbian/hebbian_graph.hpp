// Sparse Hebbian co-fire graph for Memoria-style engram memories.
//
// One RowGraph per batch row. Nodes are engrams keyed by a stable 64-bit engram
// id (compaction of the per-engram arrays never rewrites the graph). Each node
// holds its fire count (the diagonal of Memoria's dense induce_counts) and its
// neighbours as a vector of (node slot, co-fire count) sorted by slot: a
// "fire together" of K engrams merges a sorted list of K-1 slots into each of
// the K adjacency vectors (O(deg + K) each), 8 bytes per directed edge.
// Removing an engram deletes its edges from its neighbours and frees its slot.
//
// The long-term-memory walk of Memoria (greedy depth-first search over co-fire
// counts) runs here: candidates (LTM engrams) are tagged on their nodes for the
// duration of a call, so a neighbour test is an array read, not a hash lookup.
// No torch, no Python: plain buffers in, plain buffers out.
//
// Thread safety (HebbianGraph): concurrent readers, exclusive writers, through one
// reader-writer lock inside the graph; see the class comment.
#pragma once

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/rng.hpp"
#include "common/shared_mutex.hpp"

namespace mnemonix {
namespace hebbian {

struct Edge {
  int32_t node;   // neighbour slot
  int32_t count;  // co-fire count (> 0)
};

struct Node {
  int64_t id = -1;
  int32_t fire = 0;
  std::vector<Edge> nbr;  // sorted by node slot
};

class RowGraph {
 public:
  int64_t numNodes() const { return static_cast<int64_t>(index_.size()); }

  int64_t numEdges() const {  // directed entries (each undirected edge counted twice)
    int64_t n = 0;
    for (const auto& node : nodes_) n += static_cast<int64_t>(node.nbr.size());
    return n;
  }

  int32_t find(int64_t id) const {
    auto it = index_.find(id);
    return it == index_.end() ? -1 : it->second;
  }

  int32_t fireCount(int64_t id) const {
    int32_t s = find(id);
    return s < 0 ? 0 : nodes_[s].fire;
  }

  int32_t count(int64_t a, int64_t b) const {
    int32_t sa = find(a), sb = find(b);
    if (sa < 0 || sb < 0) return 0;
    if (sa == sb) return nodes_[sa].fire;
    const auto& v = nodes_[sa].nbr;
    auto it = std::lower_bound(v.begin(), v.end(), sb, [](const Edge& e, int32_t s) { return e.node < s; });
    return (it != v.end() && it->node == sb) ? it->count : 0;
  }

  // Every pair among `ids` (negative ids ignored, duplicates counted once) gets
  // co-fire count + `weight`; each engram's fire count + `weight`.
  void fireTogether(const int64_t* ids, int64_t n, int32_t weight = 1) {
    std::vector<int32_t> slots;
    slots.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] >= 0) slots.push_back(getOrAdd(ids[i]));
    std::sort(slots.begin(), slots.end());
    slots.erase(std::unique(slots.begin(), slots.end()), slots.end());
    std::vector<Edge> merged;
    for (int32_t u : slots) {
      Node& node = nodes_[u];
      node.fire += weight;
      merged.clear();
      merged.reserve(node.nbr.size() + slots.size());
      size_t i = 0;
      for (int32_t v : slots) {
        if (v == u) continue;
        while (i < node.nbr.size() && node.nbr[i].node < v) merged.push_back(node.nbr[i++]);
        if (i < node.nbr.size() && node.nbr[i].node == v) {
          merged.push_back({v, node.nbr[i].count + weight});
          ++i;
        } else {
          merged.push_back({v, weight});
        }
      }
      while (i < node.nbr.size()) merged.push_back(node.nbr[i++]);
      node.nbr.swap(merged);
    }
  }

  // Set one directed entry and its mirror (used by load); count <= 0 removes nothing.
  void setEdge(int64_t a, int64_t b, int32_t count) {
    if (count <= 0) return;
    int32_t sa = getOrAdd(a), sb = getOrAdd(b);
    if (sa == sb) {
      nodes_[sa].fire = count;
      return;
    }
    upsert(nodes_[sa].nbr, sb, count);
    upsert(nodes_[sb].nbr, sa, count);
  }

  void setFire(int64_t id, int32_t fire) { nodes_[getOrAdd(id)].fire = fire; }

  // Delete engrams and all their edges.
  void remove(const int64_t* ids, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      int32_t s = find(ids[i]);
      if (s < 0) continue;
      for (const Edge& e : nodes_[s].nbr) {
        auto& v = nodes_[e.node].nbr;
        auto it = std::lower_bound(v.begin(), v.end(), s, [](const Edge& x, int32_t t) { return x.node < t; });
        if (it != v.end() && it->node == s) v.erase(it);
      }
      index_.erase(nodes_[s].id);
      nodes_[s] = Node();
      std::vector<Edge>().swap(nodes_[s].nbr);
      free_.push_back(s);
    }
  }

  void clear() {
    nodes_.clear();
    tag_.clear();
    free_.clear();
    index_.clear();
  }

  // All directed entries (src, dst, count) with src < dst or not: both directions.
  void edges(std::vector<int64_t>& src, std::vector<int64_t>& dst, std::vector<int32_t>& cnt) const {
    for (const auto& node : nodes_) {
      if (node.id < 0) continue;
      for (const Edge& e : node.nbr) {
        src.push_back(node.id);
        dst.push_back(nodes_[e.node].id);
        cnt.push_back(e.count);
      }
    }
  }

  void fires(std::vector<int64_t>& ids, std::vector<int32_t>& cnt) const {
    for (const auto& node : nodes_) {
      if (node.id < 0) continue;
      ids.push_back(node.id);
      cnt.push_back(node.fire);
    }
  }

  // Node slots of engrams (created when missing); -1 ids give -1. Slots stay valid
  // until the engram is removed, so callers can keep them next to their arrays and
  // skip the id -> slot hash lookups of every call below.
  void addNodes(const int64_t* ids, int64_t n, int64_t* slots) {
    for (int64_t i = 0; i < n; ++i) slots[i] = ids[i] < 0 ? -1 : getOrAdd(ids[i]);
  }

  // Initial long-term engram of each query (Memoria's "nearest LTM by co-fire").
  //   queries[S]: node slots (-1: a null engram whose counts are all -1)
  //   ltm[L]: node slots of the long-term engrams in local order (-1: padding)
  //   ltmPos[L]: their positions in the row (ascending over the real ones; -1 for padding)
  //   numPositions: engrams in the row (padded length), for the null-query case
  // Out: local LTM index per query, or -1. Ties are broken uniformly with rng.
  void initialLtm(const int64_t* queries, int64_t S, const int64_t* ltm, const int64_t* ltmPos, int64_t L,
                  int64_t numPositions, SplitMix64& rng, int64_t* out) const {
    std::vector<int64_t> real;  // local indices of real (non-padding) long-term engrams, ascending
    for (int64_t j = 0; j < L; ++j)
      if (ltm[j] >= 0) real.push_back(j);
    const int64_t numReal = static_cast<int64_t>(real.size());
    tag(ltm, L);
    std::vector<int32_t> ties;
    for (int64_t q = 0; q < S; ++q) {
      out[q] = -1;
      if (numReal == 0) continue;
      if (queries[q] < 0) {  // null row: every position ties at -1
        int64_t pos = rng.below(numPositions);
        auto it = std::lower_bound(real.begin(), real.end(), pos,
                                   [&](int64_t j, int64_t p) { return ltmPos[j] < p; });
        if (it != real.end() && ltmPos[*it] == pos) out[q] = *it;
        continue;
      }
      int64_t s = queries[q];
      int32_t best = 0;
      ties.clear();
      if (s >= 0) {
        for (const Edge& e : nodes_[s].nbr) {
          int32_t j = tag_[e.node];
          if (j < 0) continue;
          if (e.count > best) {
            best = e.count;
            ties.clear();
          }
          if (e.count == best) ties.push_back(j);
        }
        int32_t selfTag = tag_[s];  // a long-term query ties with itself via its fire count
        if (selfTag >= 0 && nodes_[s].fire >= best && nodes_[s].fire > 0) {
          if (nodes_[s].fire > best) ties.clear();
          best = nodes_[s].fire;
          ties.push_back(selfTag);
        }
      }
      if (best > 0) {
        std::sort(ties.begin(), ties.end());
        out[q] = ties.size() == 1 ? ties[0] : ties[static_cast<size_t>(rng.below(static_cast<int64_t>(ties.size())))];
      } else {  // every long-term engram ties at 0
        out[q] = real[static_cast<size_t>(rng.below(numReal))];
      }
    }
    untag(ltm, L);
  }

  // Memoria's greedy depth-first LTM walk, all walkers in lock step.
  //   starts[W]: local start indices (-1: a padding walker)
  //   ltm[L]: node slots of the long-term engrams in local order (-1: padding, unreachable)
  //   out[(depth + 1) * W]: row-major [depth + 1, W] local indices, -1 when a walk ends
  // Each step a walker moves to the reachable (long-term, unvisited) engram with the
  // highest co-fire count with its current engram, the lowest local index among ties
  // (count 0 counts: a walk goes on while any engram is reachable). Picks of one step
  // see the visited set of the step before. With aliasNegative (the original's
  // behaviour), a walker at -1 reads the counts of local index L-1 and a pick of -1
  // marks L-1 visited (Python's negative indexing); otherwise it stops.
  void walk(const int64_t* starts, int64_t W, const int64_t* ltm, int64_t L, int64_t depth, bool aliasNegative,
            int64_t* out) const {
    // tag_[slot] holds the local index of a *reachable* long-term engram, else -1: one
    // array read per neighbour decides reachability (visited engrams are untagged).
    std::vector<char> visited(static_cast<size_t>(L), 0);
    std::vector<int32_t> slotOf(static_cast<size_t>(L), -1);
    for (int64_t j = 0; j < L; ++j) {
      visited[j] = ltm[j] < 0;
      slotOf[j] = static_cast<int32_t>(ltm[j]);
    }
    tag(ltm, L);
    std::vector<int64_t> cur(starts, starts + W), pick(static_cast<size_t>(W));
    auto markVisited = [&](int64_t j) {
      if (j < 0) j = (aliasNegative && L > 0) ? L - 1 : -1;
      if (j < 0) return;
      visited[j] = 1;
      if (slotOf[j] >= 0) tag_[slotOf[j]] = -1;
    };
    for (int64_t w = 0; w < W; ++w) {
      out[w] = cur[w];
      markVisited(cur[w]);
    }
    int64_t firstReachable = 0;
    // Within one step every walker sees the same visited set, so walkers that stand on
    // the same engram (walks converge on hubs) make the same pick: compute it once.
    std::vector<int64_t> memo(static_cast<size_t>(L), -2);
    std::vector<int64_t> touched;
    for (int64_t d = 0; d < depth; ++d) {
      while (firstReachable < L && visited[firstReachable]) ++firstReachable;
      for (int64_t t : touched) memo[t] = -2;
      touched.clear();
      for (int64_t w = 0; w < W; ++w) {
        int64_t src = cur[w];
        if (src < 0) src = (aliasNegative && L > 0) ? L - 1 : -1;
        if (src >= 0 && memo[src] != -2) {
          pick[w] = memo[src];
          continue;
        }
        int64_t p = -1;
        if (src >= 0 && ltm[src] < 0) {  // null engram: all counts -1, argmax is index 0
          p = (L > 0 && !visited[0]) ? 0 : -1;
        } else if (src >= 0) {
          int32_t s = slotOf[src];
          // best key = (count << 32) | ~local: highest count, then lowest local index
          uint64_t best = 0;
          if (s >= 0) {
            for (const Edge& e : nodes_[s].nbr) {
              int32_t j = tag_[e.node];
              uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(e.count)) << 32) |
                             static_cast<uint32_t>(~static_cast<uint32_t>(j));
              key = j >= 0 ? key : 0;
              best = key > best ? key : best;
            }
          }
          if (best != 0) p = static_cast<int64_t>(~static_cast<uint32_t>(best & 0xFFFFFFFFULL));
          else if (firstReachable < L) p = firstReachable;
          else p = -1;  // argmax of all -1 is index 0, which is visited
        }
        if (src >= 0) {
          memo[src] = p;
          touched.push_back(src);
        }
        pick[w] = p;
      }
      for (int64_t w = 0; w < W; ++w) {
        out[(d + 1) * W + w] = pick[w];
        markVisited(pick[w]);
        cur[w] = pick[w];
      }
    }
    for (int64_t j = 0; j < L; ++j)
      if (slotOf[j] >= 0) tag_[slotOf[j]] = -1;
  }

  // Dense co-fire counts between query ids and column ids ([Q, C], row-major);
  // -1 ids are null engrams (count -1), like the original's padded entries.
  void dense(const int64_t* q, int64_t Q, const int64_t* c, int64_t C, int32_t* out) const {
    std::unordered_map<int32_t, int64_t> colOf;
    std::vector<int32_t> colSlot(static_cast<size_t>(C), -1);
    for (int64_t j = 0; j < C; ++j) colSlot[j] = c[j] < 0 ? -1 : find(c[j]);
    std::vector<int64_t> slotCol(nodes_.size(), -1);
    for (int64_t j = 0; j < C; ++j)
      if (colSlot[j] >= 0) slotCol[colSlot[j]] = j;
    for (int64_t i = 0; i < Q; ++i) {
      int32_t* row = out + i * C;
      bool nullRow = q[i] < 0;
      for (int64_t j = 0; j < C; ++j) row[j] = (nullRow || c[j] < 0) ? -1 : 0;
      if (nullRow) continue;
      int32_t s = find(q[i]);
      if (s < 0) continue;
      for (const Edge& e : nodes_[s].nbr)
        if (slotCol[e.node] >= 0) row[slotCol[e.node]] = e.count;
      if (slotCol[s] >= 0) row[slotCol[s]] = nodes_[s].fire;
    }
  }

 private:
  std::vector<Node> nodes_;
  // Scratch, per slot: local LTM index during initialLtm / walk, else -1 (dense: cache friendly).
  // Mutable: those searches are reads of the graph; HebbianGraph runs them one at a time.
  mutable std::vector<int32_t> tag_;
  std::vector<int32_t> free_;
  std::unordered_map<int64_t, int32_t> index_;

  int32_t getOrAdd(int64_t id) {
    auto it = index_.find(id);
    if (it != index_.end()) return it->second;
    int32_t s;
    if (!free_.empty()) {
      s = free_.back();
      free_.pop_back();
    } else {
      if (nodes_.size() >= static_cast<size_t>(INT32_MAX)) throw std::length_error("hebbian graph: too many engrams");
      s = static_cast<int32_t>(nodes_.size());
      nodes_.emplace_back();
      tag_.push_back(-1);
    }
    nodes_[s].id = id;
    index_.emplace(id, s);
    return s;
  }

  static void upsert(std::vector<Edge>& v, int32_t node, int32_t count) {
    auto it = std::lower_bound(v.begin(), v.end(), node, [](const Edge& e, int32_t s) { return e.node < s; });
    if (it != v.end() && it->node == node) it->count = count;
    else v.insert(it, Edge{node, count});
  }

  void tag(const int64_t* ltm, int64_t L) const {
    for (int64_t j = 0; j < L; ++j)
      if (ltm[j] >= 0) tag_[ltm[j]] = static_cast<int32_t>(j);
  }
  void untag(const int64_t* ltm, int64_t L) const {
    for (int64_t j = 0; j < L; ++j)
      if (ltm[j] >= 0) tag_[ltm[j]] = -1;
  }

 public:
  // Throws unless every non-negative entry is the slot of a live node.
  void checkSlots(const int64_t* slots, int64_t n, const char* name) const {
    for (int64_t i = 0; i < n; ++i)
      if (slots[i] >= 0 && (slots[i] >= static_cast<int64_t>(nodes_.size()) || nodes_[slots[i]].id < 0))
        throw std::invalid_argument(std::string(name) + " holds " + std::to_string(slots[i]) +
                                ", which is not the slot of a live engram");
  }
};

// One RowGraph per batch row, behind one reader-writer lock.
//
// Thread safety: concurrent readers, exclusive writers. Writers (resize, clear,
// fireTogether, remove, setEdges, setFires, addNodes) hold the lock exclusively for the
// whole call, over every row, so a reader never sees a half-applied update; readers share
// it. initialLtm and walk are readers that also tag nodes in the rows' scratch, so they run
// one at a time (alongside other readers). Arguments are checked under the lock (a row
// index or node slot is checked against the state it is used with), and a failed check
// changes nothing. The lock is a SharedMutex: the Python bindings make it release the GIL
// whenever a call has to wait for it.
class HebbianGraph {
 public:
  explicit HebbianGraph(int64_t batch) { rows_.resize(checkedBatch(batch)); }

  int64_t batch() const {
    ReadLock lock(mutex_);
    return size();
  }
  void resize(int64_t batch) {
    const size_t n = checkedBatch(batch);
    WriteLock lock(mutex_);
    rows_.resize(n);
  }
  void clear() {
    WriteLock lock(mutex_);
    for (RowGraph& r : rows_) r.clear();
  }

  // ---- reads of one row
  int64_t numNodes(int64_t row) const {
    ReadLock lock(mutex_);
    return at(row).numNodes();
  }
  int64_t numEdges(int64_t row) const {
    ReadLock lock(mutex_);
    return at(row).numEdges();
  }
  int32_t count(int64_t row, int64_t a, int64_t b) const {
    ReadLock lock(mutex_);
    return at(row).count(a, b);
  }
  // out[i] = fire count of ids[i] (0 for unknown or negative ids)
  void fireCounts(int64_t row, const int64_t* ids, int64_t n, int32_t* out) const {
    ReadLock lock(mutex_);
    const RowGraph& g = at(row);
    for (int64_t i = 0; i < n; ++i) out[i] = ids[i] < 0 ? 0 : g.fireCount(ids[i]);
  }
  void edges(int64_t row, std::vector<int64_t>& src, std::vector<int64_t>& dst, std::vector<int32_t>& cnt) const {
    ReadLock lock(mutex_);
    at(row).edges(src, dst, cnt);
  }
  void fires(int64_t row, std::vector<int64_t>& ids, std::vector<int32_t>& cnt) const {
    ReadLock lock(mutex_);
    at(row).fires(ids, cnt);
  }
  void dense(int64_t row, const int64_t* q, int64_t Q, const int64_t* c, int64_t C, int32_t* out) const {
    ReadLock lock(mutex_);
    at(row).dense(q, Q, c, C, out);
  }

  // ---- writes; `ids` is row-major [rows, k] with rows == batch
  void fireTogether(const int64_t* ids, int64_t rows, int64_t k) {
    WriteLock lock(mutex_);
    checkRows("ids", rows);
    for (int64_t b = 0; b < rows; ++b) rows_[b].fireTogether(ids + b * k, k);
  }
  void remove(const int64_t* ids, int64_t rows, int64_t k) {
    WriteLock lock(mutex_);
    checkRows("ids", rows);
    for (int64_t b = 0; b < rows; ++b) rows_[b].remove(ids + b * k, k);
  }
  // out [rows, k]: node slots of the ids (created when missing; -1 ids give -1)
  void addNodes(const int64_t* ids, int64_t rows, int64_t k, int64_t* out) {
    WriteLock lock(mutex_);
    checkRows("ids", rows);
    for (int64_t b = 0; b < rows; ++b) rows_[b].addNodes(ids + b * k, k, out + b * k);
  }
  void setEdges(int64_t row, const int64_t* src, const int64_t* dst, const int32_t* cnt, int64_t n) {
    WriteLock lock(mutex_);
    RowGraph& g = at(row);
    for (int64_t i = 0; i < n; ++i) g.setEdge(src[i], dst[i], cnt[i]);
  }
  void setFires(int64_t row, const int64_t* ids, const int32_t* cnt, int64_t n) {
    WriteLock lock(mutex_);
    RowGraph& g = at(row);
    for (int64_t i = 0; i < n; ++i) g.setFire(ids[i], cnt[i]);
  }

  // ---- the LTM search (readers with scratch); inputs row-major [rows, S] / [rows, L] / [rows, W]
  void initialLtm(const int64_t* queries, int64_t S, const int64_t* ltm, const int64_t* ltmPos, int64_t L,
                  int64_t rows, int64_t numPositions, uint64_t seed, int64_t* out) const {
    if (numPositions < 1) throw std::invalid_argument("num_positions must be >= 1, got " + std::to_string(numPositions));
    ReadLock lock(mutex_);
    checkRows("queries", rows);
    for (int64_t b = 0; b < rows; ++b) {
      rows_[b].checkSlots(queries + b * S, S, "queries");
      rows_[b].checkSlots(ltm + b * L, L, "ltm");
    }
    std::lock_guard<std::mutex> scratch(scratchMutex_);
    SplitMix64 rng(seed);
    for (int64_t b = 0; b < rows; ++b)
      rows_[b].initialLtm(queries + b * S, S, ltm + b * L, ltmPos + b * L, L, numPositions, rng, out + b * S);
  }
  // out [rows, (depth + 1) * W]
  void walk(const int64_t* starts, int64_t W, const int64_t* ltm, int64_t L, int64_t rows, int64_t depth,
            bool aliasNegative, int64_t* out) const {
    if (depth < 0) throw std::invalid_argument("depth must be >= 0, got " + std::to_string(depth));
    for (int64_t i = 0; i < rows * W; ++i)
      if (starts[i] >= L)
        throw std::invalid_argument("starts must be < the LTM length " + std::to_string(L) + ", got " +
                                    std::to_string(starts[i]));
    ReadLock lock(mutex_);
    checkRows("starts", rows);
    for (int64_t b = 0; b < rows; ++b) rows_[b].checkSlots(ltm + b * L, L, "ltm");
    std::lock_guard<std::mutex> scratch(scratchMutex_);
    for (int64_t b = 0; b < rows; ++b)
      rows_[b].walk(starts + b * W, W, ltm + b * L, L, depth, aliasNegative, out + b * (depth + 1) * W);
  }

 private:
  static size_t checkedBatch(int64_t batch) {
    if (batch < 0) throw std::invalid_argument("batch must be >= 0, got " + std::to_string(batch));
    return static_cast<size_t>(batch);
  }
  int64_t size() const { return static_cast<int64_t>(rows_.size()); }
  void checkRows(const char* name, int64_t rows) const {
    if (rows != size())
      throw std::invalid_argument(std::string(name) + " must have " + std::to_string(size()) +
                                  " rows (the batch), got " + std::to_string(rows));
  }
  const RowGraph& at(int64_t row) const {
    if (row < 0 || row >= size())
      throw std::invalid_argument("row must be in [0, " + std::to_string(size()) + "), got " + std::to_string(row));
    return rows_[static_cast<size_t>(row)];
  }
  RowGraph& at(int64_t row) { return const_cast<RowGraph&>(static_cast<const HebbianGraph*>(this)->at(row)); }

  mutable SharedMutex mutex_;         // the reader-writer contract above
  mutable std::mutex scratchMutex_;   // RowGraph::tag_ during initialLtm / walk
  std::vector<RowGraph> rows_;
};

}  // namespace hebbian
}  // namespace mnemonix
