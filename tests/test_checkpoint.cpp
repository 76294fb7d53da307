#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <zlib.h>

#include "lamina/io/checkpoint.hpp"
#include "lamina/models/resnet.hpp"

using namespace lamina;
namespace fs = std::filesystem;

namespace {
fs::path temp_dir() {
  fs::path d = fs::temp_directory_path() / ("lamina_ckpt_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}
template <class M>
std::vector<float> snapshot(M& m) {
  std::vector<float> v;
  visit_parameters(m, [&](const ParamRef<float>& p) { v.insert(v.end(), p.value.data(), p.value.data() + p.value.size()); });
  return v;
}
std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(s.data(), static_cast<std::streamsize>(s.size()));
}
}  // namespace

TEST_CASE("Checkpoint round trip restores every parameter and buffer", "[checkpoint]") {
  const fs::path dir = temp_dir(), file = dir / "net.lck";
  Rng r1(1), r2(2);
  auto a = make_resnet<float>({1, {4, 8, 8}, 1, 10}, r1);
  auto b = make_resnet<float>({1, {4, 8, 8}, 1, 10}, r2);
  // Make the running statistics non-trivial.
  Tensor<float> x(Shape{4, 1, 8, 8}), y(Shape{4, 10});
  Rng rx(3);
  for (float& v : x.span()) v = float(rx.normal());
  a.forward(x.cview(), y.view());
  io::save_checkpoint(a, file);
  REQUIRE(snapshot(a) != snapshot(b));
  io::load_checkpoint(b, file);
  CHECK(snapshot(a) == snapshot(b));
  // No temporary file is left behind.
  index_t files = 0;
  for (auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  CHECK(files == 1);
  // A float checkpoint loads into a double model.
  Rng r3(4);
  auto d = make_resnet<double>({1, {4, 8, 8}, 1, 10}, r3);
  io::load_checkpoint(d, file);
  std::vector<float> dv;
  visit_parameters(d, [&](const ParamRef<double>& p) { for (double v : p.value.span()) dv.push_back(float(v)); });
  CHECK(dv == snapshot(a));
  fs::remove_all(dir);
}

TEST_CASE("Truncated, corrupted and mismatched checkpoints throw and leave the model unchanged", "[checkpoint][errors]") {
  const fs::path dir = temp_dir(), file = dir / "net.lck", bad = dir / "bad.lck";
  Rng r1(1), r2(2);
  auto a = make_resnet<float>({1, {4, 8, 8}, 1, 10}, r1);
  io::save_checkpoint(a, file);
  const std::string bytes = read(file);
  auto b = make_resnet<float>({1, {4, 8, 8}, 1, 10}, r2);
  const std::vector<float> before = snapshot(b);

  SECTION("truncated at many offsets") {
    for (std::size_t cut = 0; cut < bytes.size(); cut += 1 + cut / 7) {
      write(bad, bytes.substr(0, cut));
      INFO("truncated to " << cut << " of " << bytes.size() << " bytes");
      CHECK_THROWS_AS(io::load_checkpoint(b, bad), io_error);
    }
    CHECK(snapshot(b) == before);
  }
  SECTION("one flipped byte anywhere") {
    for (std::size_t at = 0; at < bytes.size(); at += 1 + at / 11) {
      std::string c = bytes;
      c[at] = char(c[at] ^ 0x5a);
      write(bad, c);
      INFO("byte " << at << " flipped");
      CHECK_THROWS_AS(io::load_checkpoint(b, bad), io_error);
    }
    CHECK(snapshot(b) == before);
  }
  SECTION("another model") {
    Rng r3(3);
    auto other = make_resnet<float>({1, {4, 8, 16}, 1, 10}, r3);
    const std::vector<float> obefore = snapshot(other);
    CHECK_THROWS_WITH(io::load_checkpoint(other, file), Catch::Contains("shape of layer3.0.conv1.weight"));
    CHECK(snapshot(other) == obefore);
    Rng r4(4);
    auto deeper = make_resnet<float>({1, {4, 8, 8}, 2, 10}, r4);
    CHECK_THROWS_WITH(io::load_checkpoint(deeper, file), Catch::Contains("missing from the file"));
    io::save_checkpoint(deeper, dir / "deeper.lck");
    CHECK_THROWS_WITH(io::load_checkpoint(b, dir / "deeper.lck"), Catch::Contains("does not have"));
    CHECK(snapshot(b) == before);
  }
  SECTION("missing file and garbage") {
    CHECK_THROWS_WITH(io::load_checkpoint(b, dir / "nope.lck"), Catch::Contains("cannot open"));
    write(bad, "hello world, not a checkpoint");
    CHECK_THROWS_WITH(io::load_checkpoint(b, bad), Catch::Contains("bad magic"));
    CHECK(snapshot(b) == before);
  }
  SECTION("saving into a missing folder fails cleanly") {
    CHECK_THROWS_AS(io::save_checkpoint(a, dir / "no" / "such" / "dir.lck"), io_error);
    CHECK_THROWS_WITH(io::save_checkpoint(a, dir / "no" / "such" / "dir.lck"),
                      Catch::Contains("lamina::save_checkpoint: cannot create") && Catch::Contains("dir.lck"));
  }
  fs::remove_all(dir);
}

TEST_CASE("write_file_atomically replaces the whole file and leaves no temporary behind", "[checkpoint][io]") {
  const fs::path dir = temp_dir() / "atomic";
  fs::create_directories(dir);
  const fs::path file = dir / "records.json";
  io::write_file_atomically(file, "first version, longer than the second");
  io::write_file_atomically(file, "second");
  CHECK(read(file) == "second");
  io::write_file_atomically(file, "");
  CHECK(read(file).empty());
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);  // no *.tmp-* left
  CHECK_THROWS_WITH(io::write_file_atomically(dir / "missing" / "x.json", "x", "lamina::laurel_e1"),
                    Catch::Contains("lamina::laurel_e1: cannot create") && Catch::Contains("missing"));
  fs::remove_all(dir);
}

namespace {
// A checkpoint assembled by hand (valid checksum), to write what save refuses.
struct RawEntry {
  std::string name;
  std::vector<std::uint64_t> dims;
  std::vector<float> values;
};
template <class I>
void put_le(std::string& s, I v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}
std::string raw_checkpoint(const std::vector<RawEntry>& entries, const std::string& tail = {}) {
  std::string s(io::checkpoint_magic, 8);
  put_le<std::uint32_t>(s, io::checkpoint_version);
  put_le<std::uint32_t>(s, 4);
  put_le<std::uint64_t>(s, entries.size());
  for (const RawEntry& e : entries) {
    put_le<std::uint32_t>(s, std::uint32_t(e.name.size()));
    s += e.name;
    put_le<std::uint32_t>(s, std::uint32_t(e.dims.size()));
    for (auto d : e.dims) put_le<std::uint64_t>(s, d);
    s.append(reinterpret_cast<const char*>(e.values.data()), e.values.size() * 4);
  }
  s += tail;
  put_le<std::uint32_t>(s, std::uint32_t(::crc32(0L, reinterpret_cast<const Bytef*>(s.data()), uInt(s.size()))));
  return s;
}
std::size_t open_fds() {
  return std::size_t(std::distance(fs::directory_iterator("/proc/self/fd"), fs::directory_iterator()));
}
}  // namespace

TEST_CASE("Duplicate entry names are refused on save and on load", "[checkpoint][errors]") {
  const fs::path dir = temp_dir() / "dup", file = dir / "dup.lck";
  fs::create_directories(dir);
  Tensor<float> a(Shape{2}, 1.0f), b(Shape{2}, 2.0f), c(Shape{3}, 3.0f);
  const std::vector<ParamRef<float>> twice = {{"w", a.view(), {}}, {"v", c.view(), {}}, {"w", b.view(), {}}};
  CHECK_THROWS_AS(io::save_tensors(file, twice), value_error);
  CHECK_THROWS_WITH(io::save_tensors(file, twice), Catch::Contains("\"w\" twice"));
  CHECK_FALSE(fs::exists(file));
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 0);
  // Loading into a model with two entries of one name.
  io::save_tensors(file, std::vector<ParamRef<float>>{{"w", a.view(), {}}});
  CHECK_THROWS_WITH(io::load_tensors(file, std::vector<ParamRef<float>>{{"w", a.view(), {}}, {"w", b.view(), {}}}),
                    Catch::Contains("\"w\" twice"));
  CHECK(b[0] == 2.0f);
  // A file holding one name twice (first and last copies differ): refused, model unchanged.
  for (const auto& entries : {std::vector<RawEntry>{{"w", {2}, {5, 5}}, {"w", {2}, {6, 6}}},
                              std::vector<RawEntry>{{"w", {2}, {5, 5}}, {"v", {3}, {0, 0, 0}}, {"w", {2}, {6, 6}}}}) {
    write(file, raw_checkpoint(entries));
    CHECK_THROWS_AS(io::load_tensors(file, std::vector<ParamRef<float>>{{"w", a.view(), {}}, {"v", c.view(), {}}}),
                    io_error);
    CHECK_THROWS_WITH(io::load_tensors(file, std::vector<ParamRef<float>>{{"w", a.view(), {}}}),
                      Catch::Contains("a second \"w\""));
    CHECK(a[0] == 1.0f);
    CHECK(c[0] == 3.0f);
  }
  fs::remove_all(dir);
}

