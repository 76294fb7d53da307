// Data-parallel E1 step over MPI: the global batch (default 128) split over the
// ranks, per step the compute (forward, loss, backward, SGD) and the gradient
// all-reduce (pack, MPI_Allreduce, unpack) timed apart, after a barrier so that
// waiting for the slowest rank is reported separately; rank 0 prints medians.
//   mpirun -np 2 bench_dist --threads 1     # 2 processes x 1 thread
//   bench_dist --threads 2                  # 1 process  x 2 threads (a singleton)
// Not Google Benchmark: every rank must run the same number of steps.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "lamina/dist/mpi.hpp"
#include "lamina/lamina.hpp"

using namespace lamina;
using clock_type = std::chrono::steady_clock;

namespace {
struct Args {
  long batch = 128, steps = 20, warmup = 3;
  int threads = 0;
};
Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const long v = std::strtol(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--batch")) a.batch = v;
    else if (!std::strcmp(argv[i], "--steps")) a.steps = v;
    else if (!std::strcmp(argv[i], "--threads")) a.threads = int(v);
    else fail("bench_dist", "option", "--batch, --steps or --threads", argv[i]);
  }
  require(a.steps > 0, "bench_dist", "--steps", "> 0", a.steps);
  return a;
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

int run(const Args& a, dist::Communicator& comm) {
  if (a.threads > 0) set_num_threads(a.threads);
  require(a.batch >= comm.size(), "bench_dist", "--batch", ">= the number of processes", a.batch);
  Rng rng(1);
  auto net = make_resnet<float>({}, rng);
  dist::broadcast_parameters(net, comm);
  optim::SGD<float> opt(net, {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4});
  dist::GradientAllReduce<float> sync(net, comm);
  SoftmaxCrossEntropy<float> loss;
  const index_t n = data::shard_range(a.batch, {comm.rank(), comm.size()}).count;
  Tensor<float> x(Shape{n, 1, 28, 28}), y, dy;
  for (float& v : x.span()) v = float(rng.uniform(-1, 1));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) labels[std::size_t(i)] = std::int32_t(i % 10);
  std::vector<double> step_s, wait_s, reduce_s;
  for (long s = 0; s < a.warmup + a.steps; ++s) {
    comm.barrier();  // every rank starts the step together
    const auto t0 = clock_type::now();
    const float l = train::detail::forward_loss(net, loss, x.cview(), labels, y);
    train::detail::backward_loss(net, loss, opt, y, dy);
    const auto t1 = clock_type::now();
    comm.barrier();  // timed apart: waiting for the slowest rank is not the all-reduce's cost
    const auto t2 = clock_type::now();
    sync(double(n), double(l), 0.0);
    const double r = seconds_since(t2);
    opt.step();
    if (s >= a.warmup)
      step_s.push_back(seconds_since(t0)), wait_s.push_back(std::chrono::duration<double>(t2 - t1).count()),
          reduce_s.push_back(r);
  }
  const double st = median(step_s), rd = median(reduce_s), wt = median(wait_s);
  if (comm.is_root())
    std::printf("bench_dist: %d process(es) x %d thread(s), global batch %ld, %zu steps: step %.1f ms (%.0f images/s), "
                "all-reduce %.2f ms = %.2f %% of the step (pack, MPI_Allreduce, unpack), waiting for the slowest rank %.1f ms, "
                "arena %zu bytes (%ld gradients)\n",
                comm.size(), num_threads(), a.batch, step_s.size(), 1e3 * st, double(a.batch) / st, 1e3 * rd,
                100 * rd / st, 1e3 * wt, sync.bytes(), long(sync.elements()));
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  dist::MpiEnvironment mpi(argc, argv);
  dist::MpiCommunicator comm;
  try {
    return dist::run_or_abort(comm, [&] { return run(parse(argc, argv), comm); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_dist: %s\n", e.what());
    return 1;
  }
}
