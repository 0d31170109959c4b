// Plastic prefix memory: the graph engine (header-only, no Python, no torch).
//
// Reproduces the learning rule of the research "Plastic Memory Constructor"
// (seed 003; restated in shared/specs/plastic_memory.md) node for node and
// edge for edge, with indexes instead of scans:
//
//   * node strings are UTF-32 (one char32_t per code point, as Python's str),
//     found through an open-addressing hash index keyed by a polynomial rolling
//     hash (mod 2^61 - 1), so that every substring of a string can be hashed in
//     O(1) from its prefix hashes;
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
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mnemonix {
namespace plastic {

using Str = std::u32string;
using View = std::u32string_view;
using NodeId = int32_t;

constexpr int64_t kMax64 = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin64 = std::numeric_limits<int64_t>::min();

inline int64_t sat_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? kMax64 : kMin64;
  return r;
}

inline int64_t sat_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return ((a < 0) != (b < 0)) ? kMin64 : kMax64;
  return r;
}

// Polynomial hash mod the Mersenne prime 2^61 - 1: h(c_0..c_{n-1}) = sum (c_i + 1) B^(n-1-i).
struct RollingHash {
  static constexpr uint64_t kMod = (uint64_t{1} << 61) - 1;
  static constexpr uint64_t kBase = 0x1d8e4e27c47d124fULL % kMod;

  static uint64_t mulmod(uint64_t a, uint64_t b) {
    unsigned __int128 x = static_cast<unsigned __int128>(a) * b;
    uint64_t r = static_cast<uint64_t>(x & kMod) + static_cast<uint64_t>(x >> 61);
    r = (r & kMod) + (r >> 61);
    return r >= kMod ? r - kMod : r;
  }
  static uint64_t push(uint64_t h, char32_t c) {
    uint64_t r = mulmod(h, kBase) + static_cast<uint64_t>(c) + 1;
    return r >= kMod ? r - kMod : r;
  }
  static uint64_t of(View s) {
    uint64_t h = 0;
    for (char32_t c : s) h = push(h, c);
    return h;
  }
};

// Prefix hashes of one string: hash of any substring in O(1).
class SubstringHasher {
 public:
  void reset(View s) {
    prefix_.assign(s.size() + 1, 0);
    if (power_.empty()) power_.push_back(1);
    while (power_.size() < s.size() + 1) power_.push_back(RollingHash::mulmod(power_.back(), RollingHash::kBase));
    for (size_t i = 0; i < s.size(); ++i) prefix_[i + 1] = RollingHash::push(prefix_[i], s[i]);
  }
  uint64_t hash(size_t begin, size_t len) const {
    uint64_t a = prefix_[begin + len];
    uint64_t b = RollingHash::mulmod(prefix_[begin], power_[len]);
    return a >= b ? a - b : a + RollingHash::kMod - b;
  }

 private:
  std::vector<uint64_t> prefix_, power_;
};

// A level's sort key: the first six code points packed three to a 64-bit word (21 bits
// each, first code point in the high bits, zero padded) and the node id. Packed heads
// compare like the strings they start (zero is the smallest code point, so padding sorts
// a shorter string first); only equal heads need the full strings. This keeps most
// comparisons inside the tree node, away from the string heap.
struct Head {
  uint64_t hi = 0, lo = 0;
  static Head of(View s) {
    Head h;
    for (size_t i = 0; i < 6; ++i) {
      uint64_t c = i < s.size() ? static_cast<uint64_t>(s[i]) : 0;
      if (i < 3)
        h.hi |= c << (42 - 21 * i);
      else
        h.lo |= c << (42 - 21 * (i - 3));
    }
    return h;
  }
  // -1, 0, +1; 0 means "look at the strings".
  int cmp(const Head& o) const {
    if (hi != o.hi) return hi < o.hi ? -1 : 1;
    if (lo != o.lo) return lo < o.lo ? -1 : 1;
    return 0;
  }
};

