#pragma once
// 64-byte aligned storage: one cache line, the widest vector (AVX-512), so no
// vector load of an aligned row is split over two lines, whatever the build's
// instruction set (Eigen's aligned_allocator follows the build: 16 bytes for SSE2).
// Blocks of 64 KiB and more start on a 4 KiB page: then rows of 1024 floats
// are pages, and the row kernels' prefetches and the hardware prefetcher (which
// stops at page ends) see one page per row and stream; rows 64 bytes past a
// page ran the fused KL about 10 % slower at DRAM size (bench/README).
#include <cstddef>
#include <new>
#include <vector>

namespace lamina {

inline constexpr std::size_t storage_alignment = 64;

/// The alignment of a block of `bytes`: 4096 from 64 KiB on (the waste is at most 6 %), else 64.
constexpr std::size_t storage_alignment_for(std::size_t bytes) noexcept {
  return bytes >= (std::size_t(1) << 16) ? 4096 : storage_alignment;
}

template <class T>
struct aligned_allocator {
  using value_type = T;
  aligned_allocator() noexcept = default;
  template <class U>
  aligned_allocator(const aligned_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(storage_alignment_for(n * sizeof(T)))));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    ::operator delete(p, std::align_val_t(storage_alignment_for(n * sizeof(T))));
  }
  template <class U>
  bool operator==(const aligned_allocator<U>&) const noexcept {
    return true;
  }
};

/// A std::vector whose data() is 64-byte aligned (Tensor's storage, scratch buffers).
template <class T>
using aligned_vector = std::vector<T, aligned_allocator<T>>;

}  // namespace lamina
