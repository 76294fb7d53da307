#include <cstdio>

#include "lamina/lamina.hpp"

int main() {
  lamina::Rng rng(1);
  lamina::Sequential<lamina::Linear<float>, lamina::ReLU<float>> net(lamina::Linear<float>(3, 2, rng), lamina::ReLU<float>{});
  lamina::Tensor<float> x(lamina::Shape{4, 3}, 1.0f), y(net.output_shape(x.shape()));
  net.forward(x.cview(), y.view());
  std::printf("consumer ok: %ld parameters, y[0] = %g\n", long(lamina::count_parameters(net)), double(y[0]));
  return lamina::count_parameters(net) == 8 ? 0 : 1;
}
