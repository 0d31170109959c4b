// The reader-writer lock of every stateful engine (no Python here).
//
// A std::shared_mutex whose *blocking* waits go through a hook that the embedding layer may
// install once: the Python bindings install one that releases the GIL for the duration of
// the wait (common/python.hpp). So cheap reads can be called with the GIL held (no release
// and re-acquire around a 100 ns lookup) and still never wait for the engine lock while
// holding the GIL, which could deadlock with a lock holder that needs the GIL and would stall
// every Python thread behind a long write. Uncontended locking is one try_lock: no hook call.
#pragma once

#include <atomic>
#include <shared_mutex>

namespace mnemonix {

class SharedMutex {
 public:
  // wait(ctx) blocks until the lock is taken; a hook must call it exactly once.
  using WaitHook = void (*)(void (*wait)(void*), void* ctx);
  static void setWaitHook(WaitHook hook) { hookSlot().store(hook, std::memory_order_release); }

  void lock() {
    if (!mutex_.try_lock()) blockingWait([](void* m) { static_cast<std::shared_mutex*>(m)->lock(); });
  }
  bool try_lock() { return mutex_.try_lock(); }
  void unlock() { mutex_.unlock(); }
  void lock_shared() {
    if (!mutex_.try_lock_shared())
      blockingWait([](void* m) { static_cast<std::shared_mutex*>(m)->lock_shared(); });
  }
  bool try_lock_shared() { return mutex_.try_lock_shared(); }
  void unlock_shared() { mutex_.unlock_shared(); }

 private:
  static std::atomic<WaitHook>& hookSlot() {
    static std::atomic<WaitHook> hook{nullptr};
    return hook;
  }
  void blockingWait(void (*wait)(void*)) {
    WaitHook hook = hookSlot().load(std::memory_order_acquire);
    if (hook)
      hook(wait, &mutex_);
    else
      wait(&mutex_);
  }

  std::shared_mutex mutex_;
};

using ReadLock = std::shared_lock<SharedMutex>;
using WriteLock = std::unique_lock<SharedMutex>;

}  // namespace mnemonix
