// mmnet/core/parallel.hpp: the run-time thread count (default: all cores, as OpenMP chooses).
#pragma once
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace mmnet {

inline void set_num_threads(int n) {
#if defined(_OPENMP)
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

inline int get_num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace mmnet
