// Plastic prefix memory: the graph engine (header-only, no Python, no torch).
//
// Reproduces the learning rule of the research "Plastic Memory Constructor"
// (seed 003; restated in shared/specs/plastic_memory.md) node for node and
// edge for edge, with indexes instead of scans (string machinery: strings.hpp):
//
//   * node strings are found through an open-addressing hash index keyed by a
//     rolling hash, so every substring of a string is looked up in O(1);
//   * each r_level keeps its nodes in a string-ordered set (maintained
//     incrementally on every lift) and a histogram of (first code point, length). The
//     longest common prefix of s with a level is the longer of the common
//     prefixes with s's two neighbours in that order; the nodes sharing it are a
//     contiguous range. Substring tests "x in m" over a level look up every
//     substring of m whose first code point and length occur in the level (or
//     scan a small level);
//   * lift / potentiate add the number of paths (the research code walks every
//     path) computed by a Kahn topological pass over the reached sub-DAG with
//     explicit queues: exact for nodes reached by several paths, no recursion.
//     Every edge goes from a proper substring to a longer string, so the graph
//     is a DAG.
//
// Node order = id order (nodes are never removed). Edge order = for each node
// in id order, its out-edges in insertion order (as networkx): out-adjacency is
// an insertion-ordered vector with stable erase.
//
// Thread safety: concurrent readers, exclusive writers. Every public method takes the
// engine's reader-writer lock itself: writers (learn, learnMany, potentiate) hold it
// exclusively for the whole update, so a reader never sees a half-applied learn; readers
// (everything const) share it, and a multi-part read (snapshot: nodes, edges, counts and
// samples together) takes it once, so its parts agree. learnMany applies its batch under
// one lock (readers see all of it or none). infer also uses the engine's search scratch,
// so concurrent infers run one at a time (alongside other readers). The lock is a
// common/shared_mutex.hpp SharedMutex: the Python bindings make it release the GIL
// whenever a call has to wait for it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/rng.hpp"
#include "common/shared_mutex.hpp"
#include "plastic/snapshot.hpp"
#include "plastic/strings.hpp"

namespace mnemonix {
namespace plastic {

class Engine {
 public:
  explicit Engine(bool exactCounts = false) : exactCounts_(exactCounts) { slots_.assign(16, -1); }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // ---------------------------------------------------------------- reads (shared lock)
  bool exactCounts() const { return exactCounts_; }  // immutable
  size_t numNodes() const {
    ReadLock lock(mutex_);
    return strings_.size();
  }
  size_t numEdges() const {
    ReadLock lock(mutex_);
    return numEdges_;
  }
  int64_t samples() const {
    ReadLock lock(mutex_);
    return samples_;
  }
  // Number of completed writes (learn, learnMany, potentiate calls): a changed version means
  // a changed graph, so derived read-only views (a Predictor) know when to rebuild.
  uint64_t version() const {
    ReadLock lock(mutex_);
    return version_;
  }
  size_t memoryBytes() const {
    ReadLock lock(mutex_);
    return memoryBytesLocked();
  }
  bool contains(View s) const {
    ReadLock lock(mutex_);
    return find(s) >= 0;
  }
  std::optional<NodeInfo> node(View s) const {
    ReadLock lock(mutex_);
    const NodeId id = find(s);
    if (id < 0) return std::nullopt;
    return NodeInfo{count_[id], level_[id]};
  }
  Snapshot snapshot() const {
    ReadLock lock(mutex_);
    return snapshotLocked();
  }

  // Start at the node that is a prefix of `prefix` with the highest r_level (ties: the
  // longest); then step to a child (skipping children with more than one path from the
  // current node), greedily (largest count, first in edge order) or sampled in proportion
  // to counts (uniform when all counts are 0), until the string ends with `stop` or no
  // child is left. While the walk is shorter than `prefix`, children consistent with the
  // prefix are preferred when there are any.
  InferResult infer(View prefix, View stop, bool sample, uint64_t seed) const {
    ReadLock lock(mutex_);
    std::lock_guard<std::mutex> scratch(scratchMutex_);
    return inferLocked(prefix, stop, sample, seed);
  }

