// Plastic prefix memory as a sequence model: the predictive distribution over the next
// character given a prefix, read from the graph (header-only, no Python, no torch).
//
// A Predictor is a frozen read of an engine (built from one Engine::snapshot, so from one
// read lock): node strings, counts and the "prefix edges" u -> w of the graph (u a proper
// prefix of w; on tokenised names every edge is one, the graph being a radix tree). It never
// changes after construction, so any number of threads may score with it at once.
//
// The distribution of the next character a after a history h (h holds the start token, e.g.
// ">em" when scoring ">emma_") interpolates, from the most specific context to the least:
//
//   graph    the graph's own context: the deepest node u that is a prefix of h ("" when none
//            is: the children of "" are then the nodes without a prefix edge into them); each
//            prefix child w of u that extends h votes for its character w[|h|] with count(w).
//            This is the whole history, anchored at the start of the string: what the memory
//            itself knows.
//   k-gram   for k = min(order, |h| - 1) down to 0: the last k characters of h. Their counts are
//            read from the graph too: every position j >= |start| of a prefix edge u -> w
//            (|u| <= j < |w|) carries count(w) for the pair (w[j-k, j), w[j]). On a tree with
//            exact counts these are exactly the k-gram counts of the learned samples.
//   uniform  1 / |alphabet|.
//
// Each level with counts c(.) (total C, N distinct next characters) is interpolated with the
// level below by absolute discounting (Ney, Essen & Kneser 1994):
//     p(a) = (max(c(a) - D, 0) + D * N * p_below(a)) / C,
// and a level without counts passes p_below through. With every D in (0, 1] and integer counts,
// each level sums to one over the alphabet and leaves every character a non-zero probability.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/rng.hpp"
#include "plastic/engine.hpp"
#include "plastic/strings.hpp"

namespace mnemonix {
namespace plastic {

// Next-character counts of one context while they are collected: (symbol, count > 0) pairs.
struct NextCounts {
  std::vector<std::pair<int32_t, double>> next;
  double total = 0;
  void add(int32_t sym, double c) {
    total += c;
    for (auto& [s, n] : next)
      if (s == sym) {
        n += c;
        return;
      }
    next.emplace_back(sym, c);
  }
  void clear() {
    next.clear();
    total = 0;
  }
};

// A read-only view of one context's counts (a NextCounts, or a slice of a flat table).
struct Votes {
  const std::pair<int32_t, double>* data = nullptr;
  size_t size = 0;
  double total = 0;
  explicit Votes(const NextCounts& nc) : data(nc.next.data()), size(nc.next.size()), total(nc.total) {}
  Votes(const std::pair<int32_t, double>* d, size_t n, double t) : data(d), size(n), total(t) {}
  double countOf(int32_t sym) const {
    for (size_t i = 0; i < size; ++i)
      if (data[i].first == sym) return data[i].second;
    return 0;
  }
  double distinct() const { return static_cast<double>(size); }
};

// Interpolation parameters (see the top of the file).
struct Backoff {
  std::vector<double> discounts;  // [order + 1]: discounts[k] of the k-gram level (0: unigram)
  bool graphContext = true;       // use the graph's own context on top of the k-grams
  double graphDiscount = 0.75;
  int order() const { return static_cast<int>(discounts.size()) - 1; }
};

// One interpolation step of absolute discounting, for one character or a whole distribution.
inline double interpolate(double count, double total, double distinct, double discount, double below) {
  return (std::max(count - discount, 0.0) + discount * distinct * below) / total;
}

class Predictor {
 public:
  // maxOrder: the longest k-gram context the tables hold; extra: characters added to the
  // alphabet (those at predicted positions of the graph are always in it).
  Predictor(const Snapshot& snap, View start, int maxOrder, const std::vector<char32_t>& extra)
      : start_(start), maxOrder_(maxOrder) {
    if (maxOrder < 0 || maxOrder > 64)
      throw std::invalid_argument("max_order must be in [0, 64], got " + std::to_string(maxOrder));
    loadGraph(snap);
    std::vector<char32_t> symbols(extra);
    forEachPosition([&](int32_t w, size_t j) { symbols.push_back(str(w)[j]); });
    alphabet_ = Alphabet(std::move(symbols));
    buildTables();
    buildGraphLevel();
  }