struct LevelKey {
  Head head;
  NodeId id;
};

struct Probe {  // a string looked up in a level
  Head head;
  View str;
};

// Orders level keys by their strings; transparent, so a level can be searched by a Probe.
struct ByString {
  const std::deque<Str>* strings;
  using is_transparent = void;
  bool operator()(const LevelKey& a, const LevelKey& b) const {
    int c = a.head.cmp(b.head);
    return c != 0 ? c < 0 : (*strings)[a.id] < (*strings)[b.id];
  }
  bool operator()(const LevelKey& a, const Probe& b) const {
    int c = a.head.cmp(b.head);
    return c != 0 ? c < 0 : View((*strings)[a.id]) < b.str;
  }
  bool operator()(const Probe& a, const LevelKey& b) const {
    int c = a.head.cmp(b.head);
    return c != 0 ? c < 0 : a.str < View((*strings)[b.id]);
  }
};

struct Level {
  explicit Level(ByString cmp) : sorted(cmp) {}
  std::set<LevelKey, ByString> sorted;     // the level's nodes in string order
  // first code point -> (string length -> number of nodes); the empty string is counted apart
  std::map<char32_t, std::map<size_t, int64_t>> lengths_by_first;
  int64_t empty = 0;
};

struct InferResult {
  std::vector<NodeId> path;     // visited nodes, start node first (empty: no node is a prefix)
  std::vector<double> probs;    // probability of each step (path.size() - 1 entries)
};

