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
