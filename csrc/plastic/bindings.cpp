// Python bindings of the plastic prefix memory engine: mnemonix._core.plastic.
//
// Strings cross the boundary as Python str <-> std::u32string (one char32_t per code point,
// so prefix and substring semantics are those of Python's str). Arguments are converted with
// the GIL held (common/python.hpp); engine calls run with the GIL released, except O(1) and
// hash lookups, whose lock releases the GIL only if it has to wait (engine.hpp: concurrent
// readers, exclusive writers); results are built after, from copies taken under one read lock.
#include <pybind11/pybind11.h>

#include <map>
#include <utility>
#include <vector>

#include "common/numpy_buffer.hpp"
#include "common/python.hpp"
#include "plastic/engine.hpp"
#include "plastic/predictor.hpp"
#include "registry.hpp"

namespace py = pybind11;

namespace mnemonix {
namespace plastic {
namespace {

py::str toPyStr(const char32_t* data, size_t size) {
  static_assert(sizeof(char32_t) == sizeof(Py_UCS4), "UCS4 strings are char32_t");
  PyObject* s = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, data, static_cast<Py_ssize_t>(size));
  if (!s) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(s);
}

// The whole graph, copied under one read lock with the GIL released.
Snapshot takeSnapshot(const Engine& e) {
  py::gil_scoped_release release;
  return e.snapshot();
}

py::str nodeString(const Snapshot& snap, size_t i) {
  const auto* base = reinterpret_cast<const char32_t*>(snap.codepoints.data());
  return toPyStr(base + snap.offsets[i], static_cast<size_t>(snap.offsets[i + 1] - snap.offsets[i]));
}

// Node strings of a snapshot as Python str, in node order (shared by several views).
std::vector<py::str> nodeStrings(const Snapshot& snap) {
  std::vector<py::str> out;
  out.reserve(snap.numNodes());
  for (size_t i = 0; i < snap.numNodes(); ++i) out.push_back(nodeString(snap, i));
  return out;
}

// names: the node strings when the caller shares them with other views, else empty.
py::list nodesList(const Snapshot& snap, const std::vector<py::str>& names = {}) {
  py::list out(snap.numNodes());
  for (size_t i = 0; i < snap.numNodes(); ++i) {
    py::str name = names.empty() ? nodeString(snap, i) : names[i];
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i),
                    py::make_tuple(std::move(name), snap.count[i], snap.rLevel[i]).release().ptr());
  }
  return out;
}

py::list edgesList(const Snapshot& snap, const std::vector<py::str>& names) {
  py::list out(snap.edgeSrc.size());
  for (size_t k = 0; k < snap.edgeSrc.size(); ++k) {
    py::tuple edge = py::make_tuple(names[static_cast<size_t>(snap.edgeSrc[k])], names[static_cast<size_t>(snap.edgeDst[k])]);
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(k), edge.release().ptr());
  }
  return out;
}

py::dict levelsDict(const Snapshot& snap, const std::vector<py::str>& names) {
  std::map<int64_t, std::vector<size_t>> byLevel;  // level -> node ids in node order
  for (size_t i = 0; i < snap.numNodes(); ++i) byLevel[snap.rLevel[i]].push_back(i);
  py::dict out;
  for (const auto& [level, ids] : byLevel) {
    py::list members(ids.size());
    for (size_t j = 0; j < ids.size(); ++j) members[j] = names[ids[j]];
    out[py::int_(level)] = members;
  }
  return out;
}

py::dict arraysDict(Snapshot&& snap) {
  py::dict out;
  out["codepoints"] = toNumpy(std::move(snap.codepoints));
  out["offsets"] = toNumpy(std::move(snap.offsets));
  out["count"] = toNumpy(std::move(snap.count));
  out["r_level"] = toNumpy(std::move(snap.rLevel));
  out["edge_src"] = toNumpy(std::move(snap.edgeSrc));
  out["edge_dst"] = toNumpy(std::move(snap.edgeDst));
  return out;
}

py::dict exportState(const Engine& e) {
  Snapshot snap = takeSnapshot(e);
  py::dict out;
  out["samples"] = snap.samples;
  out["memory_bytes"] = snap.memoryBytes;
  out["num_edges"] = snap.edgeSrc.size();
  out["arrays"] = arraysDict(std::move(snap));
  return out;
}

