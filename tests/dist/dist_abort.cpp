// A rank that fails must end the whole job with a clear message, not leave the
// others blocked in a collective. Started by check_abort.cmake under mpiexec:
//   dist_abort run_or_abort   rank 1 throws inside dist::run_or_abort
//   dist_abort environment    rank 1's exception leaves dist::MpiEnvironment's scope
// Rank 0 meanwhile trains and waits in the gradient all-reduce. Reaching the
// end of main is a failure (exit code 3).
#include <cstdio>
#include <cstring>

#include "lamina/dist/mpi.hpp"
#include "support/dist_fixtures.hpp"

using namespace lamina;

namespace {
void train_until_rank1_fails(dist::Communicator& comm) {
  const data::Dataset d = test::bands(64, 1);
  data::Loader<float> loader(d, 16, {0.5f, 0.3f}, true, {}, 1, {comm.rank(), comm.size()});
  test::Mlp net = test::make_mlp(1);
  optim::SGD<float> opt(net, {.lr = 0.1});
  dist::GradientAllReduce<float> sync(net, comm);
  SoftmaxCrossEntropy<float> loss;
  Tensor<float> x, y, dy;
  std::vector<std::int32_t> labels;
  loader.start_epoch();
  for (index_t b = 0; b < loader.batches(); ++b) {
    loader.batch(b, x, labels);
    if (comm.rank() == 1 && b == 2) fail("dist_abort", "batch 2 on rank 1", "no failure", "a deliberate one");
    train::train_step(net, loss, opt, x.cview(), labels, 0.0, y, dy, sync);
  }
  for (int i = 0; i < 100000; ++i) comm.barrier();  // rank 0: blocked until aborted
}
}  // namespace

int main(int argc, char** argv) {
  const bool env_mode = argc > 1 && std::strcmp(argv[1], "environment") == 0;
  try {
    dist::MpiEnvironment env(argc, argv);
    dist::MpiCommunicator comm;
    if (env_mode) train_until_rank1_fails(comm);
    else dist::run_or_abort(comm, [&] { train_until_rank1_fails(comm); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dist_abort: not aborted: %s\n", e.what());
  }
  return 3;
}
