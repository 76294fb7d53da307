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

#include <algorithm>
#include <array>
#include <bit>
#include <climits>
#include <cstdint>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string_view>
#include <system_error>
#include <utility>
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
  /// Reads `buf` (the file without its checksum).
  Reader(std::string_view buf, std::string path) : b_(buf), path_(std::move(path)) {}
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
    const std::size_t at = pos_, size = b_.size();
    require<io_error>(n <= size - at, "load_checkpoint", lamina::detail::text(path_, ": truncated while reading ", what),
                      lamina::detail::text(n, " more bytes at byte ", at), lamina::detail::text(size - at, " left of ", size));
  }
  std::string_view b_;
  std::string path_;
  std::size_t pos_ = 0;
};

}  // namespace detail

namespace detail {
using lamina::detail::text;

/// The smallest checkpoint: magic, version, scalar, count (zero entries), crc.
inline constexpr std::size_t checkpoint_min_bytes = sizeof checkpoint_magic + 4 + 4 + 8 + 4;

inline std::uint32_t crc32_of(const char* p, std::size_t n) noexcept {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  for (std::size_t done = 0; done < n;) {
    const std::size_t k = std::min<std::size_t>(n - done, 1u << 30);
    crc = ::crc32(crc, reinterpret_cast<const Bytef*>(p + done), static_cast<uInt>(k));
    done += k;
  }
  return static_cast<std::uint32_t>(crc);
}

/// Model entries must have distinct names: two modules saved under one name
/// would load each other's weights.
template <class T>
void require_unique_names(const std::vector<ParamRef<T>>& entries, std::string_view who) {
  std::set<std::string_view> seen;
  for (const ParamRef<T>& e : entries)
    require(seen.insert(e.name).second, who, "entry names", "distinct names",
            text("\"", e.name, "\" twice (give the modules distinct prefixes)"));
}

/// The whole file; io_error for a missing path, a directory or a read error.
inline std::string read_checkpoint_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  require<io_error>(std::filesystem::exists(st), "load_checkpoint", path, "an existing file",
                    text("cannot open (", std::strerror(ENOENT), ")"));
  require<io_error>(std::filesystem::is_regular_file(st), "load_checkpoint", path, "a regular file",
                    "a directory or special file");
  std::ifstream in(path, std::ios::binary);
  require<io_error>(bool(in), "load_checkpoint", path, "a readable file", text("cannot open (", std::strerror(errno), ")"));
  std::string buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  require<io_error>(!in.bad(), "load_checkpoint", path, "a readable file", "a read error");
  return buf;
}

/// Magic number first (a short file with the right start is "truncated"),
/// then the minimum size.
inline void check_checkpoint_start(const std::string& buf, const std::filesystem::path& path) {
  const std::size_t m = std::min(buf.size(), sizeof checkpoint_magic);
  require<io_error>(std::memcmp(buf.data(), checkpoint_magic, m) == 0, "load_checkpoint", path,
                    "a lamina checkpoint", "another file (bad magic number)");
  require<io_error>(buf.size() >= checkpoint_min_bytes, "load_checkpoint", text(path, ": truncated header"),
                    text(">= ", checkpoint_min_bytes, " bytes"), buf.size());
}

struct StoredTensor {
  Shape shape;
  const char* data;
};

/// One entry: name, rank, extents (overflow-checked), values.
inline std::pair<std::string, StoredTensor> read_entry(Reader& r, std::uint32_t scalar, const std::filesystem::path& path) {
  const auto len = r.get<std::uint32_t>("name length");
  std::string name(r.take(len, "name"), len);
  const auto rank = r.get<std::uint32_t>("rank");
  require<io_error>(rank <= std::uint32_t(max_rank), "load_checkpoint", text(path, ": rank of ", name),
                    text("<= ", max_rank), rank);
  std::array<index_t, max_rank> d{};
  std::uint64_t bytes = scalar;
  for (std::uint32_t i = 0; i < rank; ++i) {
    const auto e = r.get<std::uint64_t>("extent");
    const bool ok = e <= std::uint64_t(PTRDIFF_MAX) && !__builtin_mul_overflow(bytes, e, &bytes);
    require<io_error>(ok, "load_checkpoint", text(path, ": extents of ", name), "a size below 2^64 bytes",
                      "an overflowing size");
    d[i] = static_cast<index_t>(e);
  }
  const char* data = r.take(static_cast<std::size_t>(std::min<std::uint64_t>(bytes, SIZE_MAX)), "values");
  return {std::move(name), StoredTensor{Shape::from(d.begin(), d.begin() + rank), data}};
}

