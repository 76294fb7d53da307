#pragma once
// 64-byte aligned storage: one cache line, the widest vector (AVX-512), so no
// vector load of an aligned row is split over two lines, whatever the build's
// instruction set (Eigen's aligned_allocator follows the build: 16 bytes for SSE2).
#include <cstddef>
#include <new>
#include <vector>

namespace lamina {

inline constexpr std::size_t storage_alignment = 64;

template <class T>
struct aligned_allocator {
  using value_type = T;
  aligned_allocator() noexcept = default;
  template <class U>
  aligned_allocator(const aligned_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(storage_alignment)));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t(storage_alignment)); }
  template <class U>
  bool operator==(const aligned_allocator<U>&) const noexcept {
    return true;
  }
};

/// A std::vector whose data() is 64-byte aligned (Tensor's storage, scratch buffers).
template <class T>
using aligned_vector = std::vector<T, aligned_allocator<T>>;

}  // namespace lamina
