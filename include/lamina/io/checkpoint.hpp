#pragma once
// Checkpoints (spec/conventions.md "Errors and bad input"): a versioned binary
// file of named tensors with a CRC-32 (zlib) over everything before it.
//
//   "LAMINACK" | u32 version | u32 scalar (4 = float32, 8 = float64) | u64 count
//   count × { u32 name length | name | u32 rank | u64 extents[rank] | values }
//   u32 crc32
// Integers and values little-endian. Saving writes a temporary file in the same
// folder, fsyncs it and renames it over the target, so a crash never leaves a
// half-written checkpoint. Loading checks everything (size, magic, version,
// checksum, names, shapes) before it writes a single value: on any error the
// model is unchanged.
#include <zlib.h>

#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "lamina/core/module.hpp"
#include "lamina/io/atomic_file.hpp"

namespace lamina::io {

static_assert(std::endian::native == std::endian::little, "lamina checkpoints assume a little-endian host");

inline constexpr char checkpoint_magic[8] = {'L', 'A', 'M', 'I', 'N', 'A', 'C', 'K'};
inline constexpr std::uint32_t checkpoint_version = 1;

namespace detail {
template <class I>
void put(std::string& out, I v) {
  char b[sizeof(I)];
  std::memcpy(b, &v, sizeof(I));
  out.append(b, sizeof(I));
}

class Reader {
 public:
  Reader(const std::string& buf, std::string path) : b_(buf), path_(std::move(path)) {}
  template <class I>
  I get(const char* what) {
    need(sizeof(I), what);
    I v;
    std::memcpy(&v, b_.data() + pos_, sizeof(I));
    pos_ += sizeof(I);
    return v;
  }
  const char* take(std::size_t n, const char* what) {
    need(n, what);
    const char* p = b_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::size_t pos() const noexcept { return pos_; }

 private:
  void need(std::size_t n, const char* what) {
    if (n > b_.size() - pos_)
      throw io_error(lamina::detail::concat("lamina::load_checkpoint: ", path_, ": truncated while reading ", what,
                                            " at byte ", pos_, " of ", b_.size()));
  }
  const std::string& b_;
  std::string path_;
  std::size_t pos_ = 0;
};

}  // namespace detail

/// Saves named tensors (values only; gradients are not state).
template <class T>
void save_tensors(const std::filesystem::path& path, const std::vector<ParamRef<T>>& entries) {
  std::string out(checkpoint_magic, sizeof checkpoint_magic);
  detail::put<std::uint32_t>(out, checkpoint_version);
  detail::put<std::uint32_t>(out, sizeof(T));
  detail::put<std::uint64_t>(out, entries.size());
  for (const ParamRef<T>& e : entries) {
    require_contiguous(e.value, "save_checkpoint", e.name);
    detail::put<std::uint32_t>(out, static_cast<std::uint32_t>(e.name.size()));
    out += e.name;
    detail::put<std::uint32_t>(out, static_cast<std::uint32_t>(e.value.rank()));
    for (int i = 0; i < e.value.rank(); ++i) detail::put<std::uint64_t>(out, static_cast<std::uint64_t>(e.value.dim(i)));
    out.append(reinterpret_cast<const char*>(e.value.data()), static_cast<std::size_t>(e.value.size()) * sizeof(T));
  }
  const auto crc = static_cast<std::uint32_t>(::crc32(0L, reinterpret_cast<const Bytef*>(out.data()), static_cast<uInt>(out.size())));
  detail::put<std::uint32_t>(out, crc);
  write_file_atomically(path, out, "lamina::save_checkpoint");
}

/// Loads a file written by save_tensors into `entries` (same names, same
/// shapes, any stored scalar type). All-or-nothing.
template <class T>
void load_tensors(const std::filesystem::path& path, const std::vector<ParamRef<T>>& entries) {
  const std::string where = "lamina::load_checkpoint: " + path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(where + ": cannot open (" + std::strerror(errno) + ")");
  const std::string buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (buf.size() < sizeof checkpoint_magic + 4 || std::memcmp(buf.data(), checkpoint_magic, sizeof checkpoint_magic) != 0)
    throw io_error(where + ": not a lamina checkpoint (bad magic number)");
  if (buf.size() < sizeof checkpoint_magic + 24) throw io_error(where + ": truncated header");
  std::uint32_t stored_crc;
  std::memcpy(&stored_crc, buf.data() + buf.size() - 4, 4);
  const auto crc = static_cast<std::uint32_t>(::crc32(0L, reinterpret_cast<const Bytef*>(buf.data()), static_cast<uInt>(buf.size() - 4)));

  detail::Reader r(buf, path.string());
  r.take(sizeof checkpoint_magic, "magic");
  const auto version = r.get<std::uint32_t>("version");
  if (version != checkpoint_version)
    throw io_error(lamina::detail::concat(where, ": version: expected ", checkpoint_version, ", got ", version));
  if (crc != stored_crc)
    throw io_error(lamina::detail::concat(where, ": checksum mismatch (file corrupted or truncated): stored ", stored_crc,
                                          ", computed ", crc));
  const auto scalar = r.get<std::uint32_t>("scalar size");
  if (scalar != 4 && scalar != 8)
    throw io_error(lamina::detail::concat(where, ": scalar size: expected 4 or 8, got ", scalar));
  const auto count = r.get<std::uint64_t>("entry count");

  struct Stored {
    Shape shape;
    const char* data;
  };
  std::map<std::string, Stored> stored;
  for (std::uint64_t k = 0; k < count; ++k) {
    const auto len = r.get<std::uint32_t>("name length");
    std::string name(r.take(len, "name"), len);
    const auto rank = r.get<std::uint32_t>("rank");
    if (rank > max_rank) throw io_error(lamina::detail::concat(where, ": rank of ", name, ": expected <= 4, got ", rank));
    std::array<index_t, max_rank> d{};
    std::uint64_t n = 1;
    for (std::uint32_t i = 0; i < rank; ++i) {
      const auto e = r.get<std::uint64_t>("extent");
      if (e > (std::uint64_t(1) << 40)) throw io_error(where + ": implausible extent in " + name);
      d[i] = static_cast<index_t>(e);
      n *= e;
    }
    const char* data = r.take(static_cast<std::size_t>(n) * scalar, "values");
    stored[name] = Stored{Shape::from(d.begin(), d.begin() + rank), data};
  }
  if (r.pos() + 4 != buf.size()) throw io_error(where + ": trailing bytes after the last entry");

  // Validate everything before writing anything.
  for (const ParamRef<T>& e : entries) {
    auto it = stored.find(e.name);
    if (it == stored.end()) throw io_error(where + ": model parameter " + e.name + " is missing from the file");
    if (!(it->second.shape == e.value.shape()))
      throw io_error(lamina::detail::concat(where, ": shape of ", e.name, ": expected ", e.value.shape(), ", got ",
                                            it->second.shape));
    require_contiguous(e.value, "load_checkpoint", e.name);
  }
  if (stored.size() != entries.size())
    for (const auto& [name, s] : stored) {
      bool known = false;
      for (const ParamRef<T>& e : entries) known = known || e.name == name;
      if (!known) throw io_error(where + ": file has " + name + ", which the model does not have");
    }
  for (const ParamRef<T>& e : entries) {
    const char* src = stored.at(e.name).data;
    T* dst = e.value.data();
    for (index_t i = 0; i < e.value.size(); ++i) {
      if (scalar == 4) {
        float v;
        std::memcpy(&v, src + i * 4, 4);
        dst[i] = T(v);
      } else {
        double v;
        std::memcpy(&v, src + i * 8, 8);
        dst[i] = T(v);
      }
    }
  }
}

/// Every parameter and buffer of a module (names from its visitor).
template <Module M>
std::vector<ParamRef<typename M::value_type>> state_of(M& model) {
  std::vector<ParamRef<typename M::value_type>> s;
  visit_parameters(model, [&](const ParamRef<typename M::value_type>& p) { s.push_back(p); });
  return s;
}

template <Module M>
void save_checkpoint(M& model, const std::filesystem::path& path) {
  save_tensors(path, state_of(model));
}
template <Module M>
void load_checkpoint(M& model, const std::filesystem::path& path) {
  load_tensors(path, state_of(model));
}

}  // namespace lamina::io
