#pragma once
// <Eigen/Core>, included the one way lamina's headers include it.
//
// GCC 12's AVX-512 intrinsic headers (pulled in by Eigen and xsimd) initialise
// the results of their _mm512_undefined_*() helpers from themselves
// (`__m512 __Y = __Y;`), which -Wmaybe-uninitialized and -Wuninitialized then
// report wherever such an intrinsic is inlined: GCC bug 105593, fixed in GCC 13,
// about 260 false positives per AVX-512 translation unit. GCC decides by the
// location inside the intrinsic header, so the warnings are silenced around the
// first inclusion of those headers (here and in kernels/simd.hpp) and nowhere
// else. A program that includes <immintrin.h> itself before lamina sees them.
#if defined(__GNUC__) && !defined(__clang__)
#define LAMINA_INTRINSIC_HEADERS_BEGIN                           \
  _Pragma("GCC diagnostic push")                                 \
  _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")    \
  _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define LAMINA_INTRINSIC_HEADERS_END _Pragma("GCC diagnostic pop")
#else
#define LAMINA_INTRINSIC_HEADERS_BEGIN
#define LAMINA_INTRINSIC_HEADERS_END
#endif

LAMINA_INTRINSIC_HEADERS_BEGIN
#include <Eigen/Core>
LAMINA_INTRINSIC_HEADERS_END
