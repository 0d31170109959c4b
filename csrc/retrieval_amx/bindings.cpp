// Python bindings of the AMX bfloat16 retrieval kernel: mnemonix._core.retrieval_amx.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "common/python.hpp"
#include "registry.hpp"
#include "retrieval_amx/amx.hpp"

namespace py = pybind11;

namespace mnemonix {
namespace retrieval {
namespace {

constexpr const char* kAmxAt = "retrieve_at";

void retrieveAmxAt(const py::handle& queries, size_t batch, size_t d, const py::handle& keys, size_t n,
                   const py::handle& values, size_t dv, double beta, const py::handle& out, const py::handle& lse,
                   bool outFloat32, int threads) {
  if (!amx::available()) throw std::runtime_error("retrieve_at: this CPU or build has no AMX bfloat16 tiles");
  if (batch == 0 || n == 0 || d == 0 || dv == 0)
    throw std::invalid_argument("retrieve_at: batch, n, d and dv must be >= 1, got " + std::to_string(batch) + ", " +
                                std::to_string(n) + ", " + std::to_string(d) + ", " + std::to_string(dv));
  const auto* q = addressArg<const uint16_t>(queries, true, kAmxAt, "queries");
  const auto* k = addressArg<const uint16_t>(keys, true, kAmxAt, "keys");
  const auto* v = addressArg<const uint16_t>(values, false, kAmxAt, "values");
  if (!v && dv != d) throw std::invalid_argument("retrieve_at: values 0 (the keys) needs dv == d");
  void* o = addressArg<void>(out, true, kAmxAt, "out");
  float* l = addressArg<float>(lse, false, kAmxAt, "lse");
  const amx::Problem p{q, batch, d, k, n, v ? v : k, dv, static_cast<float>(beta), o, outFloat32, l};
  py::gil_scoped_release release;
  amx::retrieve(p, threads);
}

void bind(py::module_& m) {
  m.doc() = "bfloat16 modern-Hopfield retrieval on AMX tiles (float32 logits and sums)";
  m.def("available", &amx::available, "True when this CPU, OS and build run the AMX bfloat16 kernel.");
  m.def("retrieve_at", &retrieveAmxAt, py::arg("queries"), py::arg("batch"), py::arg("d"), py::arg("keys"),
        py::arg("n"), py::arg("values"), py::arg("dv"), py::arg("beta"), py::arg("out"), py::arg("lse") = 0,
        py::arg("out_float32") = false, py::arg("num_threads") = 0,
        "retrieve_at(queries, batch, d, keys, n, values, dv, beta, out, lse=0, out_float32=False, num_threads=0):\n"
        "out [B, dv] (bfloat16, or float32) and lse [B] float32 (0: not wanted) of softmax(beta * Q K^T) V on\n"
        "contiguous bfloat16 buffers given by address (values 0: the keys), unchecked. Logits, weights and sums\n"
        "in float32 (the weights as two bfloat16 terms); a NaN or infinite logit makes its query's out and lse\n"
        "NaN. Raises RuntimeError where available() is False.");
}

}  // namespace
}  // namespace retrieval
}  // namespace mnemonix

static mnemonix::Registrar reg("retrieval_amx", &mnemonix::retrieval::bind);
