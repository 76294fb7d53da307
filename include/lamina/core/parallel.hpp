#pragma once
// Threading: OpenMP when the consumer links it (lamina::lamina does when
// LAMINA_OPENMP is on), serial otherwise. Eigen's GEMM uses the same pool and
// runs single-threaded when called inside one of our parallel loops.
#include "lamina/core/eigen_core.hpp"
#ifdef _OPENMP
#include <omp.h>
#define LAMINA_PRAGMA(...) _Pragma(#__VA_ARGS__)
/// A vectorised sum reduction into the listed variables.
#define LAMINA_SIMD_REDUCE_SUM(...) LAMINA_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#else
#define LAMINA_SIMD_REDUCE_SUM(...)
#endif

namespace lamina {

// libgomp allocates (and frees) the team of every parallel region that runs
// one thread; teams of more threads it keeps for the next region of the same
// size. The loops below therefore enter no region when it would run one thread,
// so that a steady-state step allocates nothing at any thread count.

/// f(i) for i = 0 .. n-1 on lamina's threads, as `omp parallel for
/// schedule(static)` runs it (thread t takes the t-th contiguous share;
/// thread_id() names it). With one thread available, outside any parallel
/// region, the loop runs on the calling thread, where thread_id() is 0 too.
template <class Index, class F>
void parallel_for(Index n, F&& f) {
#ifdef _OPENMP
  if (omp_get_max_threads() > 1 || omp_in_parallel()) {
    LAMINA_PRAGMA(omp parallel for schedule(static))
    for (Index i = 0; i < n; ++i) f(i);
    return;
  }
#endif
  for (Index i = 0; i < n; ++i) f(i);
}

/// i = 0 .. n-1 through f(i), for element-wise, memory-bound loops: threaded
/// (static schedule) when n >= 2^16, more than one thread is available and no
/// parallel region is running; else vectorised on the calling thread.
template <class Index, class F>
void for_each_large(Index n, F&& f) {
#ifdef _OPENMP
  if (n >= (Index(1) << 16) && omp_get_max_threads() > 1 && !omp_in_parallel()) {
    LAMINA_PRAGMA(omp parallel for simd schedule(static))
    for (Index i = 0; i < n; ++i) f(i);
    return;
  }
  LAMINA_PRAGMA(omp simd)
#endif
  for (Index i = 0; i < n; ++i) f(i);
}

/// Threads used by lamina's loops and by Eigen's GEMM.
inline void set_num_threads(int n) {
  if (n < 1) n = 1;
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
}
inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

}  // namespace lamina