  // ---------------------------------------------------------------- writes (exclusive lock)
  void learn(View s) {
    if (s.empty()) throw std::invalid_argument("s must be a non-empty str, got ''");
    WriteLock lock(mutex_);
    ++version_;  // first: a learn that throws part way (out of memory) has changed the graph
    learnLocked(s);
  }
  // Every sample is checked before any is learned; the batch is applied under one lock.
  void learnMany(const std::vector<Str>& samples) {
    for (size_t i = 0; i < samples.size(); ++i)
      if (samples[i].empty())
        throw std::invalid_argument("samples[" + std::to_string(i) + "] must be a non-empty str, got ''");
    WriteLock lock(mutex_);
    ++version_;  // first: a learn that throws part way (out of memory) has changed the graph
    for (const Str& s : samples) learnLocked(s);
  }
  // count += amount * (number of paths from the node to s), floored at 0 when amount < 0.
  void potentiate(View s, int64_t amount) {
    WriteLock lock(mutex_);
    const NodeId id = find(s);
    if (id < 0) throw std::invalid_argument("s must be a node of the memory");
    ++version_;
    potentiateId(id, amount);
  }

  // A new engine holding a saved graph; every field is checked (std::invalid_argument
  // naming the field) before it is used.
  static std::unique_ptr<Engine> restore(bool exactCounts, int64_t samples, const SnapshotView& a) {
    checkSnapshot(samples, a);  // sizes, ranges and values; duplicates are checked below
    const size_t n = a.count.size;
    auto engine = std::make_unique<Engine>(exactCounts);
    Str buf;
    for (size_t i = 0; i < n; ++i) {
      const auto begin = static_cast<size_t>(a.offsets[i]), end = static_cast<size_t>(a.offsets[i + 1]);
      buf.resize(end - begin);
      for (size_t k = 0; k < buf.size(); ++k) buf[k] = static_cast<char32_t>(a.codepoints[begin + k]);
      if (engine->find(buf) >= 0)
        throw std::invalid_argument("node " + std::to_string(i) + " repeats the string of an earlier node");
      engine->addNode(buf, a.count[i], a.rLevel[i]);
    }
    for (size_t k = 0; k < a.edgeSrc.size; ++k) {
      const auto su = static_cast<NodeId>(a.edgeSrc[k]), sv = static_cast<NodeId>(a.edgeDst[k]);
      if (su == sv || engine->hasEdge(su, sv))
        throw std::invalid_argument("edge " + std::to_string(k) + " is a self loop or a duplicate edge");
      engine->addEdge(su, sv);
    }
    engine->samples_ = samples;
    return engine;
  }

 private:
  NodeId find(View s) const { return findHashed(RollingHash::of(s), s); }

  // ---------------------------------------------------------------- learning
  void learnLocked(View s) {
    ++samples_;
    if (strings_.empty()) {
      addNode(s, 1, 0);
      return;
    }
    int64_t level = levels_.rbegin()->first;  // L: the highest r_level
    for (;;) {
      const Level& here = levels_.at(level);
      std::set<LevelKey, ByString>::const_iterator pos;
      const size_t mlen = maxCommonPrefix(here, s, pos);
      const View m = s.substr(0, mlen);
      const int64_t belowLevel = level - 1;
      auto belowIt = levels_.find(belowLevel);
      if (belowIt == levels_.end()) {
        collectMembers(here, m, pos);
        subs_.clear();
        place(s, m, belowLevel);
        return;
      }
      collectSubstrings(belowIt->second, belowLevel, m);
      if (!subs_.empty()) {
        collectMembers(here, m, pos);
        place(s, m, belowLevel);
        return;
      }
      // "m in R[b]" would make subs non-empty (m in m), so the rule recurses one level down.
      level = belowLevel;
    }
  }