/// Every entry of a checked buffer; io_error for a duplicate name or trailing bytes.
inline std::map<std::string, StoredTensor> read_entries(Reader& r, std::uint32_t scalar, std::size_t size,
                                                       const std::filesystem::path& path) {
  const auto count = r.get<std::uint64_t>("entry count");
  std::map<std::string, StoredTensor> stored;
  for (std::uint64_t k = 0; k < count; ++k) {
    auto entry = read_entry(r, scalar, path);
    const auto [it, fresh] = stored.emplace(std::move(entry));
    require<io_error>(fresh, "load_checkpoint", text(path, ": entry ", k), "a name not used before",
                      text("a second \"", it->first, "\""));
  }
  require<io_error>(r.pos() + 4 == size, "load_checkpoint", text(path, ": size"),
                    text(r.pos() + 4, " bytes (entries and checksum)"), text(size, " bytes (trailing bytes after the last entry)"));
  return stored;
}

/// The model's entries against the file's: same names, same shapes.
template <class T>
void check_entries(const std::vector<ParamRef<T>>& entries, const std::map<std::string, StoredTensor>& stored,
                   const std::filesystem::path& path) {
  for (const ParamRef<T>& e : entries) {
    auto it = stored.find(e.name);
    require<io_error>(it != stored.end(), "load_checkpoint", text(path, ": model parameter ", e.name),
                      "present in the file", "missing from the file");
    require<io_error>(it->second.shape == e.value.shape(), "load_checkpoint", text(path, ": shape of ", e.name),
                      e.value.shape(), it->second.shape);
    require_contiguous(e.value, "load_checkpoint", e.name);
  }
  if (stored.size() == entries.size()) return;
  for (const auto& [name, s] : stored) {
    bool known = false;
    for (const ParamRef<T>& e : entries) known = known || e.name == name;
    require<io_error>(known, "load_checkpoint", text(path, ": file entry ", name), "a parameter of the model",
                      "a name the model does not have");
  }
}

template <class T>
void copy_values(const ParamRef<T>& e, const char* src, std::uint32_t scalar) noexcept {
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
}  // namespace detail

/// Saves named tensors (values only; gradients are not state). Names must be
/// distinct (value_error otherwise, and nothing is written).
template <class T>
void save_tensors(const std::filesystem::path& path, const std::vector<ParamRef<T>>& entries) {
  detail::require_unique_names(entries, "save_checkpoint");
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
  detail::put<std::uint32_t>(out, detail::crc32_of(out.data(), out.size()));
  write_file_atomically(path, out, "lamina::save_checkpoint");
}

/// Loads a file written by save_tensors into `entries` (same names, same
/// shapes, any stored scalar type). All-or-nothing: every check (file type,
/// size, magic, version, checksum, scalar size, extents, duplicate or unknown
/// names, shapes) runs before the first value is written.
template <class T>
void load_tensors(const std::filesystem::path& path, const std::vector<ParamRef<T>>& entries) {
  using detail::text;
  detail::require_unique_names(entries, "load_checkpoint");
  const std::string buf = detail::read_checkpoint_file(path);
  detail::check_checkpoint_start(buf, path);
  std::uint32_t stored_crc;
  std::memcpy(&stored_crc, buf.data() + buf.size() - 4, 4);
  const std::uint32_t crc = detail::crc32_of(buf.data(), buf.size() - 4);

  detail::Reader r(std::string_view(buf).substr(0, buf.size() - 4), path.string());
  r.take(sizeof checkpoint_magic, "magic");
  const auto version = r.get<std::uint32_t>("version");
  require<io_error>(version == checkpoint_version, "load_checkpoint", text(path, ": version"), checkpoint_version,
                    version);
  require<io_error>(crc == stored_crc, "load_checkpoint", text(path, ": checksum (file corrupted or truncated)"),
                    text("stored ", stored_crc), text("computed ", crc));
  const auto scalar = r.get<std::uint32_t>("scalar size");
  require<io_error>(scalar == 4 || scalar == 8, "load_checkpoint", text(path, ": scalar size"), "4 or 8", scalar);
  const auto stored = detail::read_entries(r, scalar, buf.size(), path);
  detail::check_entries(entries, stored, path);
  for (const ParamRef<T>& e : entries) detail::copy_values(e, stored.at(e.name).data, scalar);
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
