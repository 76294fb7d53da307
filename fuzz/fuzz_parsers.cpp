// libFuzzer targets for the two file parsers, selected by LAMINA_FUZZ_PARSER:
//   1 fuzz_checkpoint: io::load_tensors into a fixed model (float entries
//     "w" [2, 3] and "b" [3]); 2 fuzz_idx: data::read_idx.
// The input bytes are written to a file and parsed. Allowed outcomes: success,
// or a lamina::error (any other exception, a crash or a sanitizer report is a
// finding). Checked properties, each a "lamina-fuzz: mismatch" and an abort:
// a failed checkpoint load leaves the model unchanged; a successful IDX read
// has exactly prod(dims) values and no more than the file can hold.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "lamina/data/idx.hpp"
#include "lamina/io/checkpoint.hpp"

using namespace lamina;

namespace {
void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "lamina-fuzz: mismatch: %s\n", what);
  std::abort();
}
const std::filesystem::path& input_file() {
  static const std::filesystem::path p =
      std::filesystem::temp_directory_path() / ("lamina_fuzz_" + std::to_string(::getpid()) + ".bin");
  return p;
}
void write_input(const std::uint8_t* data, std::size_t size) {
  std::ofstream out(input_file(), std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  check(bool(out), "cannot write the input file");
}

#if LAMINA_FUZZ_PARSER == 1
void parse(std::size_t) {
  Tensor<float> w(Shape{2, 3}, 0.25f), b(Shape{3}, -0.5f);
  const std::vector<ParamRef<float>> entries = {{"w", w.view(), {}}, {"b", b.view(), {}}};
  try {
    io::load_tensors(input_file(), entries);
  } catch (const lamina::error&) {
    for (float x : w.span()) check(x == 0.25f, "a failed load changed the model");
    for (float x : b.span()) check(x == -0.5f, "a failed load changed the model");
  }
}
#elif LAMINA_FUZZ_PARSER == 2
void parse(std::size_t size) {
  try {
    const data::IdxArray a = data::read_idx(input_file());
    std::uint64_t n = 1;
    for (std::uint32_t d : a.dims) n *= d;  // no overflow: read_idx checked it
    check(a.values.size() == n, "values disagree with the extents");
    check(n <= std::uint64_t(size) * data::detail::idx_max_ratio, "more values than the file can hold");
  } catch (const lamina::error&) {
  }
}
#else
#error "LAMINA_FUZZ_PARSER must be 1 or 2"
#endif
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  write_input(data, size);
  parse(size);
  return 0;
}