TEST_CASE("Checkpoint paths that are not regular files give io_error", "[checkpoint][errors]") {
  const fs::path dir = temp_dir() / "notfile";
  fs::create_directories(dir / "sub");
  Tensor<float> a(Shape{2}, 1.0f);
  const std::vector<ParamRef<float>> one = {{"w", a.view(), {}}};
  for (const fs::path& p : {dir, dir / "sub", fs::path("/dev/null"), dir / "missing.lck"}) {
    INFO(p);
    CHECK_THROWS_AS(io::load_tensors(p, one), io_error);
  }
  CHECK_THROWS_WITH(io::load_tensors(dir / "sub", one), Catch::Contains("a regular file"));
  CHECK_THROWS_AS(io::save_tensors(dir / "sub", one), io_error);  // rename onto a directory
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
  fs::remove_all(dir);
}

TEST_CASE("A failed write, fsync or close leaks no descriptor and leaves the target unchanged", "[checkpoint][io]") {
  const fs::path dir = temp_dir() / "fail";
  fs::create_directories(dir);
  const fs::path file = dir / "x.lck";
  io::write_file_atomically(file, "old");
  auto& calls = io::detail::file_calls();
  const io::detail::FileCalls real = calls;
  SECTION("write fails") {
    calls.write = [](int, const void*, std::size_t) -> ssize_t { errno = ENOSPC; return -1; };
  }
  SECTION("write makes no progress") {
    calls.write = [](int, const void*, std::size_t) -> ssize_t { return 0; };
  }
  SECTION("fsync fails") {
    calls.fsync = [](int) { errno = EIO; return -1; };
  }
  SECTION("close fails (after closing)") {
    calls.close = [](int fd) { ::close(fd); errno = EIO; return -1; };
  }
  const std::size_t before = open_fds();
  CHECK_THROWS_AS(io::write_file_atomically(file, "new content"), io_error);
  calls = real;
  CHECK(open_fds() == before);
  CHECK(read(file) == "old");
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
  io::write_file_atomically(file, "new");
  CHECK(read(file) == "new");
  fs::remove_all(dir);
}

