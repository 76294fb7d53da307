// Uses lamina::mpi (dist/mpi.hpp): run as an MPI singleton, one gradient all-reduce.
#include <cstdio>

#include "lamina/dist/mpi.hpp"
#include "lamina/lamina.hpp"

int main(int argc, char** argv) {
  lamina::dist::MpiEnvironment env(argc, argv);
  lamina::dist::MpiCommunicator comm;
  lamina::Rng rng(1);
  lamina::Linear<float> net(3, 2, rng);
  lamina::dist::broadcast_parameters(net, comm);
  lamina::dist::GradientAllReduce<float> sync(net, comm);
  const auto t = sync(4.0, 0.5, 3.0);
  std::printf("consumer_mpi ok: %d process(es), %ld gradients, batch %g\n", comm.size(), long(sync.elements()), t.weight);
  return sync.elements() == 8 && t.weight == 4.0 ? 0 : 1;
}
