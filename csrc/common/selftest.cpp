// mnemonix._core._selftest: probes of the shared machinery, for the tests only.
//
// raise_as(kind) throws one C++ exception of each family, so that a test can check the one
// translation of common/errors.hpp; parallel_raise(n, fail_at) throws inside an OpenMP
// parallel loop, which must reach Python as an exception (FirstException), not abort.
#include <pybind11/pybind11.h>

#include <atomic>
#include <new>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/errors.hpp"
#include "common/python.hpp"
#include "registry.hpp"

namespace py = pybind11;

namespace mnemonix {
namespace {

void raiseAs(const std::string& kind) {
  if (kind == "type") throw TypeError("a TypeError from C++");
  if (kind == "value") throw std::invalid_argument("an invalid_argument from C++");
  if (kind == "domain") throw std::domain_error("a domain_error from C++");
  if (kind == "index") throw std::out_of_range("an out_of_range from C++");
  if (kind == "length") throw std::length_error("a length_error from C++");
  if (kind == "memory") throw std::bad_alloc();
  if (kind == "runtime") throw std::runtime_error("a runtime_error from C++");
  throw std::invalid_argument("kind must be one of type, value, domain, index, length, memory, runtime, got " + kind);
}

// Runs n iterations over OpenMP threads; iteration fail_at throws. Returns the number of
// threads of the region (to show that it was parallel).
int parallelRaise(const IntArg& n, const IntArg& failAt) {
  const int64_t iterations = asInt64(n, "n", 0, int64_t{1} << 20, "an integer in [0, 2**20]");
  const int64_t failing = asInt64(failAt, "fail_at");
  std::atomic<int> threads{1};
  FirstException error;
  {
    py::gil_scoped_release release;
#ifdef _OPENMP
#pragma omp parallel for schedule(static, 1)
#endif
    for (int64_t i = 0; i < iterations; ++i) {
      error.run([&] {
#ifdef _OPENMP
        threads.store(omp_get_num_threads(), std::memory_order_relaxed);
#endif
        if (i == failing) throw std::invalid_argument("iteration " + std::to_string(i) + " failed");
      });
    }
  }
  error.rethrow();
  return threads.load();
}

void bind(py::module_& m) {
  m.doc() = "Probes of the shared C++ machinery (error translation, OpenMP error capture); tests only.";
  m.def("raise_as", &raiseAs, py::arg("kind"));
  m.def("parallel_raise", &parallelRaise, py::arg("n"), py::arg("fail_at"));
}

}  // namespace
}  // namespace mnemonix

static mnemonix::Registrar reg("_selftest", &mnemonix::bind);
