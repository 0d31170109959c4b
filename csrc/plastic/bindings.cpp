// pybind11 bindings of the plastic prefix memory engine: mnemonix._core.plastic.
//
// Strings cross the boundary as Python str <-> std::u32string (one char32_t per
// code point, so prefix and substring semantics are those of Python's str).
// Arguments are converted with the GIL held; learning and inference release it.
// std::invalid_argument -> ValueError, std::runtime_error -> RuntimeError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

#include "plastic/engine.hpp"
#include "registry.hpp"

namespace py = pybind11;
using mnemonix::plastic::Engine;
using mnemonix::plastic::InferResult;
using mnemonix::plastic::NodeId;
using mnemonix::plastic::Str;
using mnemonix::plastic::View;

namespace {

template <typename T>
py::array_t<T> to_numpy(std::vector<T>&& values) {
  auto* owned = new std::vector<T>(std::move(values));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(owned->size())}, {static_cast<py::ssize_t>(sizeof(T))},
                        owned->data(), free_when_done);
}

py::dict export_arrays(const Engine& e) {
  std::vector<uint32_t> codepoints;
  std::vector<int64_t> offsets{0}, counts, levels, src, dst;
  size_t total = 0;
  for (size_t i = 0; i < e.num_nodes(); ++i) total += e.string(static_cast<NodeId>(i)).size();
  codepoints.reserve(total);
  offsets.reserve(e.num_nodes() + 1);
  counts.reserve(e.num_nodes());
  levels.reserve(e.num_nodes());
  src.reserve(e.num_edges());
  dst.reserve(e.num_edges());
  for (size_t i = 0; i < e.num_nodes(); ++i) {
    NodeId id = static_cast<NodeId>(i);
    for (char32_t c : e.string(id)) codepoints.push_back(static_cast<uint32_t>(c));
    offsets.push_back(static_cast<int64_t>(codepoints.size()));
    counts.push_back(e.count(id));
    levels.push_back(e.r_level(id));
    for (NodeId v : e.successors(id)) {
      src.push_back(id);
      dst.push_back(v);
    }
  }
  py::dict out;
  out["codepoints"] = to_numpy(std::move(codepoints));
  out["offsets"] = to_numpy(std::move(offsets));
  out["count"] = to_numpy(std::move(counts));
  out["r_level"] = to_numpy(std::move(levels));
  out["edge_src"] = to_numpy(std::move(src));
  out["edge_dst"] = to_numpy(std::move(dst));
  return out;
}

using I64 = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using U32 = py::array_t<uint32_t, py::array::c_style | py::array::forcecast>;

std::unique_ptr<Engine> import_arrays(bool exact_counts, int64_t samples, U32 codepoints, I64 offsets, I64 counts,
                                      I64 levels, I64 edge_src, I64 edge_dst) {
  const py::ssize_t n = counts.size();
  if (offsets.size() != n + 1 || levels.size() != n)
    throw std::invalid_argument("offsets must have len(count) + 1 entries and r_level len(count) entries");
  if (edge_src.size() != edge_dst.size()) throw std::invalid_argument("edge_src and edge_dst differ in length");
  auto engine = std::make_unique<Engine>(exact_counts);
  const uint32_t* cp = codepoints.data();
  const int64_t* off = offsets.data();
  const py::ssize_t ncp = codepoints.size();
  {
    py::gil_scoped_release release;
    if (off[0] != 0) throw std::invalid_argument("offsets must start at 0");
    Str buf;
    for (py::ssize_t i = 0; i < n; ++i) {
      if (off[i + 1] < off[i] || off[i + 1] > ncp) throw std::invalid_argument("offsets are not increasing");
      buf.resize(static_cast<size_t>(off[i + 1] - off[i]));
      for (size_t k = 0; k < buf.size(); ++k) {
        uint32_t c = cp[off[i] + static_cast<int64_t>(k)];
        if (c > 0x10FFFF) throw std::invalid_argument("code point out of range");
        buf[k] = static_cast<char32_t>(c);
      }
      if (counts.data()[i] < 0) throw std::invalid_argument("negative count");
      engine->restore_node(buf, counts.data()[i], levels.data()[i]);
    }
    for (py::ssize_t k = 0; k < edge_src.size(); ++k) {
      int64_t u = edge_src.data()[k], v = edge_dst.data()[k];
      if (u < 0 || v < 0 || u >= n || v >= n) throw std::invalid_argument("edge endpoint out of range");
      engine->restore_edge(static_cast<NodeId>(u), static_cast<NodeId>(v));
    }
    engine->set_samples(samples);
  }
  return engine;
}

