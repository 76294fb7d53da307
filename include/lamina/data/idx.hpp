#pragma once
// IDX files (the MNIST / Fashion-MNIST format), gzipped or plain, read with
// zlib's gz* interface (which passes uncompressed files through unchanged).
// Header: 0x00 0x00 <type> <ndim>, then ndim big-endian u32 extents, then data.
//
// Bad input (README "Guarantees on bad input"): every error is an io_error
// that names the file and what is wrong. The product of the extents is
// computed with overflow checks; a header that declares more data than a file
// of its size can hold (what follows the header of a plain file; at most 1032
// times the file size for gzip, deflate's largest expansion) is refused before
// any allocation, and the data is read in chunks, so memory never exceeds what
// the file really holds. Data after the declared payload is an error (IDX has
// no footer: trailing bytes mean the header and the file disagree).
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "lamina/core/error.hpp"

namespace lamina::data {

struct IdxArray {
  std::vector<std::uint32_t> dims;
  std::vector<std::uint8_t> values;  ///< unsigned bytes (type 0x08), row-major
};

namespace detail {
using lamina::detail::text;

/// The largest expansion of deflate (zlib's documented bound is 1032:1).
inline constexpr std::uint64_t idx_max_ratio = 1032;

/// A gz stream over one file, with errors naming it.
class IdxFile {
 public:
  explicit IdxFile(const std::filesystem::path& path) : path_(path), f_(nullptr, &gzclose) {
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    require<io_error>(std::filesystem::exists(st), "read_idx", path, "an existing file", "file not found");
    require<io_error>(std::filesystem::is_regular_file(st), "read_idx", path, "a regular file",
                      "a directory or special file");
    bytes_ = std::filesystem::file_size(path, ec);
    require<io_error>(!ec, "read_idx", path, "a readable file size", ec.message());
    f_.reset(gzopen(path.c_str(), "rb"));
    require<io_error>(f_ != nullptr, "read_idx", path, "a file that opens", "cannot open");
  }
  std::uint64_t file_bytes() const noexcept { return bytes_; }
  /// True for an uncompressed file (known after the first read).
  bool plain() const noexcept { return gzdirect(f_.get()) == 1; }
  const std::filesystem::path& path() const noexcept { return path_; }

  /// Up to n bytes into dst; 0 at the end of the data.
  std::size_t read_some(void* dst, std::size_t n) {
    const int got = gzread(f_.get(), dst, static_cast<unsigned>(std::min<std::size_t>(n, 1u << 30)));
    if (got < 0) {
      int err = 0;
      const char* why = gzerror(f_.get(), &err);
      fail<io_error>("read_idx", text(path_, ": data"), "a readable (gzip or plain) stream", why);
    }
    return static_cast<std::size_t>(got);
  }
  /// Exactly n bytes, or "truncated <what>".
  void read_exact(void* dst, std::size_t n, const char* what) {
    std::size_t done = 0;
    while (done < n) {
      const std::size_t got = read_some(static_cast<char*>(dst) + done, n - done);
      if (got == 0) fail<io_error>("read_idx", text(path_, ": truncated ", what), text(n, " bytes"), done);
      done += got;
    }
  }

 private:
  std::filesystem::path path_;
  std::unique_ptr<gzFile_s, int (*)(gzFile)> f_;
  std::uint64_t bytes_ = 0;
};

inline std::uint32_t big_endian_u32(const unsigned char* b) noexcept {
  return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) | b[3];
}

/// Magic number, element type and rank; returns the rank.
inline int read_idx_magic(IdxFile& f) {
  unsigned char m[4];
  f.read_exact(m, 4, "header");
  const auto& p = f.path();
  require<io_error>(m[0] == 0 && m[1] == 0, "read_idx", text(p, ": bad magic number"), "00 00 <type> <ndim>",
                    text(int(m[0]), " ", int(m[1]), " ", int(m[2]), " ", int(m[3])));
  require<io_error>(m[2] == 0x08, "read_idx", text(p, ": element type"), "0x08 (unsigned byte)", int(m[2]));
  require<io_error>(m[3] >= 1 && m[3] <= 4, "read_idx", text(p, ": rank"), "1..4", int(m[3]));
  return m[3];
}

/// Product of the extents, refused on overflow or when the file cannot hold it.
inline std::uint64_t idx_payload(const IdxFile& f, const std::vector<std::uint32_t>& dims) {
  std::uint64_t n = 1;
  for (std::uint32_t d : dims)
    if (__builtin_mul_overflow(n, std::uint64_t(d), &n))
      fail<io_error>("read_idx", text(f.path(), ": extents"), "a product below 2^64", "an overflowing product");
  const std::uint64_t header = 4 + 4 * dims.size(), bytes = f.file_bytes();
  if (f.plain()) {  // a plain file holds what follows its header
    const std::uint64_t present = bytes - std::min(bytes, header);
    require<io_error>(n <= present, "read_idx", text(f.path(), ": truncated data"), text(n, " bytes"), present);
    return n;
  }
  // A gzipped file holds at most 1032 times its size (file sizes are far below 2^64 / 1032).
  const std::uint64_t cap = bytes * idx_max_ratio;
  require<io_error>(n <= cap && n <= std::uint64_t(PTRDIFF_MAX), "read_idx", text(f.path(), ": extents"),
                    text("at most ", cap, " data bytes (a ", bytes, "-byte gzip file)"), text(n, " bytes declared"));
  return n;
}

/// The payload, read in growing chunks: memory follows the bytes really present.
inline void read_idx_values(IdxFile& f, std::vector<std::uint8_t>& v, std::uint64_t n) {
  std::size_t done = 0;
  while (done < n) {
    const std::size_t target = static_cast<std::size_t>(std::min<std::uint64_t>(n, std::max<std::size_t>(2 * done, 1 << 16)));
    v.resize(target);
    const std::size_t got = f.read_some(v.data() + done, target - done);
    if (got == 0) fail<io_error>("read_idx", text(f.path(), ": truncated data"), text(n, " bytes"), done);
    done += got;
  }
  unsigned char extra;
  require<io_error>(f.read_some(&extra, 1) == 0, "read_idx", text(f.path(), ": trailing data"),
                    text("end of file after the ", n, " data bytes the header declares"), "more bytes");
}
}  // namespace detail

/// Reads an unsigned-byte IDX array. Throws io_error (naming the file) for a
/// missing file or a directory, a bad magic number, another element type, a
/// rank outside 1..4, extents whose product overflows or exceeds what the file
/// can hold, data shorter than the header says, or data after it.
inline IdxArray read_idx(const std::filesystem::path& path) {
  detail::IdxFile f(path);
  const int rank = detail::read_idx_magic(f);
  IdxArray a;
  for (int i = 0; i < rank; ++i) {
    unsigned char b[4];
    f.read_exact(b, 4, "header");
    a.dims.push_back(detail::big_endian_u32(b));
  }
  detail::read_idx_values(f, a.values, detail::idx_payload(f, a.dims));
  return a;
}

}  // namespace lamina::data
