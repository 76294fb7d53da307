#include <catch2/catch.hpp>

#include <vector>

#include "lamina/core/eigen.hpp"
#include "lamina/core/tensor.hpp"

using namespace lamina;

TEST_CASE("Shape basics and errors", "[tensor]") {
  const Shape s{2, 3, 4};
  CHECK(s.rank() == 3);
  CHECK(s.numel() == 24);
  CHECK(s.rows() == 6);
  CHECK(s.cols() == 4);
  CHECK(s.str() == "[2, 3, 4]");
  CHECK(Shape{2, 3} != Shape{3, 2});
  CHECK_THROWS_AS((Shape{1, 2, 3, 4, 5}), shape_error);
  CHECK_THROWS_WITH((Shape{2, -1}), Catch::Contains("extent"));
}

TEST_CASE("Views wrap any contiguous storage without copying", "[tensor]") {
  std::vector<float> buf(12);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float(i);
  View<float> v(buf.data(), Shape{3, 4});
  CHECK(v(1, 2) == 6.0f);
  v(2, 3) = -1;
  CHECK(buf[11] == -1.0f);
  ConstView<float> cv = v;  // View<T> -> View<const T>
  CHECK(cv.reshape(Shape{2, 6})(1, 5) == -1.0f);
  CHECK(v.slice(1, 2)(0, 0) == 4.0f);
  CHECK_THROWS_AS(v.slice(2, 2), shape_error);
  CHECK_THROWS_AS(v.reshape(Shape{5, 2}), shape_error);
  View<float> from_span{std::span<float>(buf)};
  CHECK(from_span.shape() == Shape{12});
}

TEST_CASE("Eigen adapters are zero-copy in both directions", "[tensor][eigen]") {
  Tensor<double> t(Shape{2, 3});
  for (index_t i = 0; i < 6; ++i) t[i] = double(i);
  auto m = as_matrix(t.view());
  CHECK(m(1, 0) == 3.0);
  m(0, 2) = 42;
  CHECK(t[2] == 42.0);
  CHECK(as_vector(t.cview()).sum() == Approx(0 + 1 + 42 + 3 + 4 + 5));

  RowMatrix<double> rm(2, 3);
  rm << 1, 2, 3, 4, 5, 6;
  View<double> rv = view_of(rm);
  CHECK(rv.is_contiguous());
  CHECK(rv(1, 2) == 6.0);
  CHECK(rv.data() == rm.data());

  Eigen::MatrixXd cm(2, 3);  // column-major: a strided view of the same matrix
  cm << 1, 2, 3, 4, 5, 6;
  View<double> cv = view_of(cm);
  CHECK(!cv.is_contiguous());
  CHECK(cv(1, 2) == 6.0);
  Tensor<double> copy = Tensor<double>::copy_of(cv);
  CHECK(copy[5] == 6.0);
  CHECK(copy[1] == 2.0);
  CHECK_THROWS_WITH(as_matrix(cv), Catch::Contains("contiguous"));

  Eigen::Map<RowMatrix<double>> map(copy.data(), 3, 2);
  View<double> mv = view_of(map);
  mv(0, 0) = 7;
  CHECK(copy[0] == 7.0);
  CHECK(mv.data() == copy.data());
  CHECK(mv.shape() == Shape{3, 2});
}

TEST_CASE("Tensor owns aligned storage and checks assignments", "[tensor]") {
  Tensor<float> t(Shape{3, 5}, 2.0f);
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);  // a cache line, in every build
  for (index_t n : {1, 7, 1000, 8191, 8192, 100000}) {  // heap blocks, and mmap blocks (16 bytes past a page by default)
    Tensor<double> d(Shape{n});
    CHECK(reinterpret_cast<std::uintptr_t>(d.data()) % (n * 8 >= 65536 ? 4096 : 64) == 0);  // pages from 64 KiB on
  }
  CHECK(t.size() == 15);
  Tensor<float> u(Shape{5, 3});
  CHECK_THROWS_AS(u.assign(t.cview()), shape_error);
  CHECK_THROWS_AS((Tensor<float>(Shape{2}, {1.0f, 2.0f, 3.0f})), shape_error);
  Tensor<float> empty;
  CHECK(empty.size() == 0);
}
