// The exceptions of the C++ cores and how they reach Python (no Python here).
//
// Cores throw standard exceptions; common/python.hpp registers the one translator that
// maps them, for every engine alike:
//
//   mnemonix::TypeError                      -> TypeError    (an argument of the wrong kind)
//   std::invalid_argument, std::domain_error -> ValueError   (a wrong value, shape or size)
//   std::out_of_range                        -> IndexError
//   std::length_error, std::bad_alloc        -> MemoryError  (a structure cannot grow further)
//   anything else                            -> RuntimeError (a bug: please report it)
//
// Messages name the Python argument ("amount must be ..., got ..."), so that the Python
// wrappers can let them through unchanged.
#pragma once

#include <atomic>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

namespace mnemonix {

class TypeError : public std::logic_error {
 public:
  explicit TypeError(const std::string& what) : std::logic_error(what) {}
};

// Keeps the first exception thrown by the iterations of a parallel loop, so that it can be
// rethrown after the region: an exception must never leave an OpenMP region (that calls
// std::terminate). Iterations that start after a failure are skipped.
//
//     FirstException error;
//     #pragma omp parallel for
//     for (...) error.run([&] { body(); });
//     error.rethrow();
class FirstException {
 public:
  template <typename F>
  void run(F&& body) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      std::forward<F>(body)();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!first_) first_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  // Call after the region (single-threaded again).
  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr first_;
};

}  // namespace mnemonix