  const Alphabet& alphabet() const { return alphabet_; }
  const Str& start() const { return start_; }
  int maxOrder() const { return maxOrder_; }
  size_t numNodes() const { return counts_.size(); }
  size_t numContexts(int k) const { return tables_.at(static_cast<size_t>(k)).index.size(); }

  // Ney's estimate D = n1 / (n1 + 2 n2) per level from its counts of counts (pairs seen with
  // count 1 and 2), clamped to [0.05, 1]: [maxOrder + 1] k-gram levels, then the graph level.
  std::vector<double> neyDiscounts() const {
    std::vector<double> out;
    for (const Table& t : tables_) out.push_back(ney(t.n1, t.n2));
    out.push_back(ney(graphN1_, graphN2_));
    return out;
  }

  // Checks a parameter set against this predictor (std::invalid_argument naming the field).
  void check(const Backoff& b) const {
    if (b.discounts.empty() || b.order() > maxOrder_)
      throw std::invalid_argument("discounts must hold order + 1 values with order <= max_order = " +
                                  std::to_string(maxOrder_) + ", got " + std::to_string(b.discounts.size()) +
                                  " values");
    for (size_t k = 0; k < b.discounts.size(); ++k)
      checkDiscount(b.discounts[k], "discounts[" + std::to_string(k) + "]");
    if (b.graphContext) checkDiscount(b.graphDiscount, "graph_discount");
  }

  // Teacher-forced log-likelihood (nats) of each sample: logp[i] = sum of log p(s[j] | s[:j])
  // over j >= |start|, and chars[i] = the number of those positions. `name` names the batch
  // in errors ("samples[3] ..."). Every sample is checked before any is scored.
  void score(const std::vector<Str>& samples, const Backoff& b, double* logp, int64_t* chars,
             const std::string& name) const {
    check(b);
    for (size_t i = 0; i < samples.size(); ++i) checkSample(samples[i], name + "[" + std::to_string(i) + "]");
    Scratch scratch(alphabet_.size());
    for (size_t i = 0; i < samples.size(); ++i) {
      const View s = samples[i];
      scratch.hasher.reset(s);
      int32_t locus = -1;
      double total = 0;
      for (size_t j = start_.size(); j < s.size(); ++j) {
        locus = deepenLocus(scratch.hasher, s.substr(0, j), locus, j == start_.size() ? 0 : j);
        total += std::log(probability(s.substr(0, j), alphabet_.index(s[j]), locus, b, scratch));
      }
      logp[i] = total;
      chars[i] = static_cast<int64_t>(s.size() - start_.size());
    }
  }

  // The whole distribution over the alphabet (alphabet order) after `history`, which must
  // begin with the start string: out[a] for every symbol, summing to one.
  void distribution(View history, const Backoff& b, double* out) const {
    check(b);
    checkHistory(history);
    Scratch scratch(alphabet_.size());
    scratch.hasher.reset(history);
    fullDistribution(history, deepenLocus(scratch.hasher, history, -1, 0), b, scratch, out);
  }

  // (symbol index, count) votes of the graph's own context after `history`.
  std::vector<std::pair<int32_t, double>> graphCounts(View history) const {
    checkHistory(history);
    Scratch scratch(alphabet_.size());
    scratch.hasher.reset(history);
    const Votes votes = graphVotes(history, deepenLocus(scratch.hasher, history, -1, 0), scratch.graph);
    return std::vector<std::pair<int32_t, double>>(votes.data, votes.data + votes.size);
  }

  // n strings: start + characters drawn one at a time until `stop` is drawn or maxLength
  // characters were drawn (seeded splitmix64 stream: same seed, same strings).
  std::vector<Str> sample(size_t n, uint64_t seed, size_t maxLength, char32_t stop, const Backoff& b) const {
    check(b);
    if (alphabet_.index(stop) < 0)
      throw std::invalid_argument("stop " + describeCodePoint(stop) + " is not in the alphabet of the predictor");
    SplitMix64 rng(seed);
    Scratch scratch(alphabet_.size());
    std::vector<double> probs(alphabet_.size());
    std::vector<Str> out(n);
    for (Str& s : out) {
      s = start_;
      for (size_t step = 0; step < maxLength; ++step) {
        scratch.hasher.reset(s);
        fullDistribution(s, deepenLocus(scratch.hasher, s, -1, 0), b, scratch, probs.data());
        const char32_t c = alphabet_.symbols()[draw(probs, rng.uniform())];
        s.push_back(c);
        if (c == stop) break;
      }
    }
    return out;
  }

