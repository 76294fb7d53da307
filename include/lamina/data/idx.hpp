#pragma once
// IDX files (the MNIST / Fashion-MNIST format), gzipped or plain, read with
// zlib's gz* interface (which passes uncompressed files through unchanged).
// Header: 0x00 0x00 <type> <ndim>, then ndim big-endian u32 extents, then data.
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "lamina/core/error.hpp"

namespace lamina::data {

struct IdxArray {
  std::vector<std::uint32_t> dims;
  std::vector<std::uint8_t> values;  ///< unsigned bytes (type 0x08), row-major
};

/// Reads an unsigned-byte IDX array. Throws io_error for a missing file, a bad
/// magic number, another element type, or data shorter than the header says.
inline IdxArray read_idx(const std::filesystem::path& path) {
  const std::string where = "lamina::read_idx: " + path.string();
  if (!std::filesystem::exists(path)) throw io_error(where + ": file not found");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> f(gzopen(path.c_str(), "rb"), &gzclose);
  if (!f) throw io_error(where + ": cannot open");
  auto read_exact = [&](void* dst, std::size_t n, const char* what) {
    std::size_t done = 0;
    while (done < n) {
      const int got = gzread(f.get(), static_cast<char*>(dst) + done, static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30)));
      if (got < 0) {
        int err = 0;
        throw io_error(where + ": read error (" + gzerror(f.get(), &err) + ")");
      }
      if (got == 0)
        throw io_error(detail::concat(where, ": truncated ", what, ": expected ", n, " bytes, got ", done));
      done += static_cast<std::size_t>(got);
    }
  };
  unsigned char magic[4];
  read_exact(magic, 4, "header");
  if (magic[0] != 0 || magic[1] != 0)
    throw io_error(detail::concat(where, ": bad magic number: expected 00 00 <type> <ndim>, got ", int(magic[0]), " ",
                                  int(magic[1]), " ", int(magic[2]), " ", int(magic[3])));
  if (magic[2] != 0x08) throw io_error(detail::concat(where, ": element type: expected 0x08 (unsigned byte), got ", int(magic[2])));
  if (magic[3] < 1 || magic[3] > 4) throw io_error(detail::concat(where, ": rank: expected 1..4, got ", int(magic[3])));
  IdxArray a;
  std::uint64_t n = 1;
  for (int i = 0; i < magic[3]; ++i) {
    unsigned char b[4];
    read_exact(b, 4, "header");
    const std::uint32_t d = (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) | b[3];
    a.dims.push_back(d);
    n *= d;
  }
  if (n > (std::uint64_t(1) << 34)) throw io_error(where + ": implausible size in header");
  a.values.resize(static_cast<std::size_t>(n));
  read_exact(a.values.data(), a.values.size(), "data");
  return a;
}

}  // namespace lamina::data