py::tuple infer(Engine& e, const Str& prefix, const Str& stop, bool sample, uint64_t seed) {
  InferResult r;
  {
    py::gil_scoped_release release;
    r = e.infer(prefix, stop, sample, seed);
  }
  py::list path;
  for (NodeId id : r.path) path.append(py::cast(e.string(id)));
  py::list probs;
  for (double p : r.probs) probs.append(p);
  return py::make_tuple(path, probs);
}

}  // namespace

static mnemonix::Registrar reg("plastic", [](py::module_& m) {
  m.doc() = "Plastic prefix memory graph engine (see mnemonix.plastic for the documented API).";
  py::class_<Engine>(m, "Engine")
      .def(py::init<bool>(), py::arg("exact_counts") = false)
      .def_property_readonly("exact_counts", &Engine::exact_counts)
      .def_property_readonly("num_nodes", &Engine::num_nodes)
      .def_property_readonly("num_edges", &Engine::num_edges)
      .def_property_readonly("samples", &Engine::samples)
      .def(
          "learn", [](Engine& e, const Str& s) { e.learn(s); }, py::arg("s"),
          py::call_guard<py::gil_scoped_release>())
      .def(
          "learn_many",
          [](Engine& e, const std::vector<Str>& samples) {
            for (const Str& s : samples)
              if (s.empty()) throw std::invalid_argument("samples must not contain the empty string");
            for (const Str& s : samples) e.learn(s);
          },
          py::arg("samples"), py::call_guard<py::gil_scoped_release>())
      .def(
          "potentiate", [](Engine& e, const Str& s, int64_t amount) { e.potentiate(s, amount); }, py::arg("s"),
          py::arg("amount"), py::call_guard<py::gil_scoped_release>())
      .def("__contains__", [](const Engine& e, const Str& s) { return e.find(s) >= 0; })
      .def(
          "node",
          [](const Engine& e, const Str& s) -> py::object {
            NodeId id = e.find(s);
            if (id < 0) return py::none();
            return py::make_tuple(e.count(id), e.r_level(id));
          },
          py::arg("s"))
      .def("nodes",
           [](const Engine& e) {
             py::list out(e.num_nodes());
             for (size_t i = 0; i < e.num_nodes(); ++i) {
               NodeId id = static_cast<NodeId>(i);
               out[i] = py::make_tuple(py::cast(e.string(id)), e.count(id), e.r_level(id));
             }
             return out;
           })
      .def("edges",
           [](const Engine& e) {
             py::list out;
             std::vector<py::object> names(e.num_nodes());
             for (size_t i = 0; i < e.num_nodes(); ++i) names[i] = py::cast(e.string(static_cast<NodeId>(i)));
             for (size_t i = 0; i < e.num_nodes(); ++i)
               for (NodeId v : e.successors(static_cast<NodeId>(i))) out.append(py::make_tuple(names[i], names[v]));
             return out;
           })
      .def("levels",
           [](const Engine& e) {
             // level -> node strings in node order
             py::dict out;
             std::map<int64_t, std::vector<NodeId>> by_level;
             for (const auto& [lvl, level] : e.levels()) {
               std::vector<NodeId> ids;
               for (const auto& key : level.sorted) ids.push_back(key.id);
               std::sort(ids.begin(), ids.end());
               by_level.emplace(lvl, std::move(ids));
             }
             for (auto& [lvl, ids] : by_level) {
               py::list names;
               for (NodeId id : ids) names.append(py::cast(e.string(id)));
               out[py::int_(lvl)] = names;
             }
             return out;
           })
      .def("memory_bytes", &Engine::memory_bytes)
      .def("infer", &infer, py::arg("prefix"), py::arg("stop"), py::arg("sample"), py::arg("seed"))
      .def("export_arrays", &export_arrays)
      .def_static("import_arrays", &import_arrays, py::arg("exact_counts"), py::arg("samples"),
                  py::arg("codepoints"), py::arg("offsets"), py::arg("count"), py::arg("r_level"),
                  py::arg("edge_src"), py::arg("edge_dst"));
});