template <typename T>
Span<T> spanOf(const CArray<T>& a) {
  return Span<T>{a.data(), static_cast<size_t>(a.size())};
}

std::unique_ptr<Engine> importArrays(const BoolArg& exactCounts, const IntArg& samples, const ArrayArg& codepoints,
                                     const ArrayArg& offsets, const ArrayArg& count, const ArrayArg& rLevel,
                                     const ArrayArg& edgeSrc, const ArrayArg& edgeDst) {
  const bool exact = asBool(exactCounts, "exact_counts");
  const int64_t numSamples = asInt64(samples, "samples");
  const auto cp = asArray<uint32_t>(codepoints, "codepoints", 1);
  const auto off = asArray<int64_t>(offsets, "offsets", 1);
  const auto cnt = asArray<int64_t>(count, "count", 1);
  const auto lvl = asArray<int64_t>(rLevel, "r_level", 1);
  const auto src = asArray<int64_t>(edgeSrc, "edge_src", 1);
  const auto dst = asArray<int64_t>(edgeDst, "edge_dst", 1);
  const SnapshotView view{spanOf(cp), spanOf(off), spanOf(cnt), spanOf(lvl), spanOf(src), spanOf(dst)};
  py::gil_scoped_release release;
  return Engine::restore(exact, numSamples, view);
}

py::tuple infer(const Engine& e, const StrArg& prefix, const StrArg& stop, const BoolArg& sample,
                const IntArg& seed) {
  const Str prefixStr = asU32String(prefix, "prefix");
  const Str stopStr = asU32String(stop, "stop");
  const bool sampled = asBool(sample, "sample");
  const uint64_t seedValue = asUint64(seed, "seed");
  InferResult r;
  {
    py::gil_scoped_release release;
    r = e.infer(prefixStr, stopStr, sampled, seedValue);
  }
  py::list path(r.path.size());
  for (size_t i = 0; i < r.path.size(); ++i) path[i] = toPyStr(r.path[i].data(), r.path[i].size());
  py::list probs(r.probs.size());
  for (size_t i = 0; i < r.probs.size(); ++i) probs[i] = r.probs[i];
  return py::make_tuple(path, probs);
}

// A str that cannot be a node (not a str, or with lone surrogates) is simply not contained.
bool contains(const Engine& e, const py::object& s) {
  if (!PyUnicode_Check(s.ptr())) return false;
  Str str;
  try {
    str = asU32String(s, "s");
  } catch (const std::invalid_argument&) {
    return false;
  }
  return e.contains(str);  // a hash lookup: keeps the GIL (the lock releases it to wait)
}

py::object node(const Engine& e, const StrArg& s) {
  const Str str = asU32String(s, "s");
  const std::optional<NodeInfo> info = e.node(str);  // a hash lookup: keeps the GIL
  if (!info) return py::none();
  return py::make_tuple(info->count, info->rLevel);
}

// ---------------------------------------------------------------- the predictor

std::unique_ptr<Predictor> makePredictor(const Engine& e, const StrArg& start, const IntArg& maxOrder,
                                         const StrArg& alphabet) {
  const Str startStr = asU32String(start, "start");
  const int order = static_cast<int>(asInt64(maxOrder, "max_order", 0, 64));
  const Str extra = asU32String(alphabet, "alphabet");
  py::gil_scoped_release release;
  const Snapshot snap = e.snapshot();  // one read lock; the predictor is built from the copy
  return std::make_unique<Predictor>(snap, startStr, order, std::vector<char32_t>(extra.begin(), extra.end()));
}

Backoff asBackoff(const Predictor& p, const ArrayArg& discounts, const BoolArg& graphContext,
                  const FloatArg& graphDiscount) {
  const auto d = asArray<double>(discounts, "discounts", 1);
  Backoff b;
  b.discounts.assign(d.data(), d.data() + d.size());
  b.graphContext = asBool(graphContext, "graph_context");
  b.graphDiscount = asDouble(graphDiscount, "graph_discount");
  p.check(b);
  return b;
}

py::tuple score(const Predictor& p, const StrListArg& samples, const ArrayArg& discounts, const BoolArg& graphContext,
                const FloatArg& graphDiscount) {
  const std::vector<Str> batch = asU32Strings(samples, "samples");
  const Backoff b = asBackoff(p, discounts, graphContext, graphDiscount);
  py::array_t<double> logp(static_cast<py::ssize_t>(batch.size()));
  py::array_t<int64_t> chars(static_cast<py::ssize_t>(batch.size()));
  double* logpData = logp.mutable_data();
  int64_t* charsData = chars.mutable_data();
  {
    py::gil_scoped_release release;
    p.score(batch, b, logpData, charsData, "samples");
  }
  return py::make_tuple(logp, chars);
}

