// Python bindings of the sparse Hebbian graph: mnemonix._core.hebbian.
// Inputs are converted to contiguous int64 numpy arrays while holding the GIL;
// the loops run with the GIL released; outputs are numpy arrays built after.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "hebbian/hebbian_graph.hpp"
#include "registry.hpp"

namespace py = pybind11;
using mnemonix::hebbian::HebbianGraph;
using mnemonix::hebbian::SplitMix64;

namespace {

using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using I32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

void checkMatrix(const char* name, const I64Array& a, int64_t rows) {
  if (a.ndim() != 2)
    throw py::value_error(std::string(name) + " must be 2-D [batch, n], got " + std::to_string(a.ndim()) +
                          " dimensions");
  if (a.shape(0) != rows)
    throw py::value_error(std::string(name) + " must have " + std::to_string(rows) + " rows (the batch), got " +
                          std::to_string(a.shape(0)));
}

template <typename A>
void checkVector(const char* name, const A& a) {
  if (a.ndim() != 1)
    throw py::value_error(std::string(name) + " must be 1-D, got " + std::to_string(a.ndim()) + " dimensions");
}

void checkRow(const HebbianGraph& g, int64_t row) {
  if (row < 0 || row >= g.batch())
    throw py::value_error("row must be in [0, " + std::to_string(g.batch()) + "), got " + std::to_string(row));
}

template <typename T>
py::array_t<T> toArray(std::vector<T>&& v) {
  auto* holder = new std::vector<T>(std::move(v));
  py::capsule owner(holder, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(holder->size())}, {static_cast<py::ssize_t>(sizeof(T))},
                        holder->data(), owner);
}

}  // namespace

