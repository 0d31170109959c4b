// Python bindings of the sparse Hebbian graph: mnemonix._core.hebbian.
//
// One recipe per method: arguments converted with the GIL held (int64 arrays, C order;
// common/numpy_buffer.hpp and common/python.hpp name the argument when that fails), outputs
// of known shape allocated, then the GIL released around the core call, which takes the
// graph's reader-writer lock and checks rows and slots against the state it uses
// (hebbian_graph.hpp: concurrent readers, exclusive writers). Edge and fire lists are moved
// into numpy arrays afterwards. O(1) reads (batch, num_nodes, count) keep the GIL: the lock
// releases it only if it has to wait.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "common/numpy_buffer.hpp"
#include "common/python.hpp"
#include "hebbian/hebbian_graph.hpp"
#include "registry.hpp"

namespace py = pybind11;

namespace mnemonix {
namespace hebbian {
namespace {

using I64 = CArray<int64_t>;

// [rows, k] ids; the row count is checked against the batch by the core, under its lock.
I64 asMatrix(const ArrayArg& arg, const char* name) { return asArray<int64_t>(arg, name, 2); }

void checkSameLength(const char* names, std::initializer_list<py::ssize_t> lengths) {
  const py::ssize_t first = *lengths.begin();
  for (py::ssize_t n : lengths)
    if (n != first) {
      std::string got;
      for (py::ssize_t m : lengths) got += (got.empty() ? "" : ", ") + std::to_string(m);
      throw std::invalid_argument(std::string(names) + " must have one length, got " + got);
    }
}

template <typename Read>
auto readRow(const HebbianGraph& g, const IntArg& row, Read&& read) {
  const int64_t r = asInt64(row, "row");
  py::gil_scoped_release release;
  return read(g, r);
}

py::array_t<int32_t> fireCount(const HebbianGraph& g, const IntArg& row, const ArrayArg& ids) {
  const int64_t r = asInt64(row, "row");
  const I64 idArray = asArray<int64_t>(ids, "ids", 1);
  py::array_t<int32_t> out(idArray.shape(0));
  int32_t* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    g.fireCounts(r, idArray.data(), idArray.shape(0), o);
  }
  return out;  // built and returned with the GIL held
}

template <typename Write>
void writeMatrix(HebbianGraph& g, const ArrayArg& ids, Write&& write) {
  const I64 m = asMatrix(ids, "ids");
  py::gil_scoped_release release;
  write(g, m.data(), m.shape(0), m.shape(1));
}

py::tuple edges(const HebbianGraph& g, const IntArg& row) {
  const int64_t r = asInt64(row, "row");
  std::vector<int64_t> src, dst;
  std::vector<int32_t> cnt;
  {
    py::gil_scoped_release release;
    g.edges(r, src, dst, cnt);
  }
  return py::make_tuple(toNumpy(std::move(src)), toNumpy(std::move(dst)), toNumpy(std::move(cnt)));
}

py::tuple fires(const HebbianGraph& g, const IntArg& row) {
  const int64_t r = asInt64(row, "row");
  std::vector<int64_t> ids;
  std::vector<int32_t> cnt;
  {
    py::gil_scoped_release release;
    g.fires(r, ids, cnt);
  }
  return py::make_tuple(toNumpy(std::move(ids)), toNumpy(std::move(cnt)));
}

void setEdges(HebbianGraph& g, const IntArg& row, const ArrayArg& src, const ArrayArg& dst, const ArrayArg& counts) {
  const int64_t r = asInt64(row, "row");
  const I64 s = asArray<int64_t>(src, "src", 1), d = asArray<int64_t>(dst, "dst", 1);
  const CArray<int32_t> c = asArray<int32_t>(counts, "counts", 1);
  checkSameLength("src, dst and counts", {s.shape(0), d.shape(0), c.shape(0)});
  py::gil_scoped_release release;
  g.setEdges(r, s.data(), d.data(), c.data(), s.shape(0));
}

void setFires(HebbianGraph& g, const IntArg& row, const ArrayArg& ids, const ArrayArg& counts) {
  const int64_t r = asInt64(row, "row");
  const I64 i = asArray<int64_t>(ids, "ids", 1);
  const CArray<int32_t> c = asArray<int32_t>(counts, "counts", 1);
  checkSameLength("ids and counts", {i.shape(0), c.shape(0)});
  py::gil_scoped_release release;
  g.setFires(r, i.data(), c.data(), i.shape(0));
}

py::array_t<int64_t> addNodes(HebbianGraph& g, const ArrayArg& ids) {
  const I64 m = asMatrix(ids, "ids");
  const int64_t rows = m.shape(0), k = m.shape(1);
  py::array_t<int64_t> out({rows, k});
  int64_t* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    g.addNodes(m.data(), rows, k, o);
  }
  return out;  // built and returned with the GIL held
}

py::array_t<int64_t> initialLtm(const HebbianGraph& g, const ArrayArg& queries, const ArrayArg& ltm,
                                const ArrayArg& ltmPositions, const IntArg& numPositions, const IntArg& seed) {
  const I64 q = asMatrix(queries, "queries"), l = asMatrix(ltm, "ltm"), lp = asMatrix(ltmPositions, "ltm_positions");
  if (l.shape(0) != q.shape(0))
    throw std::invalid_argument("ltm must have the rows of queries (" + std::to_string(q.shape(0)) + "), got " +
                                std::to_string(l.shape(0)));
  if (lp.shape(0) != l.shape(0) || lp.shape(1) != l.shape(1))
    throw std::invalid_argument("ltm_positions must have the shape of ltm [" + std::to_string(l.shape(0)) + ", " +
                                std::to_string(l.shape(1)) + "], got [" + std::to_string(lp.shape(0)) + ", " +
                                std::to_string(lp.shape(1)) + "]");
  const int64_t positions = asInt64(numPositions, "num_positions");
  const uint64_t seedValue = asUint64(seed, "seed");
  const int64_t rows = q.shape(0), S = q.shape(1), L = l.shape(1);
  py::array_t<int64_t> out({rows, S});
  int64_t* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    g.initialLtm(q.data(), S, l.data(), lp.data(), L, rows, positions, seedValue, o);
  }
  return out;  // built and returned with the GIL held
}