TEST_CASE("A checkpoint of zero tensors round-trips", "[checkpoint]") {
  const fs::path dir = temp_dir() / "zero", file = dir / "empty.lck";
  fs::create_directories(dir);
  io::save_tensors(file, std::vector<ParamRef<double>>{});
  CHECK(fs::file_size(file) == io::detail::checkpoint_min_bytes);
  CHECK_NOTHROW(io::load_tensors(file, std::vector<ParamRef<double>>{}));
  CHECK_NOTHROW(io::load_tensors(file, std::vector<ParamRef<float>>{}));
  Tensor<float> a(Shape{2}, 1.0f);
  CHECK_THROWS_WITH(io::load_tensors(file, std::vector<ParamRef<float>>{{"w", a.view(), {}}}),
                    Catch::Contains("missing from the file"));
  // A zero-element tensor also round-trips.
  Tensor<float> e(Shape{0, 3});
  io::save_tensors(file, std::vector<ParamRef<float>>{{"e", e.view(), {}}});
  CHECK_NOTHROW(io::load_tensors(file, std::vector<ParamRef<float>>{{"e", e.view(), {}}}));
  fs::remove_all(dir);
}

TEST_CASE("Short files with the right magic are truncated; others are bad magic", "[checkpoint][errors]") {
  const fs::path dir = temp_dir() / "short", file = dir / "s.lck";
  fs::create_directories(dir);
  Tensor<float> a(Shape{2}, 1.0f);
  const std::vector<ParamRef<float>> one = {{"w", a.view(), {}}};
  io::save_tensors(file, one);
  const std::string good = read(file);
  for (std::size_t cut = 0; cut < good.size(); ++cut) {
    INFO("first " << cut << " bytes");
    write(file, good.substr(0, cut));
    CHECK_THROWS_WITH(io::load_tensors(file, one), Catch::Contains("truncated") && !Catch::Contains("bad magic"));
  }
  for (const std::string& other : {std::string("LAMINACX"), std::string("X"), std::string("lamina checkpoint file.....")}) {
    write(file, other);
    CHECK_THROWS_WITH(io::load_tensors(file, one), Catch::Contains("bad magic"));
  }
  CHECK(a[0] == 1.0f);
  fs::remove_all(dir);
}