  // ---------------------------------------------------------------- inference
  InferResult inferLocked(View prefix, View stop, bool sample, uint64_t seed) const {
    InferResult out;
    SubstringHasher hasher;
    hasher.reset(prefix);
    NodeId cur = -1;
    for (size_t len = 0; len <= prefix.size(); ++len) {
      NodeId id = findHashed(hasher.hash(0, len), prefix.substr(0, len));
      if (id >= 0 && (cur < 0 || level_[id] >= level_[cur])) cur = id;
    }
    if (cur < 0) return out;
    SplitMix64 rng(seed);
    out.path.push_back(strings_[cur]);
    std::vector<NodeId> candidates, consistent;
    for (;;) {
      const Str& here = strings_[cur];
      if (!stop.empty() && here.size() >= stop.size() &&
          View(here).substr(here.size() - stop.size()) == stop)
        break;
      candidates.clear();
      for (NodeId c : succ_[cur])
        if (singlePathChild(cur, c)) candidates.push_back(c);
      if (here.size() < prefix.size()) {
        consistent.clear();
        for (NodeId c : candidates) {
          View cv = strings_[c];
          size_t n = std::min(cv.size(), prefix.size());
          if (cv.substr(0, n) == prefix.substr(0, n)) consistent.push_back(c);
        }
        if (!consistent.empty()) candidates.swap(consistent);
      }
      if (candidates.empty()) break;
      long double total = 0;
      for (NodeId c : candidates) total += static_cast<long double>(count_[c]);
      const size_t pick = sample ? samplePick(candidates, total, rng.uniform()) : greedyPick(candidates);
      double p = total > 0 ? static_cast<double>(static_cast<long double>(count_[candidates[pick]]) / total)
                           : 1.0 / static_cast<double>(candidates.size());
      cur = candidates[pick];
      out.path.push_back(strings_[cur]);
      out.probs.push_back(p);
    }
    return out;
  }
  size_t greedyPick(const std::vector<NodeId>& candidates) const {
    size_t pick = 0;
    for (size_t i = 1; i < candidates.size(); ++i)
      if (count_[candidates[i]] > count_[candidates[pick]]) pick = i;
    return pick;
  }
  // In proportion to counts (uniform when they are all 0); u is uniform in [0, 1).
  size_t samplePick(const std::vector<NodeId>& candidates, long double total, double u) const {
    if (!(total > 0)) return std::min(candidates.size() - 1, static_cast<size_t>(u * candidates.size()));
    long double target = static_cast<long double>(u) * total, acc = 0;
    for (size_t i = 0; i < candidates.size(); ++i) {
      acc += static_cast<long double>(count_[candidates[i]]);
      if (target < acc) return i;
    }
    size_t pick = candidates.size() - 1;  // rounding at the top end: last child with a positive count
    while (count_[candidates[pick]] <= 0 && pick > 0) --pick;
    return pick;
  }

  // ---------------------------------------------------------------- bulk state
  Snapshot snapshotLocked() const {
    Snapshot out;
    size_t total = 0;
    for (const Str& s : strings_) total += s.size();
    const size_t n = strings_.size();
    out.codepoints.reserve(total);
    out.offsets.reserve(n + 1);
    out.count.assign(count_.begin(), count_.end());
    out.rLevel.assign(level_.begin(), level_.end());
    out.edgeSrc.reserve(numEdges_);
    out.edgeDst.reserve(numEdges_);
    for (size_t i = 0; i < n; ++i) {
      for (char32_t c : strings_[i]) out.codepoints.push_back(static_cast<uint32_t>(c));
      out.offsets.push_back(static_cast<int64_t>(out.codepoints.size()));
      for (NodeId v : succ_[i]) {
        out.edgeSrc.push_back(static_cast<int64_t>(i));
        out.edgeDst.push_back(v);
      }
    }
    out.samples = samples_;
    out.memoryBytes = memoryBytesLocked();
    return out;
  }
  size_t memoryBytesLocked() const {
    size_t b = 0;
    for (const Str& s : strings_) b += sizeof(Str) + (s.capacity() > 3 ? (s.capacity() + 1) * sizeof(char32_t) : 0);
    b += hash_.capacity() * 8 + count_.capacity() * 8 + level_.capacity() * 8;
    for (size_t i = 0; i < succ_.size(); ++i)
      b += 2 * sizeof(std::vector<NodeId>) + (succ_[i].capacity() + pred_[i].capacity()) * sizeof(NodeId);
    b += slots_.capacity() * sizeof(NodeId);
    b += strings_.size() * 64;  // one red-black tree node (header + LevelKey) per node in its level set
    return b;
  }