 private:
  struct Table {  // the k-gram level of one k: context id -> its slice of (symbol, count) pairs
    StringIndex index;
    std::vector<size_t> begin{0};  // [contexts + 1]
    std::vector<std::pair<int32_t, double>> votes;
    std::vector<double> total;  // [contexts]
    int64_t n1 = 0, n2 = 0;
    Votes at(int32_t id) const {
      const auto i = static_cast<size_t>(id);
      return Votes(votes.data() + begin[i], begin[i + 1] - begin[i], total[i]);
    }
  };
  struct Position {  // one predicted position while the tables are built
    int32_t context, symbol;
    double count;
  };
  struct Scratch {
    explicit Scratch(size_t alphabetSize) : below(alphabetSize), level(alphabetSize) {}
    SubstringHasher hasher;
    std::vector<double> below, level;
    NextCounts graph;
  };
  struct Ids {  // a range of node ids
    const int32_t *first, *last;
    const int32_t* begin() const { return first; }
    const int32_t* end() const { return last; }
  };

  static double ney(int64_t n1, int64_t n2) {
    if (n1 + n2 == 0) return 0.5;
    const double d = static_cast<double>(n1) / static_cast<double>(n1 + 2 * n2);
    return std::min(std::max(d, 0.05), 1.0);
  }
  static void checkDiscount(double d, const std::string& name) {
    if (!(d > 0.0 && d <= 1.0)) throw std::invalid_argument(name + " must be in (0, 1], got " + std::to_string(d));
  }
  void checkHistory(View history) const {
    if (history.substr(0, std::min(history.size(), start_.size())) != View(start_) || history.size() < start_.size())
      throw std::invalid_argument("prefix must begin with the start string of the predictor");
  }
  void checkSample(View s, const std::string& name) const {
    if (s.size() < start_.size() || s.substr(0, start_.size()) != View(start_))
      throw std::invalid_argument(name + " must begin with the start string of the predictor");
    for (size_t j = start_.size(); j < s.size(); ++j)
      if (alphabet_.index(s[j]) < 0)
        throw std::invalid_argument(name + " holds " + describeCodePoint(s[j]) + " at index " + std::to_string(j) +
                                    ", which is not in the alphabet of the predictor (" +
                                    std::to_string(alphabet_.size()) + " characters)");
  }

  // ---- the graph: node strings (one flat buffer), counts, prefix children in CSR form.
  // Slot 0 of the CSR is "" (whose children are the nodes without a prefix edge into them),
  // slot i + 1 is node i.
  View str(int32_t id) const {
    const auto i = static_cast<size_t>(id);
    return View(chars_).substr(static_cast<size_t>(offsets_[i]), static_cast<size_t>(offsets_[i + 1] - offsets_[i]));
  }
  size_t lengthOf(int32_t locus) const { return locus < 0 ? 0 : str(locus).size(); }
  Ids childrenOf(int32_t locus) const {
    const auto slot = static_cast<size_t>(locus + 1);
    return Ids{childList_.data() + childBegin_[slot], childList_.data() + childBegin_[slot + 1]};
  }

  // A child of "": a node without a prefix edge into it (the node "" itself is none: it does
  // not extend "").
  bool isRoot(const std::vector<bool>& hasParent, size_t i) const {
    return !hasParent[i] && offsets_[i + 1] > offsets_[i];
  }