TEST_CASE("Overflowing extents and trailing bytes in a checksummed file are refused", "[checkpoint][errors]") {
  const fs::path dir = temp_dir() / "ext", file = dir / "e.lck";
  fs::create_directories(dir);
  Tensor<float> a(Shape{2}, 1.0f);
  const std::vector<ParamRef<float>> one = {{"w", a.view(), {}}};
  const std::uint64_t t40 = std::uint64_t(1) << 40, t62 = std::uint64_t(1) << 62;
  for (const auto& dims : {std::vector<std::uint64_t>{t40, t40}, std::vector<std::uint64_t>{t62},
                           std::vector<std::uint64_t>{~std::uint64_t(0)}, std::vector<std::uint64_t>{4, t62, 2}}) {
    write(file, raw_checkpoint({{"w", dims, {}}}));
    CHECK_THROWS_WITH(io::load_tensors(file, one), Catch::Contains("overflowing"));
  }
  for (const auto& dims : {std::vector<std::uint64_t>{t40}, std::vector<std::uint64_t>{3}}) {
    write(file, raw_checkpoint({{"w", dims, {1, 2}}}));
    CHECK_THROWS_WITH(io::load_tensors(file, one), Catch::Contains("truncated while reading values"));
  }
  write(file, raw_checkpoint({{"w", {2}, {7, 8}}}, "xyz"));
  CHECK_THROWS_WITH(io::load_tensors(file, one), Catch::Contains("trailing bytes"));
  write(file, raw_checkpoint({{"w", {2}, {7, 8}}}));
  io::load_tensors(file, one);
  CHECK((a[0] == 7.0f && a[1] == 8.0f));
  fs::remove_all(dir);
}