  // ---- string index (open addressing, linear probing; nodes are never removed)
  static size_t slotOf(uint64_t h, size_t mask) {
    uint64_t z = h * 0x9e3779b97f4a7c15ULL;
    return static_cast<size_t>(z ^ (z >> 29)) & mask;
  }
  NodeId findHashed(uint64_t h, View s) const {
    const size_t mask = slots_.size() - 1;
    for (size_t i = slotOf(h, mask);; i = (i + 1) & mask) {
      NodeId id = slots_[i];
      if (id < 0) return -1;
      if (hash_[id] == h && View(strings_[id]) == s) return id;
    }
  }
  void indexInsert(NodeId id) {
    if ((strings_.size()) * 2 > slots_.size()) {
      std::vector<NodeId> bigger(slots_.size() * 2, -1);
      slots_.swap(bigger);
      for (NodeId old : bigger)
        if (old >= 0 && old != id) placeSlot(old);
    }
    placeSlot(id);
  }
  void placeSlot(NodeId id) {
    const size_t mask = slots_.size() - 1;
    size_t i = slotOf(hash_[id], mask);
    while (slots_[i] >= 0) i = (i + 1) & mask;
    slots_[i] = id;
  }

  // ---- nodes, edges, levels
  NodeId addNode(View s, int64_t count, int64_t rLevel) {
    if (strings_.size() >= static_cast<size_t>(std::numeric_limits<NodeId>::max()))
      throw std::length_error("plastic memory is full (2^31 - 1 nodes)");
    NodeId id = static_cast<NodeId>(strings_.size());
    strings_.emplace_back(s);
    hash_.push_back(RollingHash::of(s));
    count_.push_back(count);
    level_.push_back(rLevel);
    succ_.emplace_back();
    pred_.emplace_back();
    stamp_.push_back(0);
    pathCount_.push_back(0);
    indeg_.push_back(0);
    indexInsert(id);
    levelInsert(id, rLevel);
    return id;
  }
  void levelInsert(NodeId id, int64_t lvl) {
    auto it = levels_.try_emplace(lvl, ByString{&strings_}).first;
    it->second.sorted.insert(LevelKey{Head::of(strings_[id]), id});
    const Str& str = strings_[id];
    if (str.empty())
      ++it->second.empty;
    else
      ++it->second.lengthsByFirst[str[0]][str.size()];
  }
  void levelErase(NodeId id, int64_t lvl) {
    auto it = levels_.find(lvl);
    it->second.sorted.erase(LevelKey{Head::of(strings_[id]), id});
    const Str& str = strings_[id];
    if (str.empty()) {
      --it->second.empty;
    } else {
      auto firstIt = it->second.lengthsByFirst.find(str[0]);
      auto lenIt = firstIt->second.find(str.size());
      if (--lenIt->second == 0) firstIt->second.erase(lenIt);
      if (firstIt->second.empty()) it->second.lengthsByFirst.erase(firstIt);
    }
    if (it->second.sorted.empty()) levels_.erase(it);
  }
  void moveLevel(NodeId id, int64_t newLevel) {
    if (newLevel == level_[id]) return;
    levelErase(id, level_[id]);
    level_[id] = newLevel;
    levelInsert(id, newLevel);
  }
  bool hasEdge(NodeId u, NodeId v) const {
    if (succ_[u].size() <= pred_[v].size()) return std::find(succ_[u].begin(), succ_[u].end(), v) != succ_[u].end();
    return std::find(pred_[v].begin(), pred_[v].end(), u) != pred_[v].end();
  }
  void addEdge(NodeId u, NodeId v) {
    succ_[u].push_back(v);
    pred_[v].push_back(u);
    ++numEdges_;
  }
  void addEdgeUnless(NodeId u, NodeId v) {
    if (u != v && !hasEdge(u, v)) addEdge(u, v);
  }

