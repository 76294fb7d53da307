#pragma once
// One table of kernel entry points per scalar type. By default it holds the
// build target's instantiations (xsimd::default_arch). With the CMake option
// LAMINA_RUNTIME_DISPATCH (which defines LAMINA_RUNTIME_DISPATCH and links
// lamina::dispatch), the table is chosen once at run time among SSE2, AVX2+FMA
// and AVX-512, so one binary runs on any x86-64 at that machine's best width.
#include <cstddef>
#include <cstdint>
#include <span>

#include "lamina/kernels/batchnorm.hpp"
#include "lamina/kernels/conv3x3_direct.hpp"
#include "lamina/kernels/depthwise_conv3x3.hpp"
#include "lamina/kernels/exp.hpp"
#include "lamina/kernels/kl_divergence.hpp"
#include "lamina/kernels/residual.hpp"
#include "lamina/kernels/short_rows.hpp"
#include "lamina/kernels/softmax.hpp"
#include "lamina/kernels/spd_lanes.hpp"
#include "lamina/kernels/tanh.hpp"
#include "lamina/kernels/weighted_aggregation.hpp"
#include "lamina/kernels/winograd.hpp"
#include "lamina/kernels/winograd4.hpp"

namespace lamina::kernels {

template <class T>
struct KernelTable {
  const char* isa;
  void (*softmax)(const T* a, T* p, index_t n);
  void (*log_softmax)(const T* a, T* out, index_t n);
  void (*softmax_backward)(const T* p, const T* dy, T* da, index_t n);
  T (*kl_probs)(const T* p, const T* q, index_t n, T eps);
  T (*kl_logits)(const T* a, const T* b, index_t n);
  void (*weighted_sum)(const T* const* v, const T* w, std::size_t t, T* o, index_t L);
  /// assign: nullptr (add into every dv[k]) or t flags (set: dv[k] = w[k]·dout).
  void (*weighted_sum_backward)(const T* const* v, const T* w, std::size_t t, const T* dout, T* const* dv, T* dw,
                                index_t L, const std::uint8_t* assign);
  void (*depthwise_conv3x3)(const T* x, const T* w, T* y, index_t B, index_t C, index_t H, index_t W);
  void (*depthwise_conv3x3_backward)(const T* x, const T* w, const T* dy, T* dx, T* dw, index_t B, index_t C,
                                     index_t H, index_t W);
  void (*exp)(const T* x, T* y, index_t n);
  void (*tanh)(const T* x, T* y, index_t n);
  // Many short rows (short_rows.hpp), vectorised across rows.
  void (*softmax_rows_short)(const T* a, T* p, index_t R, index_t n);
  void (*softmax_backward_rows_short)(const T* p, const T* dy, T* da, index_t R, index_t n);
  void (*kl_probs_rows_short)(const T* p, const T* q, T* out, index_t R, index_t n, T eps);
  // Winograd F(2×2, 3×3) transforms and products (winograd.hpp).
  index_t winograd_nr;  ///< column block of winograd_gemm (winograd_nv vectors)
  void (*winograd_input)(const T* P, index_t ps, index_t pitch, index_t n, T* V, index_t es);
  void (*winograd_output)(const T* M, index_t es, index_t n, T* Y, index_t ps);
  void (*winograd_output_grad)(const T* G, index_t ps, index_t n, T* D, index_t es);
  void (*winograd_gemm)(const T* A, const T* B, T* C, index_t M, index_t N, index_t K, index_t ldb, index_t ldc);
  void (*winograd_gemm_nt)(const T* A, const T* B, T* C, index_t M, index_t N, index_t K, index_t ld);
  // Winograd F(4×4, 3×3) transforms (winograd4.hpp; the products are the above).
  void (*winograd4_input)(const T* P, index_t ps, index_t pitch, index_t n, T* V, index_t es);
  void (*winograd4_output)(const T* M, index_t es, index_t n, T* Y, index_t ps);
  void (*winograd4_output_grad)(const T* G, index_t ps, index_t n, T* D, index_t es);
  // The direct 3×3 convolution's products (conv3x3_direct.hpp).
  index_t conv_nr;  ///< column block of conv_gemm (conv_nv vectors)
  void (*conv_gemm)(const T* A, const T* src, const index_t* off, T* C, index_t M, index_t N, index_t K, index_t ldc);
  void (*conv_gemm_tn)(const T* src, const index_t* off, const T* B, index_t ldb, T* C, index_t M, index_t N,
                       index_t Q, index_t ldc);
  void (*conv_split2)(const T* in, index_t ldi, index_t R, index_t n, T* even, T* odd, index_t ldo);
  void (*conv_copy_rows)(const T* src, index_t lds, index_t R, index_t n, T* dst, index_t ldd, T b);
  void (*conv_merge2_add)(const T* even, const T* odd, index_t lds, index_t R, index_t n, T* dst, index_t ldd);
  // BatchNorm over one (b, c) plane (batchnorm.hpp).
  void (*bn_sums)(const T* x, index_t n, T K, double* s);
  void (*bn_apply)(const T* x, const T* r, T* y, index_t n, T m, T a, T b, bool relu);
  void (*bn_grad_sums)(const T* x, const T* y, const T* dy, index_t n, T mean, T inv, double* s);
  void (*bn_backward)(const T* x, const T* y, const T* dy, T* dx, T* dr, index_t n, BnGrad<T> c);
  // The same over a run of small planes, per-channel terms as arrays.
  void (*bn_sums_planes)(const T* x, BnRun d, const T* K, double* s);
  void (*bn_apply_planes)(const T* x, const T* r, T* y, BnRun d, const T* m, const T* a, const T* b, bool relu);
  void (*bn_grad_sums_planes)(const T* x, const T* y, const T* dy, BnRun d, const T* mean, const T* inv, double* s);
  void (*bn_backward_planes)(const T* x, const T* y, const T* dy, T* dx, T* dr, BnRun d, const BnGrad<T>* cf);
  // Small SPD solves in double, one system per lane (spd_lanes.hpp; the same in every table).
  index_t spd_lanes;  ///< systems per call (lanes<double>)
  void (*spd_solve_lanes)(double* A, double* b, index_t n, std::uint8_t* ok);
  // The residual pass of a fixed-point solve (residual.hpp).
  void (*residual_dots)(const T* x, const T* fx, index_t w, const T* const* rows, std::size_t n, T* f, T* g,
                        double* s);
};

inline namespace LAMINA_KERNELS_ISA_NS {
/// The table of one architecture's instantiations (in the caller's ISA namespace).
template <class Arch, class T>
KernelTable<T> make_table() {
  return {Arch::name(),
          &softmax<Arch, T>,
          &log_softmax<Arch, T>,
          &softmax_backward<Arch, T>,
          &kl_probs<Arch, T>,
          &kl_logits<Arch, T>,
          [](const T* const* v, const T* w, std::size_t t, T* o, index_t L) {
            weighted_sum<Arch, T>(std::span<const T* const>(v, t), std::span<const T>(w, t), o, L);
          },
          [](const T* const* v, const T* w, std::size_t t, const T* dout, T* const* dv, T* dw, index_t L,
             const std::uint8_t* assign) {
            weighted_sum_backward<Arch, T>(std::span<const T* const>(v, t), std::span<const T>(w, t), dout,
                                           std::span<T* const>(dv, t), std::span<T>(dw, t), L,
                                           assign ? std::span<const std::uint8_t>(assign, t) : std::span<const std::uint8_t>{});
          },
          static_cast<void (*)(const T*, const T*, T*, index_t, index_t, index_t, index_t)>(&depthwise_conv3x3<Arch, T>),
          static_cast<void (*)(const T*, const T*, const T*, T*, T*, index_t, index_t, index_t, index_t)>(
              &depthwise_conv3x3_backward<Arch, T>),
          &vexp<Arch, T>,
          &vtanh<Arch, T>,
          static_cast<void (*)(const T*, T*, index_t, index_t)>(&softmax_rows_short<Arch, T>),
          &softmax_backward_rows_short<Arch, T>,
          static_cast<void (*)(const T*, const T*, T*, index_t, index_t, T)>(&kl_probs_rows_short<Arch, T>),
          winograd_nv * lanes<T, Arch>,
          &winograd_input<Arch, T>,
          &winograd_output<Arch, T>,
          &winograd_output_grad<Arch, T>,
          &winograd_gemm<Arch, T>,
          &winograd_gemm_nt<Arch, T>,
          &winograd4_input<Arch, T>,
          &winograd4_output<Arch, T>,
          &winograd4_output_grad<Arch, T>,
          conv_nv * lanes<T, Arch>,
          &conv_gemm<Arch, T>,
          &conv_gemm_tn<Arch, T>,
          &conv_split2<Arch, T>,
          &conv_copy_rows<Arch, T>,
          &conv_merge2_add<Arch, T>,
          &bn_sums<Arch, T>,
          &bn_apply<Arch, T>,
          &bn_grad_sums<Arch, T>,
          &bn_backward<Arch, T>,
          &bn_sums_planes<Arch, T>,
          &bn_apply_planes<Arch, T>,
          &bn_grad_sums_planes<Arch, T>,
          &bn_backward_planes<Arch, T>,
          lanes<double, Arch>,
          &spd_solve_lanes<Arch>,
          &residual_dots<Arch, T>};
}
}  // namespace LAMINA_KERNELS_ISA_NS

#ifdef LAMINA_RUNTIME_DISPATCH
// Defined in src/dispatch.cpp (lamina::dispatch).
const KernelTable<float>& runtime_table_float();
const KernelTable<double>& runtime_table_double();
#endif

/// The kernels this program uses: run-time selected, or the build target's.
template <class T>
const KernelTable<T>& table() {
#ifdef LAMINA_RUNTIME_DISPATCH
  if constexpr (std::is_same_v<T, float>) return runtime_table_float();
  else return runtime_table_double();
#else
  static const KernelTable<T> t = make_table<default_arch, T>();
  return t;
#endif
}

}  // namespace lamina::kernels
