#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

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
