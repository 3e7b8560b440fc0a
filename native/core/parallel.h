// CPU parallelism for kernels: split [0, n) into contiguous ranges over the machine's cores.
// Kernels call this from the device worker thread; it never touches JS.
#pragma once
#include <cstdint>
#include <functional>

namespace ha {

// Number of threads kernels may use (HYBRID_ATTENTION_CPU_THREADS overrides hardware_concurrency).
int cpu_thread_count();

// Runs fn(begin, end) over disjoint ranges covering [0, n). `min_per_thread` keeps tiny loops
// on one thread, where spawning costs more than it saves. Exceptions from any range are
// rethrown on the calling thread after all ranges finished.
void parallel_for(int64_t n, int64_t min_per_thread, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace ha