static mnemonix::Registrar reg("hebbian", [](py::module_& m) {
  m.doc() = "Sparse Hebbian co-fire graph (per batch row, keyed by engram id) and Memoria's LTM walk";

  py::class_<HebbianGraph>(m, "HebbianGraph")
      .def(py::init<int64_t>(), py::arg("batch"))
      .def_property_readonly("batch", &HebbianGraph::batch)
      .def("resize", &HebbianGraph::resize, py::arg("batch"))
      .def("clear",
           [](HebbianGraph& g) {
             for (int64_t b = 0; b < g.batch(); ++b) g.row(b).clear();
           })
      .def(
          "num_nodes", [](const HebbianGraph& g, int64_t row) { checkRow(g, row); return g.row(row).numNodes(); },
          py::arg("row"))
      .def(
          "num_edges", [](const HebbianGraph& g, int64_t row) { checkRow(g, row); return g.row(row).numEdges(); },
          py::arg("row"), "Directed adjacency entries of the row (twice the undirected edges).")
      .def(
          "count",
          [](const HebbianGraph& g, int64_t row, int64_t a, int64_t b) {
            checkRow(g, row);
            return g.row(row).count(a, b);
          },
          py::arg("row"), py::arg("a"), py::arg("b"))
      .def(
          "fire_count",
          [](const HebbianGraph& g, int64_t row, I64Array ids) {
            checkRow(g, row);
            checkVector("ids", ids);
            std::vector<int32_t> out(static_cast<size_t>(ids.shape(0)));
            const int64_t* p = ids.data();
            for (size_t i = 0; i < out.size(); ++i) out[i] = p[i] < 0 ? 0 : g.row(row).fireCount(p[i]);
            return toArray(std::move(out));
          },
          py::arg("row"), py::arg("ids"))
      .def(
          "fire_together",
          [](HebbianGraph& g, I64Array ids) {
            checkMatrix("ids", ids, g.batch());
            const int64_t k = ids.shape(1);
            const int64_t* p = ids.data();
            py::gil_scoped_release release;
            for (int64_t b = 0; b < g.batch(); ++b) g.row(b).fireTogether(p + b * k, k);
          },
          py::arg("ids"), "Every pair of ids of a row (negative ignored, duplicates once) co-fires once.")
      .def(
          "remove",
          [](HebbianGraph& g, I64Array ids) {
            checkMatrix("ids", ids, g.batch());
            const int64_t k = ids.shape(1);
            const int64_t* p = ids.data();
            py::gil_scoped_release release;
            for (int64_t b = 0; b < g.batch(); ++b) g.row(b).remove(p + b * k, k);
          },
          py::arg("ids"), "Delete engrams (negative ids ignored) and their edges.")
      .def(
          "edges",
          [](const HebbianGraph& g, int64_t row) {
            checkRow(g, row);
            std::vector<int64_t> src, dst;
            std::vector<int32_t> cnt;
            g.row(row).edges(src, dst, cnt);
            return py::make_tuple(toArray(std::move(src)), toArray(std::move(dst)), toArray(std::move(cnt)));
          },
          py::arg("row"), "(src_ids, dst_ids, counts): every directed entry (both directions).")
      .def(
          "fires",
          [](const HebbianGraph& g, int64_t row) {
            checkRow(g, row);
            std::vector<int64_t> ids;
            std::vector<int32_t> cnt;
            g.row(row).fires(ids, cnt);
            return py::make_tuple(toArray(std::move(ids)), toArray(std::move(cnt)));
          },
          py::arg("row"), "(ids, fire_counts) of every engram in the graph.")
      .def(
          "set_edges",
          [](HebbianGraph& g, int64_t row, I64Array src, I64Array dst, I32Array cnt) {
            checkRow(g, row);
            checkVector("src", src);
            checkVector("dst", dst);
            checkVector("counts", cnt);
            if (src.shape(0) != dst.shape(0) || src.shape(0) != cnt.shape(0))
              throw py::value_error("src, dst and counts must have one length, got " + std::to_string(src.shape(0)) +
                                    ", " + std::to_string(dst.shape(0)) + ", " + std::to_string(cnt.shape(0)));
            for (py::ssize_t i = 0; i < src.shape(0); ++i) g.row(row).setEdge(src.data()[i], dst.data()[i], cnt.data()[i]);
          },
          py::arg("row"), py::arg("src"), py::arg("dst"), py::arg("counts"))
      .def(
          "set_fires",
          [](HebbianGraph& g, int64_t row, I64Array ids, I32Array cnt) {
            checkRow(g, row);
            checkVector("ids", ids);
            checkVector("counts", cnt);
            if (ids.shape(0) != cnt.shape(0)) throw py::value_error("ids and counts must have one length");
            for (py::ssize_t i = 0; i < ids.shape(0); ++i) g.row(row).setFire(ids.data()[i], cnt.data()[i]);
          },
          py::arg("row"), py::arg("ids"), py::arg("counts"))
      .def(
          "add_nodes",
          [](HebbianGraph& g, I64Array ids) {
            checkMatrix("ids", ids, g.batch());
            const int64_t k = ids.shape(1), B = g.batch();
            py::array_t<int64_t> out({B, k});
            int64_t* o = out.mutable_data();
            const int64_t* p = ids.data();
            for (int64_t b = 0; b < B; ++b) g.row(b).addNodes(p + b * k, k, o + b * k);
            return out;
          },
          py::arg("ids"), "Node slots [batch, K] of engram ids (created when missing; -1 ids give -1).")
      .def(
          "initial_ltm",
          [](HebbianGraph& g, I64Array queries, I64Array ltm, I64Array ltmPos, int64_t numPositions, uint64_t seed) {
            checkMatrix("queries", queries, g.batch());
            checkMatrix("ltm", ltm, g.batch());
            checkMatrix("ltm_positions", ltmPos, g.batch());
            if (ltmPos.shape(1) != ltm.shape(1)) throw py::value_error("ltm_positions must have the shape of ltm");
            if (numPositions < 1) throw py::value_error("num_positions must be >= 1");
            const int64_t S = queries.shape(1), L = ltm.shape(1), B = g.batch();
            for (int64_t b = 0; b < B; ++b) {
              g.row(b).checkSlots(queries.data() + b * S, S, "queries");
              g.row(b).checkSlots(ltm.data() + b * L, L, "ltm");
            }
            py::array_t<int64_t> out({B, S});
            int64_t* o = out.mutable_data();
            const int64_t *q = queries.data(), *l = ltm.data(), *lp = ltmPos.data();
            {
              py::gil_scoped_release release;
              SplitMix64 rng(seed);
              for (int64_t b = 0; b < B; ++b)
                g.row(b).initialLtm(q + b * S, S, l + b * L, lp + b * L, L, numPositions, rng, o + b * S);
            }
            return out;
          },
          py::arg("queries"), py::arg("ltm"), py::arg("ltm_positions"), py::arg("num_positions"), py::arg("seed"),
          "Local LTM index [batch, S] with the highest co-fire count per query slot (-1: none); random ties.")
      .def(
          "walk",
          [](HebbianGraph& g, I64Array starts, I64Array ltm, int64_t depth, bool aliasNegative) {
            checkMatrix("starts", starts, g.batch());
            checkMatrix("ltm", ltm, g.batch());
            if (depth < 0) throw py::value_error("depth must be >= 0, got " + std::to_string(depth));
            const int64_t W = starts.shape(1), L = ltm.shape(1), B = g.batch();
            for (py::ssize_t i = 0; i < starts.size(); ++i)
              if (starts.data()[i] >= L) throw py::value_error("starts must be < the LTM length " + std::to_string(L));
            for (int64_t b = 0; b < B; ++b) g.row(b).checkSlots(ltm.data() + b * L, L, "ltm");
            py::array_t<int64_t> out({B, (depth + 1) * W});
            int64_t* o = out.mutable_data();
            const int64_t *s = starts.data(), *l = ltm.data();
            {
              py::gil_scoped_release release;
              for (int64_t b = 0; b < B; ++b)
                g.row(b).walk(s + b * W, W, l + b * L, L, depth, aliasNegative, o + b * (depth + 1) * W);
            }
            return out;
          },
          py::arg("starts"), py::arg("ltm"), py::arg("depth"), py::arg("alias_negative") = true,
          "Greedy co-fire walk; returns local LTM indices [batch, (depth + 1) * W] (row-major [depth + 1, W]).")
      .def(
          "dense",
          [](const HebbianGraph& g, int64_t row, I64Array queries, I64Array columns) {
            checkRow(g, row);
            checkVector("queries", queries);
            checkVector("columns", columns);
            const int64_t Q = queries.shape(0), C = columns.shape(0);
            py::array_t<int32_t> out({Q, C});
            int32_t* o = out.mutable_data();
            const int64_t *q = queries.data(), *c = columns.data();
            {
              py::gil_scoped_release release;
              g.row(row).dense(q, Q, c, C, o);
            }
            return out;
          },
          py::arg("row"), py::arg("queries"), py::arg("columns"),
          "Dense co-fire counts [Q, C] between engram ids (diagonal: fire counts; -1 ids give -1).");
});