  // ---- the rule's queries over one level
  // Longest common prefix of s with any node of the level: the longer of the common
  // prefixes with s's neighbours in string order. Leaves s's position in `pos`.
  size_t maxCommonPrefix(const Level& lvl, View s, std::set<LevelKey, ByString>::const_iterator& pos) const {
    pos = lvl.sorted.lower_bound(Probe{Head::of(s), s});
    size_t best = 0;
    if (pos != lvl.sorted.end()) best = commonPrefixLength(strings_[pos->id], s);
    if (pos != lvl.sorted.begin()) best = std::max(best, commonPrefixLength(strings_[std::prev(pos)->id], s));
    return best;
  }
  // Nodes of the level having m as a prefix (m = s[:max common prefix]), in node order:
  // the contiguous run around s's position in string order.
  void collectMembers(const Level& lvl, View m, std::set<LevelKey, ByString>::const_iterator pos) {
    members_.clear();
    auto hasPrefix = [&](NodeId id) {
      View x = strings_[id];
      return x.size() >= m.size() && x.substr(0, m.size()) == m;
    };
    for (auto it = pos; it != lvl.sorted.end() && hasPrefix(it->id); ++it) members_.push_back(it->id);
    for (auto it = pos; it != lvl.sorted.begin();) {
      --it;
      if (!hasPrefix(it->id)) break;
      members_.push_back(it->id);
    }
    std::sort(members_.begin(), members_.end());
  }
  // Nodes of level `lvlId` that are substrings of m (any position). Order is irrelevant
  // to the result of place(): each contributes edges from a distinct source.
  // Small levels are scanned; otherwise every substring m[i:i+len] whose first code point
  // and length occur among the level's nodes is looked up in the hash index.
  void collectSubstrings(const Level& lvl, int64_t lvlId, View m) {
    subs_.clear();
    if (lvl.sorted.size() <= 4) {
      for (const LevelKey& key : lvl.sorted)
        if (m.find(strings_[key.id]) != View::npos) subs_.push_back(key.id);
      return;
    }
    if (lvl.empty > 0) {
      NodeId id = find(View());
      if (id >= 0 && level_[id] == lvlId) subs_.push_back(id);
    }
    bool hashed = false;
    const uint32_t tag = nextStamp();
    for (size_t i = 0; i < m.size(); ++i) {
      auto firstIt = lvl.lengthsByFirst.find(m[i]);
      if (firstIt == lvl.lengthsByFirst.end()) continue;
      if (!hashed) {
        hasher_.reset(m);
        hashed = true;
      }
      for (const auto& [len, n] : firstIt->second) {
        if (i + len > m.size()) break;
        NodeId id = findHashed(hasher_.hash(i, len), m.substr(i, len));
        if (id >= 0 && level_[id] == lvlId && stamp_[id] != tag) {
          stamp_[id] = tag;
          subs_.push_back(id);
        }
      }
    }
  }

  // ---- place(s, m, members_, subs_, r): steps 1-9 of the spec
  void place(View s, View m, int64_t r) {
    // Copy m: it views s, which stays valid, but be explicit about ownership.
    const Str mStr(m);
    for (NodeId u : subs_) {
      auto& out = succ_[u];
      size_t keep = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        NodeId v = out[i];
        if (View(strings_[v]).find(mStr) != View::npos) {
          auto& in = pred_[v];
          in.erase(std::find(in.begin(), in.end(), u));
          --numEdges_;
        } else {
          out[keep++] = v;
        }
      }
      out.resize(keep);
    }
    NodeId mid = find(mStr);
    const bool existed = mid >= 0;
    if (!existed) mid = addNode(mStr, 1, r);
    NodeId sid = find(s);
    if (sid < 0) sid = addNode(s, 0, satAdd(r, 1));
    addEdgeUnless(mid, sid);
    for (NodeId u : members_) addEdgeUnless(mid, u);
    for (NodeId u : subs_) addEdgeUnless(u, mid);
    if (!existed && exactCounts_) {
      int64_t total = 0;
      for (NodeId c : succ_[mid]) total = satAdd(total, count_[c]);
      count_[mid] = total;
    }
    if (!existed) lift(mid);
    potentiateId(sid, 1);
  }

  uint32_t nextStamp() const {  // scratch: writers, or a reader holding scratchMutex_
    if (++stampTag_ == 0) {
      std::fill(stamp_.begin(), stamp_.end(), 0);
      stampTag_ = 1;
    }
    return stampTag_;
  }