  void loadGraph(const Snapshot& snap) {
    const size_t n = snap.numNodes();
    chars_.assign(reinterpret_cast<const char32_t*>(snap.codepoints.data()), snap.codepoints.size());
    offsets_ = snap.offsets;
    counts_ = snap.count;
    std::vector<int32_t> parent;  // (slot, child) pairs, edge order
    std::vector<bool> hasParent(n, false);
    std::vector<size_t> perSlot(n + 2, 0);
    for (size_t e = 0; e < snap.edgeSrc.size(); ++e) {
      const auto u = static_cast<int32_t>(snap.edgeSrc[e]), w = static_cast<int32_t>(snap.edgeDst[e]);
      const View su = str(u), sw = str(w);
      if (su.size() < sw.size() && sw.substr(0, su.size()) == su) {
        parent.push_back(u + 1);
        parent.push_back(w);
        hasParent[static_cast<size_t>(w)] = true;
        ++perSlot[static_cast<size_t>(u) + 2];
      }
    }
    for (size_t i = 0; i < n; ++i) {
      nodes_.insert(RollingHash::of(str(static_cast<int32_t>(i))), str(static_cast<int32_t>(i)));  // id = node id
      if (isRoot(hasParent, i)) ++perSlot[1];
    }
    childBegin_.assign(n + 2, 0);
    for (size_t s = 1; s < n + 2; ++s) childBegin_[s] = childBegin_[s - 1] + perSlot[s];
    childList_.assign(childBegin_[n + 1], 0);
    std::vector<size_t> fill(childBegin_.begin(), childBegin_.end() - 1);
    for (size_t i = 0; i < n; ++i)
      if (isRoot(hasParent, i)) childList_[fill[0]++] = static_cast<int32_t>(i);
    for (size_t k = 0; k < parent.size(); k += 2) childList_[fill[static_cast<size_t>(parent[k])]++] = parent[k + 1];
    // Each node's children sorted by their first character after it (stable: edge order among
    // equals), so the child that extends a history is found by binary search.
    childKey_.assign(childList_.size(), 0);
    for (size_t slot = 0; slot < n + 1; ++slot) {
      const size_t from = lengthOf(static_cast<int32_t>(slot) - 1);
      int32_t* first = childList_.data() + childBegin_[slot];
      int32_t* last = childList_.data() + childBegin_[slot + 1];
      std::stable_sort(first, last, [&](int32_t a, int32_t b) { return str(a)[from] < str(b)[from]; });
      for (size_t k = childBegin_[slot]; k < childBegin_[slot + 1]; ++k) childKey_[k] = str(childList_[k])[from];
    }
  }

  // Every predicted position of the graph: f(w, j) for each prefix edge u -> w (or root w)
  // and each j in [max(|u|, |start|), |w|), once per edge.
  template <typename F>
  void forEachPosition(F&& f) const {
    for (int32_t u = -1; u < static_cast<int32_t>(counts_.size()); ++u)
      for (int32_t w : childrenOf(u))
        for (size_t j = std::max(lengthOf(u), start_.size()); j < str(w).size(); ++j) f(w, j);
  }