py::array_t<int64_t> walk(const HebbianGraph& g, const ArrayArg& starts, const ArrayArg& ltm, const IntArg& depth,
                          const BoolArg& aliasNegative) {
  const I64 s = asMatrix(starts, "starts"), l = asMatrix(ltm, "ltm");
  if (l.shape(0) != s.shape(0))
    throw std::invalid_argument("ltm must have the rows of starts (" + std::to_string(s.shape(0)) + "), got " +
                                std::to_string(l.shape(0)));
  const int64_t steps = asInt64(depth, "depth", 0, std::numeric_limits<int32_t>::max(), "an integer >= 0");
  const bool alias = asBool(aliasNegative, "alias_negative");
  const int64_t rows = s.shape(0), W = s.shape(1), L = l.shape(1);
  py::array_t<int64_t> out({rows, (steps + 1) * W});
  int64_t* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    g.walk(s.data(), W, l.data(), L, rows, steps, alias, o);
  }
  return out;  // built and returned with the GIL held
}

py::array_t<int32_t> dense(const HebbianGraph& g, const IntArg& row, const ArrayArg& queries, const ArrayArg& columns) {
  const int64_t r = asInt64(row, "row");
  const I64 q = asArray<int64_t>(queries, "queries", 1), c = asArray<int64_t>(columns, "columns", 1);
  const int64_t Q = q.shape(0), C = c.shape(0);
  py::array_t<int32_t> out({Q, C});
  int32_t* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    g.dense(r, q.data(), Q, c.data(), C, o);
  }
  return out;  // built and returned with the GIL held
}