  // Collect the nodes reachable from `root` along `adj` (succ_ or pred_), then count
  // paths root -> v with Kahn's algorithm on that sub-DAG. Fills reached_ and pathCount_.
  void countPaths(NodeId root, const std::vector<std::vector<NodeId>>& adj) {
    const uint32_t tag = nextStamp();
    reached_.clear();
    stack_.clear();
    stack_.push_back(root);
    stamp_[root] = tag;
    while (!stack_.empty()) {
      NodeId v = stack_.back();
      stack_.pop_back();
      reached_.push_back(v);
      pathCount_[v] = 0;
      indeg_[v] = 0;
      for (NodeId w : adj[v])
        if (stamp_[w] != tag) {
          stamp_[w] = tag;
          stack_.push_back(w);
        }
    }
    for (NodeId v : reached_)
      for (NodeId w : adj[v]) ++indeg_[w];
    pathCount_[root] = 1;
    stack_.clear();
    stack_.push_back(root);
    while (!stack_.empty()) {
      NodeId v = stack_.back();
      stack_.pop_back();
      for (NodeId w : adj[v]) {
        pathCount_[w] = satAdd(pathCount_[w], pathCount_[v]);
        if (--indeg_[w] == 0) stack_.push_back(w);
      }
    }
  }

  void lift(NodeId root) {
    countPaths(root, succ_);
    for (NodeId v : reached_) moveLevel(v, satAdd(level_[v], pathCount_[v]));
  }

  void potentiateId(NodeId target, int64_t amount) {
    if (amount == 0) return;
    countPaths(target, pred_);
    for (NodeId v : reached_) {
      int64_t c = satAdd(count_[v], satMul(amount, pathCount_[v]));
      count_[v] = c < 0 ? 0 : c;
    }
  }

  // Does child c of `from` have exactly one path from `from` (the edge itself)? It has
  // another one iff some other parent of c is reachable from `from`. Reachable strings
  // are longer than `from` and shorter than c (every edge lengthens), which bounds the search.
  bool singlePathChild(NodeId from, NodeId c) const {
    if (pred_[c].size() <= 1) return true;
    targets_.clear();
    for (NodeId p : pred_[c])
      if (p != from) targets_.push_back(p);
    if (targets_.empty()) return true;
    std::sort(targets_.begin(), targets_.end());
    const uint32_t seen = nextStamp();
    const size_t maxLen = strings_[c].size();
    stack_.clear();
    stack_.push_back(from);
    stamp_[from] = seen;
    while (!stack_.empty()) {
      NodeId v = stack_.back();
      stack_.pop_back();
      for (NodeId w : succ_[v]) {
        if (w == c || stamp_[w] == seen || strings_[w].size() >= maxLen) continue;
        if (std::binary_search(targets_.begin(), targets_.end(), w)) return false;
        stamp_[w] = seen;
        stack_.push_back(w);
      }
    }
    return true;
  }

  const bool exactCounts_;
  mutable SharedMutex mutex_;  // the reader-writer contract (see the top of the file)
  int64_t samples_ = 0;
  uint64_t version_ = 0;
  size_t numEdges_ = 0;
  std::deque<Str> strings_;  // deque: stable addresses for the views held by the level sets
  std::vector<uint64_t> hash_;
  std::vector<int64_t> count_, level_;
  std::vector<std::vector<NodeId>> succ_, pred_;
  std::map<int64_t, Level> levels_;
  std::vector<NodeId> slots_;
  // Search scratch. Writers use it under the exclusive lock; infer (a reader) uses
  // stamp_, stack_ and targets_ under the shared lock plus scratchMutex_.
  mutable std::mutex scratchMutex_;
  mutable std::vector<uint32_t> stamp_;
  mutable uint32_t stampTag_ = 0;
  mutable std::vector<NodeId> stack_, targets_;
  std::vector<int64_t> pathCount_;
  std::vector<int32_t> indeg_;
  std::vector<NodeId> reached_, members_, subs_;
  SubstringHasher hasher_;
};

}  // namespace plastic
}  // namespace mnemonix