  void buildTables() {
    tables_.assign(static_cast<size_t>(maxOrder_) + 1, Table{});
    std::vector<std::vector<Position>> positions(tables_.size());
    SubstringHasher hasher;
    int32_t hashed = -1;
    forEachPosition([&](int32_t w, size_t j) {
      const double c = static_cast<double>(counts_[static_cast<size_t>(w)]);
      if (!(c > 0)) return;  // a de-potentiated node votes for nothing
      const View sw = str(w);
      if (hashed != w) {
        hasher.reset(sw);
        hashed = w;
      }
      const int32_t sym = alphabet_.index(sw[j]);
      for (size_t k = 0; k <= std::min(j, static_cast<size_t>(maxOrder_)); ++k)
        positions[k].push_back(Position{tables_[k].index.insert(hasher.hash(j - k, k), sw.substr(j - k, k)), sym, c});
    });
    for (size_t k = 0; k < tables_.size(); ++k) {
      aggregate(positions[k], tables_[k]);
      std::vector<Position>().swap(positions[k]);
    }
  }
  // Sums the positions of each context per symbol into the table's flat arrays (a counting
  // sort by context, then one pass with a per-symbol accumulator).
  void aggregate(const std::vector<Position>& positions, Table& t) const {
    const size_t n = t.index.size();
    std::vector<size_t> bucket(n + 1, 0);
    for (const Position& p : positions) ++bucket[static_cast<size_t>(p.context) + 1];
    for (size_t i = 1; i <= n; ++i) bucket[i] += bucket[i - 1];
    std::vector<uint32_t> order(positions.size());
    std::vector<size_t> fill(bucket.begin(), bucket.end() - 1);
    for (size_t i = 0; i < positions.size(); ++i) order[fill[static_cast<size_t>(positions[i].context)]++] = static_cast<uint32_t>(i);
    std::vector<double> acc(alphabet_.size(), 0.0);
    std::vector<int32_t> touched;
    for (size_t c = 0; c < n; ++c) {
      touched.clear();
      double total = 0;
      for (size_t i = bucket[c]; i < bucket[c + 1]; ++i) {
        const Position& p = positions[order[i]];
        if (acc[static_cast<size_t>(p.symbol)] == 0) touched.push_back(p.symbol);
        acc[static_cast<size_t>(p.symbol)] += p.count;
        total += p.count;
      }
      for (int32_t s : touched) {
        const double count = acc[static_cast<size_t>(s)];
        t.votes.emplace_back(s, count);
        t.n1 += count == 1;
        t.n2 += count == 2;
        acc[static_cast<size_t>(s)] = 0;
      }
      t.begin.push_back(t.votes.size());
      t.total.push_back(total);
    }
  }
  // The votes of every node (and of ""): its children with a positive count, summed per
  // character, flattened like a k-gram table. Also the graph level's counts of counts: the
  // context of every node plus the one-vote contexts inside every edge.
  void buildGraphLevel() {
    NextCounts nc;
    nodeVoteBegin_.assign(1, 0);
    for (int32_t u = -1; u < static_cast<int32_t>(counts_.size()); ++u) {
      nc.clear();
      for (int32_t w : childrenOf(u)) {
        const int32_t sym = alphabet_.index(str(w)[lengthOf(u)]);  // -1: a start-string position
        if (counts_[static_cast<size_t>(w)] > 0 && sym >= 0) nc.add(sym, static_cast<double>(counts_[static_cast<size_t>(w)]));
      }
      nodeVotes_.insert(nodeVotes_.end(), nc.next.begin(), nc.next.end());
      nodeVoteBegin_.push_back(nodeVotes_.size());
      nodeVoteTotal_.push_back(nc.total);
      if (lengthOf(u) >= start_.size()) {
        for (const auto& [s, c] : nc.next) {
          graphN1_ += c == 1;
          graphN2_ += c == 2;
        }
      }
      for (int32_t w : childrenOf(u)) {
        const size_t first = std::max(lengthOf(u) + 1, start_.size()), len = str(w).size();
        const auto inner = static_cast<int64_t>(len > first ? len - first : 0);
        if (counts_[static_cast<size_t>(w)] == 1) graphN1_ += inner;
        if (counts_[static_cast<size_t>(w)] == 2) graphN2_ += inner;
      }
    }
  }

  // The deepest node that is a prefix of `history`, looking at lengths from `from` on; `locus`
  // is the answer for the lengths below `from` (-1: none, i.e. "").
  int32_t deepenLocus(const SubstringHasher& hasher, View history, int32_t locus, size_t from) const {
    for (size_t len = from; len <= history.size(); ++len) {
      const int32_t id = nodes_.find(hasher.hash(0, len), history.substr(0, len));
      if (id >= 0) locus = id;
    }
    return locus;
  }

  // Votes of the graph's context: prefix children w of the locus that extend `history`, each
  // for w[|history|] with count(w). At the locus itself they are precomputed; inside an edge
  // only the children whose first character after the locus agrees can extend the history.
  Votes graphVotes(View history, int32_t locus, NextCounts& scratch) const {
    const size_t from = lengthOf(locus), slot = static_cast<size_t>(locus + 1);
    if (history.size() == from)
      return Votes(nodeVotes_.data() + nodeVoteBegin_[slot], nodeVoteBegin_[slot + 1] - nodeVoteBegin_[slot],
                   nodeVoteTotal_[slot]);
    scratch.clear();
    const char32_t* keys = childKey_.data();
    const auto range = std::equal_range(keys + childBegin_[slot], keys + childBegin_[slot + 1], history[from]);
    for (const char32_t* k = range.first; k != range.second; ++k) {
      const int32_t w = childList_[static_cast<size_t>(k - keys)];
      const View sw = str(w);
      const int64_t count = counts_[static_cast<size_t>(w)];
      if (sw.size() <= history.size() || count <= 0) continue;
      if (sw.substr(from + 1, history.size() - from - 1) != history.substr(from + 1)) continue;
      const int32_t sym = alphabet_.index(sw[history.size()]);
      if (sym >= 0) scratch.add(sym, static_cast<double>(count));
    }
    return Votes(scratch);
  }

