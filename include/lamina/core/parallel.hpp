#pragma once
// Threading: OpenMP when the consumer links it (lamina::lamina does when
// LAMINA_OPENMP is on), serial otherwise. Eigen's GEMM uses the same pool and
// runs single-threaded when called inside one of our parallel loops.
#include "lamina/core/eigen_core.hpp"
#ifdef _OPENMP
#include <omp.h>
#define LAMINA_PRAGMA(...) _Pragma(#__VA_ARGS__)
#define LAMINA_PARALLEL_FOR LAMINA_PRAGMA(omp parallel for schedule(static))
/// For element-wise, memory-bound loops over n elements: threads only when n is
/// large enough to pay for them.
#define LAMINA_PARALLEL_FOR_LARGE(n) LAMINA_PRAGMA(omp parallel for simd schedule(static) if ((n) >= (1 << 16)))
/// A vectorised sum reduction into the listed variables.
#define LAMINA_SIMD_REDUCE_SUM(...) LAMINA_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#else
#define LAMINA_PARALLEL_FOR
#define LAMINA_PARALLEL_FOR_LARGE(n)
#define LAMINA_SIMD_REDUCE_SUM(...)
#endif

namespace lamina {

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
