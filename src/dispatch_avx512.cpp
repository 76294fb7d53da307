// The kernels compiled for avx512 (this file gets that ISA's compiler flags).
#define LAMINA_KERNELS_ISA_NS isa_avx512
#include "lamina/kernels/dispatch.hpp"

namespace lamina::kernels::isa_avx512 {
const KernelTable<float>& table_float() {
  static const KernelTable<float> t = make_table<xsimd::avx512bw, float>();
  return t;
}
const KernelTable<double>& table_double() {
  static const KernelTable<double> t = make_table<xsimd::avx512bw, double>();
  return t;
}
}  // namespace lamina::kernels::isa_avx512
