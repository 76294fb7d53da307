#include <catch2/catch.hpp>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "lamina/data/dataset.hpp"

using namespace lamina;
namespace fs = std::filesystem;

namespace {
struct TempDir {
  fs::path path = fs::temp_directory_path() / ("lamina_data_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};
std::string idx_bytes(std::vector<std::uint32_t> dims, const std::vector<std::uint8_t>& values) {
  std::string s{'\0', '\0', '\x08', char(dims.size())};
  for (auto d : dims) {
    s += char(d >> 24);
    s += char(d >> 16);
    s += char(d >> 8);
    s += char(d);
  }
  s.append(values.begin(), values.end());
  return s;
}
void write_gz(const fs::path& p, const std::string& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  REQUIRE(f);
  gzwrite(f, bytes.data(), unsigned(bytes.size()));
  gzclose(f);
}
// n images of 4x5 whose pixels encode (sample, position); labels = sample % 3.
void write_set(const fs::path& dir, std::uint32_t n) {
  std::vector<std::uint8_t> im, lb;
  for (std::uint32_t i = 0; i < n; ++i) {
    for (std::uint32_t k = 0; k < 20; ++k) im.push_back(std::uint8_t(10 * i + k));
    lb.push_back(std::uint8_t(i % 3));
  }
  write_gz(dir / "train-images-idx3-ubyte.gz", idx_bytes({n, 4, 5}, im));
  write_gz(dir / "train-labels-idx1-ubyte.gz", idx_bytes({n}, lb));
}
}  // namespace

TEST_CASE("IDX files load through zlib, gzipped or plain", "[data]") {
  TempDir t;
  write_set(t.path, 6);
  const data::Dataset d = data::load_fashion_mnist(t.path, "train");
  REQUIRE(d.size() == 6);
  CHECK(d.images.shape() == Shape{6, 1, 4, 5});
  CHECK(d.images[20 * 2 + 3] == Approx((10 * 2 + 3) / 255.0f));
  CHECK(d.labels[4] == 1);
  CHECK(data::load_fashion_mnist(t.path, "train", 4).size() == 4);
  // Plain (not gzipped) IDX reads the same.
  const auto raw = idx_bytes({3}, {1, 2, 3});
  std::ofstream(t.path / "plain.idx", std::ios::binary).write(raw.data(), std::streamsize(raw.size()));
  CHECK(data::read_idx(t.path / "plain.idx").values == std::vector<std::uint8_t>{1, 2, 3});
}

TEST_CASE("IDX reader errors: missing file, bad magic, truncated data, mismatches", "[data][errors]") {
  TempDir t;
  CHECK_THROWS_WITH(data::read_idx(t.path / "nope.gz"), Catch::Contains("file not found"));
  write_gz(t.path / "magic.gz", std::string("\x01\x02\x08\x01\0\0\0\x01x", 9));
  CHECK_THROWS_WITH(data::read_idx(t.path / "magic.gz"), Catch::Contains("bad magic number"));
  write_gz(t.path / "type.gz", std::string("\0\0\x0d\x01\0\0\0\x01xxxx", 12));
  CHECK_THROWS_WITH(data::read_idx(t.path / "type.gz"), Catch::Contains("element type"));
  auto full = idx_bytes({4, 2, 2}, std::vector<std::uint8_t>(16, 7));
  write_gz(t.path / "short.gz", full.substr(0, full.size() - 3));
  CHECK_THROWS_WITH(data::read_idx(t.path / "short.gz"), Catch::Contains("truncated data: expected 16 bytes, got 13"));
  write_gz(t.path / "hdr.gz", full.substr(0, 6));
  CHECK_THROWS_WITH(data::read_idx(t.path / "hdr.gz"), Catch::Contains("truncated header"));
  write_gz(t.path / "im.gz", full);
  write_gz(t.path / "lb.gz", idx_bytes({3}, {0, 1, 2}));
  CHECK_THROWS_WITH(data::load_idx_pair(t.path / "im.gz", t.path / "lb.gz", 10), Catch::Contains("sample count"));
  write_gz(t.path / "lb4.gz", idx_bytes({4}, {0, 1, 12, 2}));
  CHECK_THROWS_WITH(data::load_idx_pair(t.path / "im.gz", t.path / "lb4.gz", 10), Catch::Contains("label 2"));
  CHECK_THROWS_WITH(data::load_fashion_mnist(t.path, "valid"), Catch::Contains("split"));
}

TEST_CASE("Loader batches, shuffles reproducibly, normalises and augments", "[data]") {
  TempDir t;
  write_set(t.path, 10);
  const data::Dataset d = data::load_fashion_mnist(t.path, "train");
  const data::Normalization norm = data::statistics(d);
  CHECK(norm.stddev > 0);

  data::Loader<float> plain(d, 4, {0.5f, 0.25f});
  CHECK(plain.batches() == 3);
  Tensor<float> x;
  std::vector<std::int32_t> y;
  plain.batch(2, x, y);
  CHECK(x.shape() == Shape{2, 1, 4, 5});  // the last, partial batch
  CHECK(y == std::vector<std::int32_t>{8 % 3, 9 % 3});
  CHECK(x[0] == Approx(((10 * 8) / 255.0f - 0.5f) / 0.25f));
  CHECK_THROWS_AS(plain.batch(3, x, y), value_error);

  auto epoch_labels = [&](data::Loader<float>& l) {
    std::vector<std::int32_t> all, part;
    std::multiset<float> firsts;
    l.start_epoch();
    for (index_t b = 0; b < l.batches(); ++b) {
      l.batch(b, x, part);
      all.insert(all.end(), part.begin(), part.end());
    }
    return all;
  };
  data::Loader<float> s1(d, 3, norm, true, {}, 42), s2(d, 3, norm, true, {}, 42);
  const auto a = epoch_labels(s1), b = epoch_labels(s2), c = epoch_labels(s1);
  CHECK(a == b);                  // same seed, same order
  CHECK(a.size() == 10);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  CHECK(std::count(sorted.begin(), sorted.end(), 0) == 4);  // a permutation
  CHECK(a != c);                  // a new order each epoch (10! orders)

  // Augmentation: values come from the image or the zero padding only.
  data::Loader<double> aug(d, 10, {0.0f, 1.0f}, false, {2, true}, 7);
  Tensor<double> xa;
  aug.batch(0, xa, y);
  for (index_t k = 0; k < 10; ++k) {
    std::set<double> src;
    for (int q = 0; q < 20; ++q) src.insert(double(float(10 * k + q) / 255.0f));
    for (index_t i = 0; i < 20; ++i) {
      const double v = xa[k * 20 + i];
      CHECK((v == 0.0 || src.count(v) == 1));
    }
  }
  CHECK_THROWS_WITH(data::Loader<float>(d, 0, norm), Catch::Contains("batch_size"));
}

namespace {
void write_raw(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}
// Both encodings of the same bytes, so every case runs plain and gzipped.
std::vector<fs::path> write_both(const fs::path& dir, const std::string& name, const std::string& bytes) {
  write_raw(dir / (name + ".idx"), bytes);
  write_gz(dir / (name + ".gz"), bytes);
  return {dir / (name + ".idx"), dir / (name + ".gz")};
}
std::string header_only(std::vector<std::uint32_t> dims) { return idx_bytes(std::move(dims), {}); }
}  // namespace

TEST_CASE("IDX extents that overflow or exceed the file are refused before any allocation", "[data][errors]") {
  TempDir t;
  const std::uint32_t big = 1u << 31;
  const std::vector<std::vector<std::uint32_t>> overflowing = {
      {65536, 65536, 65536, 65536}, {4, big, big}, {big, big, big, big}, {0xffffffffu, 0xffffffffu, 3}};
  for (std::size_t i = 0; i < overflowing.size(); ++i)
    for (const auto& p : write_both(t.path, "ovf" + std::to_string(i), header_only(overflowing[i]) + "xxxx")) {
      INFO(p);
      CHECK_THROWS_AS(data::read_idx(p), io_error);
      CHECK_THROWS_WITH(data::read_idx(p), Catch::Contains("extents") && Catch::Contains("overflowing") &&
                                               Catch::Contains(p.filename().string()));
    }
  // Large but representable sizes in a 12-byte (or small gzipped) file: refused by size, not std::bad_alloc.
  const std::vector<std::vector<std::uint32_t>> huge = {{big}, {60000, 28, 28}, {1u << 16, 1u << 16}, {2, 3, big}};
  for (std::size_t i = 0; i < huge.size(); ++i)
    for (const auto& p : write_both(t.path, "huge" + std::to_string(i), header_only(huge[i]))) {
      INFO(p);
      // Plain: the bytes after the header are known; gzip: at most 1032 per byte of the file.
      const std::string what = p.extension() == ".gz" ? "bytes declared" : "truncated data";
      CHECK_THROWS_WITH(data::read_idx(p), Catch::Contains(what) && Catch::Contains(p.filename().string()));
    }
  // A product of zero is an empty array, whatever the other extents.
  for (const auto& p : write_both(t.path, "zero", header_only({0, big, big}))) {
    const auto a = data::read_idx(p);
    CHECK(a.values.empty());
    CHECK(a.dims == std::vector<std::uint32_t>{0, big, big});
  }
}

TEST_CASE("IDX data shorter or longer than the header says is an error naming the file", "[data][errors]") {
  TempDir t;
  const auto full = idx_bytes({4, 2, 2}, std::vector<std::uint8_t>(16, 7));
  for (std::size_t cut : {1u, 15u, 16u})
    for (const auto& p : write_both(t.path, "cut" + std::to_string(cut), full.substr(0, full.size() - cut)))
      CHECK_THROWS_WITH(data::read_idx(p), Catch::Contains(p.filename().string()) &&
                                               Catch::Contains("truncated data: expected 16 bytes, got " +
                                                               std::to_string(16 - cut)));
  // Trailing data: one byte or a whole second array after the payload.
  for (const std::string& extra : {std::string("x"), full})
    for (const auto& p : write_both(t.path, "trail" + std::to_string(extra.size()), full + extra))
      CHECK_THROWS_WITH(data::read_idx(p), Catch::Contains("trailing data") && Catch::Contains(p.filename().string()));
  // The exact size reads.
  for (const auto& p : write_both(t.path, "exact", full)) CHECK(data::read_idx(p).values.size() == 16);
  // Rank 0 and rank 5 are refused.
  for (const auto& p : write_both(t.path, "rank0", std::string("\0\0\x08\0", 4)))
    CHECK_THROWS_WITH(data::read_idx(p), Catch::Contains("rank"));
  for (const auto& p : write_both(t.path, "rank5", header_only({1, 1, 1, 1, 1}) + "x"))
    CHECK_THROWS_WITH(data::read_idx(p), Catch::Contains("rank"));
}

TEST_CASE("A gzipped IDX that compresses well is read in chunks and still checked", "[data][errors]") {
  TempDir t;
  const std::uint32_t n = 6u << 20;  // 6 MiB of zeros compress about 1000:1
  const std::string data(n, '\0');
  write_gz(t.path / "z.gz", header_only({n + 4096}) + data);  // the cap lets it through; the data is short
  CHECK_THROWS_WITH(data::read_idx(t.path / "z.gz"),
                    Catch::Contains("truncated data: expected " + std::to_string(n + 4096) + " bytes, got " +
                                    std::to_string(n)));
  write_gz(t.path / "ok.gz", header_only({n}) + data);
  CHECK(data::read_idx(t.path / "ok.gz").values.size() == n);
}

TEST_CASE("IDX paths that are not regular files and corrupt gzip streams give io_error", "[data][errors]") {
  TempDir t;
  CHECK_THROWS_AS(data::read_idx(t.path), io_error);
  CHECK_THROWS_WITH(data::read_idx(t.path), Catch::Contains("a regular file"));
  fs::create_directories(t.path / "dir");
  CHECK_THROWS_AS(data::load_idx_pair(t.path / "dir", t.path / "dir", 10), io_error);
  // A gzip header with a corrupt deflate body.
  std::string gz = "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03";
  gz += std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8);
  write_raw(t.path / "bad.gz", gz);
  CHECK_THROWS_AS(data::read_idx(t.path / "bad.gz"), io_error);
}

TEST_CASE("load_idx_pair checks ranks, image size, class count and every label", "[data][errors]") {
  TempDir t;
  write_gz(t.path / "im.gz", idx_bytes({3, 2, 2}, std::vector<std::uint8_t>(12, 1)));
  write_gz(t.path / "lb.gz", idx_bytes({3}, {0, 9, 1}));
  CHECK(data::load_idx_pair(t.path / "im.gz", t.path / "lb.gz", 10).size() == 3);
  CHECK_THROWS_WITH(data::load_idx_pair(t.path / "im.gz", t.path / "lb.gz", 9), Catch::Contains("label 1"));
  CHECK_THROWS_WITH(data::load_idx_pair(t.path / "im.gz", t.path / "lb.gz", 0), Catch::Contains("num_classes"));
  CHECK_THROWS_WITH(data::load_idx_pair(t.path / "im.gz", t.path / "lb.gz", 10, -1), Catch::Contains("limit"));
  CHECK_THROWS_WITH(data::load_idx_pair(t.path / "lb.gz", t.path / "lb.gz", 10), Catch::Contains("rank"));
  CHECK_THROWS_WITH(data::load_idx_pair(t.path / "im.gz", t.path / "im.gz", 10), Catch::Contains("rank"));
  write_gz(t.path / "flat.gz", idx_bytes({3, 0, 2}, {}));
  CHECK_THROWS_WITH(data::load_idx_pair(t.path / "flat.gz", t.path / "lb.gz", 10), Catch::Contains("image size"));
}

TEST_CASE("Loader checks labels and finds non-finite intensities once, naming the sample", "[data][errors]") {
  data::Dataset d;
  d.images = Tensor<float>(Shape{4, 1, 2, 3}, 0.5f);
  d.labels = {0, 1, 2, 1};
  d.num_classes = 3;
  CHECK_NOTHROW(data::Loader<float>(d, 2, {0, 1}));
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    data::Dataset e = d;
    e.images[2 * 6 + 4] = bad;
    CHECK_THROWS_AS(data::Loader<float>(e, 2, {0, 1}), value_error);
    CHECK_THROWS_WITH(data::Loader<float>(e, 2, {0, 1}), Catch::Contains("sample 2, value 4"));
    CHECK_NOTHROW(data::Loader<float>(e, 2, {0, 1}, false, {}, 1, data::Check::labels_only));
  }
  data::Dataset big = d;
  big.images[0] = 3e38f;  // finite: accepted
  CHECK_NOTHROW(data::Loader<float>(big, 2, {0, 1}));
  for (std::int32_t bad : {-1, 3, 1000}) {
    data::Dataset e = d;
    e.labels[3] = bad;
    CHECK_THROWS_WITH(data::Loader<float>(e, 2, {0, 1}, false, {}, 1, data::Check::labels_only),
                      Catch::Contains("label of sample 3"));
  }
  data::Dataset few = d;
  few.labels.pop_back();
  CHECK_THROWS_WITH(data::Loader<float>(few, 2, {0, 1}), Catch::Contains("labels"));
  data::Dataset none = d;
  none.num_classes = 0;
  CHECK_THROWS_WITH(data::Loader<float>(none, 2, {0, 1}), Catch::Contains("num_classes"));
  CHECK_THROWS_WITH(data::Loader<float>(data::Dataset{}, 2, {0, 1}), Catch::Contains("images"));
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (float s : {0.0f, -1.0f, nan, inf}) CHECK_THROWS_WITH(data::Loader<float>(d, 2, {0, s}), Catch::Contains("stddev"));
  for (float m : {nan, inf, -inf}) CHECK_THROWS_WITH(data::Loader<float>(d, 2, {m, 1}), Catch::Contains("mean"));
  CHECK_THROWS_WITH(data::Loader<float>(d, 2, {0, 1}, false, {-1, false}), Catch::Contains("pad"));
  CHECK_THROWS_WITH(data::Loader<float>(d, -3, {0, 1}), Catch::Contains("batch_size"));
}