inline size_t common_prefix_length(View a, View b) {
  size_t n = std::min(a.size(), b.size()), i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

class Engine {
 public:
  explicit Engine(bool exact_counts = false) : exact_counts_(exact_counts) { slots_.assign(16, -1); }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  bool exact_counts() const { return exact_counts_; }
  size_t num_nodes() const { return strings_.size(); }
  size_t num_edges() const { return num_edges_; }
  int64_t samples() const { return samples_; }
  const Str& string(NodeId id) const { return strings_[id]; }
  int64_t count(NodeId id) const { return count_[id]; }
  int64_t r_level(NodeId id) const { return level_[id]; }
  const std::vector<NodeId>& successors(NodeId id) const { return succ_[id]; }
  const std::map<int64_t, Level>& levels() const { return levels_; }

  NodeId find(View s) const { return find_hashed(RollingHash::of(s), s); }

  // ---------------------------------------------------------------- learning
  void learn(View s) {
    if (s.empty()) throw std::invalid_argument("s must be a non-empty string, got ''");
    ++samples_;
    if (strings_.empty()) {
      add_node(s, 1, 0);
      return;
    }
    int64_t level = levels_.rbegin()->first;  // L: the highest r_level
    for (;;) {
      const Level& here = levels_.at(level);
      std::set<LevelKey, ByString>::const_iterator pos;
      const size_t mlen = max_common_prefix(here, s, pos);
      const View m = s.substr(0, mlen);
      const int64_t below_level = level - 1;
      auto below_it = levels_.find(below_level);
      if (below_it == levels_.end()) {
        collect_members(here, m, pos);
        subs_.clear();
        place(s, m, below_level);
        return;
      }
      collect_substrings(below_it->second, below_level, m);
      if (!subs_.empty()) {
        collect_members(here, m, pos);
        place(s, m, below_level);
        return;
      }
      // "m in R[b]" would make subs non-empty (m in m), so the rule recurses one level down.
      level = below_level;
    }
  }

  // count += amount * (number of paths from the node to s), floored at 0 when amount < 0.
  void potentiate(View s, int64_t amount) {
    NodeId id = find(s);
    if (id < 0) throw std::invalid_argument("s must be a node of the memory");
    potentiate_id(id, amount);
  }

  // ---------------------------------------------------------------- inference
  // Start at the node that is a prefix of `prefix` with the highest r_level (ties: the
  // longest); then step to a child (skipping children with more than one path from the
  // current node), greedily (largest count, first in edge order) or sampled in proportion
  // to counts (uniform when all counts are 0), until the string ends with `stop` or no
  // child is left. While the walk is shorter than `prefix`, children consistent with the
  // prefix are preferred when there are any.
  InferResult infer(View prefix, View stop, bool sample, uint64_t seed) {
    InferResult out;
    SubstringHasher hasher;
    hasher.reset(prefix);
    NodeId cur = -1;
    for (size_t len = 0; len <= prefix.size(); ++len) {
      NodeId id = find_hashed(hasher.hash(0, len), prefix.substr(0, len));
      if (id >= 0 && (cur < 0 || level_[id] >= level_[cur])) cur = id;
    }
    if (cur < 0) return out;
    uint64_t state = seed;
    out.path.push_back(cur);
    std::vector<NodeId> candidates, consistent;
    for (;;) {
      const Str& here = strings_[cur];
      if (!stop.empty() && here.size() >= stop.size() &&
          View(here).substr(here.size() - stop.size()) == stop)
        break;
      candidates.clear();
      for (NodeId c : succ_[cur])
        if (single_path_child(cur, c)) candidates.push_back(c);
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
      size_t pick = 0;
      if (!sample) {
        for (size_t i = 1; i < candidates.size(); ++i)
          if (count_[candidates[i]] > count_[candidates[pick]]) pick = i;
      } else {
        double u = static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;
        if (total > 0) {
          long double target = static_cast<long double>(u) * total, acc = 0;
          pick = candidates.size();
          for (size_t i = 0; i < candidates.size(); ++i) {
            acc += static_cast<long double>(count_[candidates[i]]);
            if (target < acc) {
              pick = i;
              break;
            }
          }
          if (pick == candidates.size()) {  // rounding at the top end: last child with a positive count
            pick = candidates.size() - 1;
            while (count_[candidates[pick]] <= 0 && pick > 0) --pick;
          }
        } else {
          pick = std::min(candidates.size() - 1, static_cast<size_t>(u * candidates.size()));
        }
      }
      double p = total > 0 ? static_cast<double>(static_cast<long double>(count_[candidates[pick]]) / total)
                           : 1.0 / static_cast<double>(candidates.size());
      cur = candidates[pick];
      out.path.push_back(cur);
      out.probs.push_back(p);
    }
    return out;
  }

  // ---------------------------------------------------------------- bulk state
  // Append a node (used by load). Throws on a duplicate string.
  NodeId restore_node(View s, int64_t count, int64_t r_level) {
    if (find(s) >= 0) throw std::invalid_argument("duplicate node string");
    return add_node(s, count, r_level);
  }
  void restore_edge(NodeId u, NodeId v) {
    if (u < 0 || v < 0 || static_cast<size_t>(u) >= num_nodes() || static_cast<size_t>(v) >= num_nodes())
      throw std::invalid_argument("edge endpoint out of range");
    if (u == v || has_edge(u, v)) throw std::invalid_argument("self loop or duplicate edge");
    add_edge(u, v);
  }
  void set_samples(int64_t n) { samples_ = n; }

  size_t memory_bytes() const {
    size_t b = 0;
    for (const Str& s : strings_) b += sizeof(Str) + (s.capacity() > 3 ? (s.capacity() + 1) * sizeof(char32_t) : 0);
    b += hash_.capacity() * 8 + count_.capacity() * 8 + level_.capacity() * 8;
    for (size_t i = 0; i < succ_.size(); ++i)
      b += 2 * sizeof(std::vector<NodeId>) + (succ_[i].capacity() + pred_[i].capacity()) * sizeof(NodeId);
    b += slots_.capacity() * sizeof(NodeId);
    b += num_nodes() * 64;  // one red-black tree node (header + LevelKey) per node in its level set
    return b;
  }

 private:
  static uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // ---- string index (open addressing, linear probing; nodes are never removed)
  static size_t slot_of(uint64_t h, size_t mask) {
    uint64_t z = h * 0x9e3779b97f4a7c15ULL;
    return static_cast<size_t>(z ^ (z >> 29)) & mask;
  }
  NodeId find_hashed(uint64_t h, View s) const {
    const size_t mask = slots_.size() - 1;
    for (size_t i = slot_of(h, mask);; i = (i + 1) & mask) {
      NodeId id = slots_[i];
      if (id < 0) return -1;
      if (hash_[id] == h && View(strings_[id]) == s) return id;
    }
  }
  void index_insert(NodeId id) {
    if ((strings_.size()) * 2 > slots_.size()) {
      std::vector<NodeId> bigger(slots_.size() * 2, -1);
      slots_.swap(bigger);
      for (NodeId old : bigger)
        if (old >= 0 && old != id) place_slot(old);
    }
    place_slot(id);
  }
  void place_slot(NodeId id) {
    const size_t mask = slots_.size() - 1;
    size_t i = slot_of(hash_[id], mask);
    while (slots_[i] >= 0) i = (i + 1) & mask;
    slots_[i] = id;
  }

  // ---- nodes, edges, levels
  NodeId add_node(View s, int64_t count, int64_t r_level) {
    if (strings_.size() >= static_cast<size_t>(std::numeric_limits<NodeId>::max()))
      throw std::runtime_error("plastic memory is full (2^31 - 1 nodes)");
    NodeId id = static_cast<NodeId>(strings_.size());
    strings_.emplace_back(s);
    hash_.push_back(RollingHash::of(s));
    count_.push_back(count);
    level_.push_back(r_level);
    succ_.emplace_back();
    pred_.emplace_back();
    stamp_.push_back(0);
    scratch_.push_back(0);
    indeg_.push_back(0);
    index_insert(id);
    level_insert(id, r_level);
    return id;
  }
  void level_insert(NodeId id, int64_t lvl) {
    auto it = levels_.try_emplace(lvl, ByString{&strings_}).first;
    it->second.sorted.insert(LevelKey{Head::of(strings_[id]), id});
    const Str& str = strings_[id];
    if (str.empty())
      ++it->second.empty;
    else
      ++it->second.lengths_by_first[str[0]][str.size()];
  }
  void level_erase(NodeId id, int64_t lvl) {
    auto it = levels_.find(lvl);
    it->second.sorted.erase(LevelKey{Head::of(strings_[id]), id});
    const Str& str = strings_[id];
    if (str.empty()) {
      --it->second.empty;
    } else {
      auto first_it = it->second.lengths_by_first.find(str[0]);
      auto len_it = first_it->second.find(str.size());
      if (--len_it->second == 0) first_it->second.erase(len_it);
      if (first_it->second.empty()) it->second.lengths_by_first.erase(first_it);
    }
    if (it->second.sorted.empty()) levels_.erase(it);
  }
  void move_level(NodeId id, int64_t new_level) {
    if (new_level == level_[id]) return;
    level_erase(id, level_[id]);
    level_[id] = new_level;
    level_insert(id, new_level);
  }
  bool has_edge(NodeId u, NodeId v) const {
    if (succ_[u].size() <= pred_[v].size()) return std::find(succ_[u].begin(), succ_[u].end(), v) != succ_[u].end();
    return std::find(pred_[v].begin(), pred_[v].end(), u) != pred_[v].end();
  }
  void add_edge(NodeId u, NodeId v) {
    succ_[u].push_back(v);
    pred_[v].push_back(u);
    ++num_edges_;
  }
  void add_edge_unless(NodeId u, NodeId v) {
    if (u != v && !has_edge(u, v)) add_edge(u, v);
  }

  // ---- the rule's queries over one level
  // Longest common prefix of s with any node of the level: the longer of the common
  // prefixes with s's neighbours in string order. Leaves s's position in `pos`.
  size_t max_common_prefix(const Level& lvl, View s, std::set<LevelKey, ByString>::const_iterator& pos) const {
    pos = lvl.sorted.lower_bound(Probe{Head::of(s), s});
    size_t best = 0;
    if (pos != lvl.sorted.end()) best = common_prefix_length(strings_[pos->id], s);
    if (pos != lvl.sorted.begin()) best = std::max(best, common_prefix_length(strings_[std::prev(pos)->id], s));
    return best;
  }
  // Nodes of the level having m as a prefix (m = s[:max common prefix]), in node order:
  // the contiguous run around s's position in string order.
  void collect_members(const Level& lvl, View m, std::set<LevelKey, ByString>::const_iterator pos) {
    members_.clear();
    auto has_prefix = [&](NodeId id) {
      View x = strings_[id];
      return x.size() >= m.size() && x.substr(0, m.size()) == m;
    };
    for (auto it = pos; it != lvl.sorted.end() && has_prefix(it->id); ++it) members_.push_back(it->id);
    for (auto it = pos; it != lvl.sorted.begin();) {
      --it;
      if (!has_prefix(it->id)) break;
      members_.push_back(it->id);
    }
    std::sort(members_.begin(), members_.end());
  }
  // Nodes of level `lvl_id` that are substrings of m (any position). Order is irrelevant
  // to the result of place(): each contributes edges from a distinct source.
  // Small levels are scanned; otherwise every substring m[i:i+len] whose first code point
  // and length occur among the level's nodes is looked up in the hash index.
  void collect_substrings(const Level& lvl, int64_t lvl_id, View m) {
    subs_.clear();
    if (lvl.sorted.size() <= 4) {
      for (const LevelKey& key : lvl.sorted)
        if (m.find(strings_[key.id]) != View::npos) subs_.push_back(key.id);
      return;
    }
    if (lvl.empty > 0) {
      NodeId id = find(View());
      if (id >= 0 && level_[id] == lvl_id) subs_.push_back(id);
    }
    bool hashed = false;
    const uint32_t tag = next_stamp();
    for (size_t i = 0; i < m.size(); ++i) {
      auto first_it = lvl.lengths_by_first.find(m[i]);
      if (first_it == lvl.lengths_by_first.end()) continue;
      if (!hashed) {
        hasher_.reset(m);
        hashed = true;
      }
      for (const auto& [len, n] : first_it->second) {
        if (i + len > m.size()) break;
        NodeId id = find_hashed(hasher_.hash(i, len), m.substr(i, len));
        if (id >= 0 && level_[id] == lvl_id && stamp_[id] != tag) {
          stamp_[id] = tag;
          subs_.push_back(id);
        }
      }
    }
  }

  // ---- place(s, m, members_, subs_, r): steps 1-9 of the spec
  void place(View s, View m, int64_t r) {
    // Copy m: it views s, which stays valid, but be explicit about ownership.
    const Str m_str(m);
    for (NodeId u : subs_) {
      auto& out = succ_[u];
      size_t keep = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        NodeId v = out[i];
        if (View(strings_[v]).find(m_str) != View::npos) {
          auto& in = pred_[v];
          in.erase(std::find(in.begin(), in.end(), u));
          --num_edges_;
        } else {
          out[keep++] = v;
        }
      }
      out.resize(keep);
    }
    NodeId mid = find(m_str);
    const bool existed = mid >= 0;
    if (!existed) mid = add_node(m_str, 1, r);
    NodeId sid = find(s);
    if (sid < 0) sid = add_node(s, 0, sat_add(r, 1));
    add_edge_unless(mid, sid);
    for (NodeId u : members_) add_edge_unless(mid, u);
    for (NodeId u : subs_) add_edge_unless(u, mid);
    if (!existed && exact_counts_) {
      int64_t total = 0;
      for (NodeId c : succ_[mid]) total = sat_add(total, count_[c]);
      count_[mid] = total;
    }
    if (!existed) lift(mid);
    potentiate_id(sid, 1);
  }

  uint32_t next_stamp() {
    if (++stamp_tag_ == 0) {
      std::fill(stamp_.begin(), stamp_.end(), 0);
      stamp_tag_ = 1;
    }
    return stamp_tag_;
  }

  // Collect the nodes reachable from `root` along `adj` (succ_ or pred_), then count
  // paths root -> v with Kahn's algorithm on that sub-DAG. Fills reached_ and scratch_.
  void count_paths(NodeId root, const std::vector<std::vector<NodeId>>& adj) {
    const uint32_t tag = next_stamp();
    reached_.clear();
    stack_.clear();
    stack_.push_back(root);
    stamp_[root] = tag;
    while (!stack_.empty()) {
      NodeId v = stack_.back();
      stack_.pop_back();
      reached_.push_back(v);
      scratch_[v] = 0;
      indeg_[v] = 0;
      for (NodeId w : adj[v])
        if (stamp_[w] != tag) {
          stamp_[w] = tag;
          stack_.push_back(w);
        }
    }
    for (NodeId v : reached_)
      for (NodeId w : adj[v]) ++indeg_[w];
    scratch_[root] = 1;
    stack_.clear();
    stack_.push_back(root);
    while (!stack_.empty()) {
      NodeId v = stack_.back();
      stack_.pop_back();
      for (NodeId w : adj[v]) {
        scratch_[w] = sat_add(scratch_[w], scratch_[v]);
        if (--indeg_[w] == 0) stack_.push_back(w);
      }
    }
  }

  void lift(NodeId root) {
    count_paths(root, succ_);
    for (NodeId v : reached_) move_level(v, sat_add(level_[v], scratch_[v]));
  }

  void potentiate_id(NodeId target, int64_t amount) {
    if (amount == 0) return;
    count_paths(target, pred_);
    for (NodeId v : reached_) {
      int64_t c = sat_add(count_[v], sat_mul(amount, scratch_[v]));
      count_[v] = c < 0 ? 0 : c;
    }
  }

  // Does child c of `from` have exactly one path from `from` (the edge itself)? It has
  // another one iff some other parent of c is reachable from `from`. Reachable strings
  // are longer than `from` and shorter than c (every edge lengthens), which bounds the search.
  bool single_path_child(NodeId from, NodeId c) {
    if (pred_[c].size() <= 1) return true;
    targets_.clear();
    for (NodeId p : pred_[c])
      if (p != from) targets_.push_back(p);
    if (targets_.empty()) return true;
    std::sort(targets_.begin(), targets_.end());
    const uint32_t seen = next_stamp();
    const size_t max_len = strings_[c].size();
    stack_.clear();
    stack_.push_back(from);
    stamp_[from] = seen;
    while (!stack_.empty()) {
      NodeId v = stack_.back();
      stack_.pop_back();
      for (NodeId w : succ_[v]) {
        if (w == c || stamp_[w] == seen || strings_[w].size() >= max_len) continue;
        if (std::binary_search(targets_.begin(), targets_.end(), w)) return false;
        stamp_[w] = seen;
        stack_.push_back(w);
      }
    }
    return true;
  }

  bool exact_counts_;
  int64_t samples_ = 0;
  size_t num_edges_ = 0;
  std::deque<Str> strings_;  // deque: stable addresses for the views held by the level sets
  std::vector<uint64_t> hash_;
  std::vector<int64_t> count_, level_;
  std::vector<std::vector<NodeId>> succ_, pred_;
  std::map<int64_t, Level> levels_;
  std::vector<NodeId> slots_;
  // scratch
  std::vector<uint32_t> stamp_;
  uint32_t stamp_tag_ = 0;
  std::vector<int64_t> scratch_;
  std::vector<int32_t> indeg_;
  std::vector<NodeId> reached_, stack_, members_, subs_, targets_;
  SubstringHasher hasher_;
};

}  // namespace plastic
}  // namespace mnemonix