py::array_t<double> distribution(const Predictor& p, const StrArg& prefix, const ArrayArg& discounts,
                                 const BoolArg& graphContext, const FloatArg& graphDiscount) {
  const Str history = asU32String(prefix, "prefix");
  const Backoff b = asBackoff(p, discounts, graphContext, graphDiscount);
  py::array_t<double> out(static_cast<py::ssize_t>(p.alphabet().size()));
  double* data = out.mutable_data();
  {
    py::gil_scoped_release release;
    p.distribution(history, b, data);
  }
  return out;
}

py::list graphCounts(const Predictor& p, const StrArg& prefix) {
  const Str history = asU32String(prefix, "prefix");
  const auto votes = p.graphCounts(history);
  py::list out(votes.size());
  for (size_t i = 0; i < votes.size(); ++i) {
    const char32_t c = p.alphabet().symbols()[static_cast<size_t>(votes[i].first)];
    out[i] = py::make_tuple(toPyStr(&c, 1), static_cast<int64_t>(votes[i].second));
  }
  return out;
}

py::list sample(const Predictor& p, const IntArg& n, const IntArg& seed, const IntArg& maxLength, const StrArg& stop,
                const ArrayArg& discounts, const BoolArg& graphContext, const FloatArg& graphDiscount) {
  const auto count = static_cast<size_t>(asInt64(n, "n", 0, int64_t{1} << 40));
  const uint64_t seedValue = asUint64(seed, "seed");
  const auto maxLen = static_cast<size_t>(asInt64(maxLength, "max_length", 1, int64_t{1} << 20));
  const Str stopStr = asU32String(stop, "stop");
  if (stopStr.size() != 1)
    throw std::invalid_argument("stop must be one character, got " + std::to_string(stopStr.size()));
  const Backoff b = asBackoff(p, discounts, graphContext, graphDiscount);
  std::vector<Str> drawn;
  {
    py::gil_scoped_release release;
    drawn = p.sample(count, seedValue, maxLen, stopStr[0], b);
  }
  py::list out(drawn.size());
  for (size_t i = 0; i < drawn.size(); ++i) out[i] = toPyStr(drawn[i].data(), drawn[i].size());
  return out;
}

void bindPredictor(py::module_& m) {
  py::class_<Predictor>(m, "Predictor",
                        "The next-character distribution read from a frozen copy of the graph (predictor.hpp).\n"
                        "Immutable: any number of threads may use it at once.")
      .def_property_readonly("alphabet",
                             [](const Predictor& p) {
                               const auto& s = p.alphabet().symbols();
                               return toPyStr(s.data(), s.size());
                             })
      .def_property_readonly("start", [](const Predictor& p) { return toPyStr(p.start().data(), p.start().size()); })
      .def_property_readonly("max_order", &Predictor::maxOrder)
      .def_property_readonly("num_nodes", &Predictor::numNodes)
      .def(
          "num_contexts",
          [](const Predictor& p, const IntArg& k) {
            return p.numContexts(static_cast<int>(asInt64(k, "k", 0, p.maxOrder())));
          },
          py::arg("k"))
      .def(
          "ney_discounts", [](const Predictor& p) { return toNumpy(p.neyDiscounts()); },
          "[max_order + 2]: n1 / (n1 + 2 n2) of each k-gram level, then of the graph level.")
      .def("score", &score, py::arg("samples"), py::arg("discounts"), py::arg("graph_context"),
           py::arg("graph_discount"), "(log-likelihood [n] float64 nats, predicted characters [n] int64).")
      .def("distribution", &distribution, py::arg("prefix"), py::arg("discounts"), py::arg("graph_context"),
           py::arg("graph_discount"), "[len(alphabet)] float64 next-character probabilities.")
      .def("graph_counts", &graphCounts, py::arg("prefix"), "[(char, count)] votes of the graph's own context.")
      .def("sample", &sample, py::arg("n"), py::arg("seed"), py::arg("max_length"), py::arg("stop"),
           py::arg("discounts"), py::arg("graph_context"), py::arg("graph_discount"));
}