void bind(py::module_& m) {
  m.doc() = "Sparse Hebbian co-fire graph (per batch row, keyed by engram id) and Memoria's LTM walk.\n\n"
            "Thread safety: concurrent readers, exclusive writers (a reader-writer lock inside the\n"
            "graph); no call holds the GIL while it waits for the lock, and calls longer than a\n"
            "lookup release it while they run.";

  py::class_<HebbianGraph>(m, "HebbianGraph")
      .def(py::init([](const IntArg& batch) { return std::make_unique<HebbianGraph>(asInt64(batch, "batch")); }),
           py::arg("batch"))
      .def_property_readonly("batch", &HebbianGraph::batch)  // O(1) reads keep the GIL
      .def(
          "resize",
          [](HebbianGraph& g, const IntArg& batch) {
            const int64_t n = asInt64(batch, "batch");
            py::gil_scoped_release release;
            g.resize(n);
          },
          py::arg("batch"))
      .def("clear",
           [](HebbianGraph& g) {
             py::gil_scoped_release release;
             g.clear();
           })
      .def(
          "num_nodes", [](const HebbianGraph& g, const IntArg& row) { return g.numNodes(asInt64(row, "row")); },
          py::arg("row"))
      .def(
          "num_edges",
          [](const HebbianGraph& g, const IntArg& row) {
            return readRow(g, row, [](const HebbianGraph& h, int64_t r) { return h.numEdges(r); });
          },
          py::arg("row"), "Directed adjacency entries of the row (twice the undirected edges).")
      .def(
          "count",
          [](const HebbianGraph& g, const IntArg& row, const IntArg& a, const IntArg& b) {
            return g.count(asInt64(row, "row"), asInt64(a, "a"), asInt64(b, "b"));
          },
          py::arg("row"), py::arg("a"), py::arg("b"))
      .def("fire_count", &fireCount, py::arg("row"), py::arg("ids"))
      .def(
          "fire_together",
          [](HebbianGraph& g, const ArrayArg& ids) {
            writeMatrix(g, ids, [](HebbianGraph& h, const int64_t* p, int64_t rows, int64_t k) {
              h.fireTogether(p, rows, k);
            });
          },
          py::arg("ids"), "Every pair of ids of a row (negative ignored, duplicates once) co-fires once.")
      .def(
          "remove",
          [](HebbianGraph& g, const ArrayArg& ids) {
            writeMatrix(g, ids, [](HebbianGraph& h, const int64_t* p, int64_t rows, int64_t k) {
              h.remove(p, rows, k);
            });
          },
          py::arg("ids"), "Delete engrams (negative ids ignored) and their edges.")
      .def("edges", &edges, py::arg("row"), "(src_ids, dst_ids, counts): every directed entry (both directions).")
      .def("fires", &fires, py::arg("row"), "(ids, fire_counts) of every engram in the graph.")
      .def("set_edges", &setEdges, py::arg("row"), py::arg("src"), py::arg("dst"), py::arg("counts"))
      .def("set_fires", &setFires, py::arg("row"), py::arg("ids"), py::arg("counts"))
      .def("add_nodes", &addNodes, py::arg("ids"),
           "Node slots [batch, K] of engram ids (created when missing; -1 ids give -1).")
      .def("initial_ltm", &initialLtm, py::arg("queries"), py::arg("ltm"), py::arg("ltm_positions"),
           py::arg("num_positions"), py::arg("seed"),
           "Local LTM index [batch, S] with the highest co-fire count per query slot (-1: none); random ties.")
      .def("walk", &walk, py::arg("starts"), py::arg("ltm"), py::arg("depth"), py::arg("alias_negative") = true,
           "Greedy co-fire walk; returns local LTM indices [batch, (depth + 1) * W] (row-major [depth + 1, W]).")
      .def("dense", &dense, py::arg("row"), py::arg("queries"), py::arg("columns"),
           "Dense co-fire counts [Q, C] between engram ids (diagonal: fire counts; -1 ids give -1).");
}

}  // namespace
}  // namespace hebbian
}  // namespace mnemonix

static mnemonix::Registrar reg("hebbian", &mnemonix::hebbian::bind);
