// Run-time choice of the kernel table: the widest ISA this CPU supports among
// those compiled into lamina::dispatch (AVX-512BW, AVX2+FMA, SSE2).
#include <xsimd/xsimd.hpp>

#include "lamina/kernels/dispatch.hpp"

namespace lamina::kernels {
namespace isa_sse2 {
const KernelTable<float>& table_float();
const KernelTable<double>& table_double();
}  // namespace isa_sse2
namespace isa_avx2 {
const KernelTable<float>& table_float();
const KernelTable<double>& table_double();
}  // namespace isa_avx2
namespace isa_avx512 {
const KernelTable<float>& table_float();
const KernelTable<double>& table_double();
}  // namespace isa_avx512

namespace {
int best_isa() {
  static const int isa = [] {
    const auto a = xsimd::available_architectures();
    if (a.avx512bw) return 2;
    if (a.fma3_avx2) return 1;
    return 0;
  }();
  return isa;
}
}  // namespace

const KernelTable<float>& runtime_table_float() {
  switch (best_isa()) {
    case 2: return isa_avx512::table_float();
    case 1: return isa_avx2::table_float();
    default: return isa_sse2::table_float();
  }
}
const KernelTable<double>& runtime_table_double() {
  switch (best_isa()) {
    case 2: return isa_avx512::table_double();
    case 1: return isa_avx2::table_double();
    default: return isa_sse2::table_double();
  }
}
}  // namespace lamina::kernels