// A getter that walks the whole engine, called without the GIL.
template <typename R>
auto withoutGil(R (Engine::*getter)() const) {
  return [getter](const Engine& e) {
    py::gil_scoped_release release;
    return (e.*getter)();
  };
}

void bind(py::module_& m) {
  bindPredictor(m);
  m.doc() = "Plastic prefix memory graph engine (see mnemonix.plastic for the documented API).\n\n"
            "Thread safety: concurrent readers, exclusive writers (a reader-writer lock inside the\n"
            "engine); no call holds the GIL while it waits for the lock, and calls longer than a\n"
            "lookup release it while they run.";
  py::class_<Engine>(m, "Engine")
      .def(py::init([](const BoolArg& exactCounts) { return std::make_unique<Engine>(asBool(exactCounts, "exact_counts")); }),
           py::arg("exact_counts") = false)
      .def_property_readonly("exact_counts", &Engine::exactCounts)
      .def_property_readonly("num_nodes", &Engine::numNodes)  // O(1) reads keep the GIL
      .def_property_readonly("num_edges", &Engine::numEdges)
      .def_property_readonly("samples", &Engine::samples)
      .def_property_readonly("version", &Engine::version)
      .def(
          "learn",
          [](Engine& e, const StrArg& s) {
            const Str str = asU32String(s, "s");
            py::gil_scoped_release release;
            e.learn(str);
          },
          py::arg("s"), "Learn one sample (a writer: exclusive lock).")
      .def(
          "learn_many",
          [](Engine& e, const StrListArg& samples) {
            const std::vector<Str> batch = asU32Strings(samples, "samples");
            py::gil_scoped_release release;
            e.learnMany(batch);
          },
          py::arg("samples"), "Learn samples in order, all checked first, under one exclusive lock.")
      .def(
          "potentiate",
          [](Engine& e, const StrArg& s, const IntArg& amount) {
            const Str str = asU32String(s, "s");
            const int64_t value = asInt64(amount, "amount");
            py::gil_scoped_release release;
            e.potentiate(str, value);
          },
          py::arg("s"), py::arg("amount"))
      .def("__contains__", &contains, py::arg("s"))
      .def("node", &node, py::arg("s"), "(count, r_level) of node s, or None.")
      .def(
          "nodes",
          [](const Engine& e) {
            const Snapshot snap = takeSnapshot(e);
            return nodesList(snap);
          },
          "[(string, count, r_level)] in node order.")
      .def(
          "edges",
          [](const Engine& e) {
            const Snapshot snap = takeSnapshot(e);
            return edgesList(snap, nodeStrings(snap));
          },
          "[(parent, child)] in edge order.")
      .def(
          "levels",
          [](const Engine& e) {
            const Snapshot snap = takeSnapshot(e);
            return levelsDict(snap, nodeStrings(snap));
          },
          "{r_level: [strings in node order]}, levels ascending.")
      .def(
          "graph",
          [](const Engine& e) {
            const Snapshot snap = takeSnapshot(e);
            const std::vector<py::str> names = nodeStrings(snap);
            return py::make_tuple(nodesList(snap, names), edgesList(snap, names));
          },
          "(nodes(), edges()) taken under one read lock: they always agree.")
      .def("memory_bytes", withoutGil(&Engine::memoryBytes))
      .def("infer", &infer, py::arg("prefix"), py::arg("stop"), py::arg("sample"), py::arg("seed"))
      .def(
          "export_arrays", [](const Engine& e) { return arraysDict(takeSnapshot(e)); },
          "The graph as numpy arrays (the layout of PlasticMemory.save).")
      .def("export_state", &exportState,
           "{'arrays': export_arrays(), 'samples', 'memory_bytes', 'num_edges'} under one read lock.")
      .def("predictor", &makePredictor, py::arg("start"), py::arg("max_order"), py::arg("alphabet"),
           "A Predictor built from a copy of the graph taken under one read lock (GIL released).")
      .def_static("import_arrays", &importArrays, py::arg("exact_counts"), py::arg("samples"), py::arg("codepoints"),
                  py::arg("offsets"), py::arg("count"), py::arg("r_level"), py::arg("edge_src"), py::arg("edge_dst"));
}

}  // namespace
}  // namespace plastic
}  // namespace mnemonix

static mnemonix::Registrar reg("plastic", &mnemonix::plastic::bind);
