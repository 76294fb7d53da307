// The kernels compiled for sse2 (this file gets that ISA's compiler flags).
#define LAMINA_KERNELS_ISA_NS isa_sse2
#include "lamina/kernels/dispatch.hpp"

namespace lamina::kernels::isa_sse2 {
const KernelTable<float>& table_float() {
  static const KernelTable<float> t = make_table<xsimd::sse2, float>();
  return t;
}
const KernelTable<double>& table_double() {
  static const KernelTable<double> t = make_table<xsimd::sse2, double>();
  return t;
}
}  // namespace lamina::kernels::isa_sse2