  // Longest k-gram level to use after a history of length n.
  int topOrder(const Backoff& b, size_t n) const {
    const int64_t cap = static_cast<int64_t>(n) - (b.graphContext ? 1 : 0);
    return static_cast<int>(std::min<int64_t>(b.order(), cap));
  }
  // The id of the last k characters of `history` in the k-gram table (-1: never seen); the
  // hasher holds a string that begins with `history`.
  int32_t kgram(const SubstringHasher& hasher, View history, size_t k) const {
    const size_t n = history.size();
    return tables_[k].index.find(hasher.hash(n - k, k), history.substr(n - k, k));
  }

  // Applies `level(votes, discount)` from the least specific level with counts to the most.
  template <typename F>
  void forEachLevel(View history, int32_t locus, const Backoff& b, Scratch& scratch, F&& level) const {
    for (int k = 0; k <= topOrder(b, history.size()); ++k) {
      const int32_t id = kgram(scratch.hasher, history, static_cast<size_t>(k));
      if (id >= 0) level(tables_[static_cast<size_t>(k)].at(id), b.discounts[static_cast<size_t>(k)]);
    }
    if (b.graphContext) {
      const Votes votes = graphVotes(history, locus, scratch.graph);
      if (votes.total > 0) level(votes, b.graphDiscount);
    }
  }

  double probability(View history, int32_t sym, int32_t locus, const Backoff& b, Scratch& scratch) const {
    double p = 1.0 / static_cast<double>(alphabet_.size());
    forEachLevel(history, locus, b, scratch, [&](const Votes& v, double d) {
      p = interpolate(v.countOf(sym), v.total, v.distinct(), d, p);
    });
    return p;
  }

  void fullDistribution(View history, int32_t locus, const Backoff& b, Scratch& scratch, double* out) const {
    const size_t a = alphabet_.size();
    std::vector<double>& p = scratch.below;
    std::fill(p.begin(), p.end(), 1.0 / static_cast<double>(a));
    forEachLevel(history, locus, b, scratch, [&](const Votes& v, double d) {
      std::fill(scratch.level.begin(), scratch.level.end(), 0.0);
      for (size_t i = 0; i < v.size; ++i) scratch.level[static_cast<size_t>(v.data[i].first)] = v.data[i].second;
      for (size_t i = 0; i < a; ++i) p[i] = interpolate(scratch.level[i], v.total, v.distinct(), d, p[i]);
    });
    std::copy(p.begin(), p.end(), out);
  }

  static size_t draw(const std::vector<double>& probs, double u) {
    double acc = 0;
    for (size_t i = 0; i < probs.size(); ++i) {
      acc += probs[i];
      if (u < acc) return i;
    }
    size_t last = probs.size() - 1;  // rounding at the top end: the last symbol with p > 0
    while (last > 0 && !(probs[last] > 0)) --last;
    return last;
  }

  Str start_;
  int maxOrder_;
  Str chars_;                    // node strings, concatenated in node order
  std::vector<int64_t> offsets_;  // [n + 1]
  std::vector<int64_t> counts_;   // [n]
  std::vector<size_t> childBegin_;   // [n + 2]: slot s (0 = "", i + 1 = node i) owns childList_[begin[s], begin[s+1])
  std::vector<int32_t> childList_;   // prefix children, sorted per slot by their first character after it
  std::vector<char32_t> childKey_;   // that character, parallel to childList_
  std::vector<size_t> nodeVoteBegin_;  // [n + 2]: the precomputed votes of each slot
  std::vector<std::pair<int32_t, double>> nodeVotes_;
  std::vector<double> nodeVoteTotal_;
  StringIndex nodes_;
  Alphabet alphabet_;
  std::vector<Table> tables_;
  int64_t graphN1_ = 0, graphN2_ = 0;
};

}  // namespace plastic
}  // namespace mnemonix
