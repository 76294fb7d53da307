#pragma once
// The stopping measure of the FPI solvers (spec/fpi_dynalay.md §2): the relative
// residual ‖f(z) − z‖ / (‖f(z)‖ + 1e-9) of one sample.
#include <cmath>

#include "lamina/kernels/dispatch.hpp"

namespace lamina::fpi {

/// ‖fx − x‖ / (‖fx‖ + 1e-9) from s[0] = ‖fx − x‖², s[1] = ‖fx‖² (kernels/residual.hpp).
inline double relative_residual(const double* s) noexcept { return std::sqrt(s[0]) / (std::sqrt(s[1]) + 1e-9); }

/// ‖fx − x‖ / (‖fx‖ + 1e-9) of one sample (`w` values).
template <class T>
double relative_residual(const T* x, const T* fx, index_t w) noexcept {
  double s[2];
  kernels::table<T>().residual_dots(x, fx, w, nullptr, 0, nullptr, nullptr, s);
  return relative_residual(s);
}

}  // namespace lamina::fpi
