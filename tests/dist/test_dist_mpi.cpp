// Data-parallel training over MPI, run by CTest under mpiexec with 1, 2 and 3
// processes and without mpiexec (a singleton). Every rank runs every test case;
// each rank also computes the one-process reference itself, on the whole batch.
//
// BatchNorm: each rank normalises with its shard's statistics (DDP's default,
// no SyncBN), so a BN model is compared with the one-process computation that
// normalises each shard separately (gradients averaged, rank 0's running
// statistics); models without BN are compared with one process on the whole
// batch directly.
#define CATCH_CONFIG_RUNNER
#include <limits>
#include <catch2/catch.hpp>

#include "lamina/dist/mpi.hpp"
#include "support/dist_fixtures.hpp"

using namespace lamina;

namespace {
dist::MpiCommunicator& world() {
  static dist::MpiCommunicator comm;
  return comm;
}
const optim::SgdOptions sgd{.lr = 0.2, .momentum = 0.9, .weight_decay = 1e-3};

/// A batch of n images of bands(), normalised.
void whole_batch(index_t n, Tensor<float>& x, std::vector<std::int32_t>& y) {
  static const data::Dataset d = test::bands(64, 21);
  data::Loader<float> loader(d, n, {0.5f, 0.3f});
  loader.batch(0, x, y);
}

/// One process, `steps` SGD steps, each shard's gradient computed on its own
/// model copy (its own BN statistics), averaged weighted by the shard sizes;
/// returns the state of shard 0's copy (rank 0's running statistics).
template <class Net>
std::vector<float> per_shard_reference(const Net& init, const Tensor<float>& x, const std::vector<std::int32_t>& y,
                                       int shards, int steps) {
  std::vector<Net> copies(std::size_t(shards), init);
  std::vector<optim::SGD<float>> opts;
  for (Net& c : copies) opts.emplace_back(c, sgd);
  Tensor<float> xs, out, dy, dx;
  std::vector<std::int32_t> ys;
  SoftmaxCrossEntropy<float> loss;
  for (int s = 0; s < steps; ++s) {
    std::vector<float> mean(std::size_t(count_parameters(copies[0])), 0.0f);
    for (int r = 0; r < shards; ++r) {
      const data::ShardRange part = data::shard_range(x.dim(0), {r, shards});
      test::slice(x, y, part.first, part.count, xs, ys);
      train::detail::forward_loss(copies[std::size_t(r)], loss, xs.cview(), ys, out);
      train::detail::backward_loss(copies[std::size_t(r)], loss, opts[std::size_t(r)], out, dy);
      const std::vector<float> g = test::grads(copies[std::size_t(r)]);
      for (std::size_t i = 0; i < g.size(); ++i) mean[i] += g[i] * float(part.count) / float(x.dim(0));
    }
    for (int r = 0; r < shards; ++r) {  // every copy takes the averaged step (same parameters)
      std::size_t k = 0;
      for (const ParamRef<float>& p : opts[std::size_t(r)].parameters())
        for (index_t i = 0; i < p.grad.size(); ++i) p.grad.data()[i] = mean[k++];
      opts[std::size_t(r)].step();
    }
  }
  return test::state(copies[0]);
}

/// This rank: `steps` data-parallel steps on its shard of x.
template <class Net>
std::vector<float> distributed(Net& net, const Tensor<float>& x, const std::vector<std::int32_t>& y, int steps) {
  dist::MpiCommunicator& comm = world();
  dist::broadcast_parameters(net, comm);
  optim::SGD<float> opt(net, sgd);
  dist::GradientAllReduce<float> sync(net, comm);
  SoftmaxCrossEntropy<float> loss;
  const data::ShardRange part = data::shard_range(x.dim(0), {comm.rank(), comm.size()});
  Tensor<float> xs, out, dy;
  std::vector<std::int32_t> ys;
  test::slice(x, y, part.first, part.count, xs, ys);
  for (int s = 0; s < steps; ++s) train::train_step(net, loss, opt, xs.cview(), ys, 0.0, out, dy, sync);
  dist::broadcast_buffers(net, comm);
  return test::state(net);
}
}  // namespace

TEST_CASE("MpiCommunicator: all-reduce sums, broadcast copies the root, barrier returns", "[mpi]") {
  dist::MpiCommunicator& comm = world();
  const int k = comm.size(), r = comm.rank();
  std::vector<float> f{float(r), 1.0f};
  std::vector<double> d{double(r) * 0.5};
  comm.allreduce_sum(std::span<float>(f));
  comm.allreduce_sum(std::span<double>(d));
  CHECK(f[0] == float(k * (k - 1) / 2));
  CHECK(f[1] == float(k));
  CHECK(d[0] == 0.25 * k * (k - 1));
  std::vector<std::byte> b{std::byte(r), std::byte(7)};
  comm.broadcast(std::span<std::byte>(b), k - 1);
  CHECK(b[0] == std::byte(k - 1));
  comm.barrier();
  CHECK_THROWS_WITH(comm.broadcast(std::span<float>(f), k),
                    Catch::Contains("broadcast root: expected a root rank in [0, " + std::to_string(k)));
}

TEST_CASE("broadcast_parameters gives every rank rank 0's weights", "[mpi]") {
  dist::MpiCommunicator& comm = world();
  test::BnNet net = test::make_bn_net(100 + std::uint64_t(comm.rank()));
  net.template get<1>().running_mean()[0] = float(comm.rank() + 1);
  dist::broadcast_parameters(net, comm);
  test::BnNet ref = test::make_bn_net(100);
  ref.template get<1>().running_mean()[0] = 1.0f;
  CHECK(test::state(net) == test::state(ref));
}

TEST_CASE("a model without BatchNorm: the split step equals one process on the whole batch", "[mpi]") {
  for (index_t n : {12, 13}) {  // 13: shards of different sizes on 2 and 3 ranks
    Tensor<float> x;
    std::vector<std::int32_t> y;
    whole_batch(n, x, y);
    test::Mlp net = test::make_mlp(200 + std::uint64_t(world().rank()));  // broadcast makes it seed 200's
    const std::vector<float> got = distributed(net, x, y, 3);
    const std::vector<float> ref = per_shard_reference(test::make_mlp(200), x, y, 1, 3);
    INFO("batch " << n << ", rank " << world().rank() << " of " << world().size());
    CHECK(test::max_rel_diff(got, ref) < 2e-5);
  }
}

TEST_CASE("a BatchNorm model: the split step equals one process normalising each shard", "[mpi]") {
  dist::MpiCommunicator& comm = world();
  Tensor<float> x;
  std::vector<std::int32_t> y;
  whole_batch(12, x, y);
  test::BnNet net = test::make_bn_net(300 + std::uint64_t(comm.rank()));
  const std::vector<float> got = distributed(net, x, y, 3);
  const std::vector<float> ref = per_shard_reference(test::make_bn_net(300), x, y, comm.size(), 3);
  INFO("rank " << comm.rank() << " of " << comm.size());
  CHECK(test::max_rel_diff(got, ref) < 2e-5);  // parameters and running statistics (rank 0's, broadcast)
  if (comm.size() > 1) {  // the comparison is not vacuous: whole-batch statistics differ
    const std::vector<float> whole = per_shard_reference(test::make_bn_net(300), x, y, 1, 3);
    CHECK(test::max_rel_diff(got, whole) > 1e-4);
  }
}

TEST_CASE("train_epoch and evaluate over MPI equal one process on the whole data", "[mpi]") {
  dist::MpiCommunicator& comm = world();
  const data::Dataset d = test::bands(50, 22);  // 50 = 3 batches of 16 and one of 2
  data::Loader<float> mine(d, 16, {0.5f, 0.3f}, true, {}, 8, {comm.rank(), comm.size()});
  data::Loader<float> whole(d, 16, {0.5f, 0.3f}, true, {}, 8);
  test::Mlp net = test::make_mlp(400 + std::uint64_t(comm.rank())), ref = test::make_mlp(400);
  dist::broadcast_parameters(net, comm);
  optim::SGD<float> opt(net, sgd), ropt(ref, sgd);
  dist::GradientAllReduce<float> sync(net, comm);
  SoftmaxCrossEntropy<float> loss;
  train::Progress quiet(nullptr);
  for (int e = 0; e < 2; ++e) {
    const auto got = train::train_epoch(net, loss, opt, mine, quiet, "dist", {}, {}, &sync);
    const auto exp = train::train_epoch(ref, loss, ropt, whole, quiet, "ref");
    CHECK(got.images == 50);
    CHECK(got.loss == Approx(exp.loss).epsilon(1e-4));
    CHECK(got.accuracy == exp.accuracy);
  }
  CHECK(test::max_rel_diff(test::state(net), test::state(ref)) < 1e-4);
  data::Loader<float> test_mine(d, 20, {0.5f, 0.3f}, false, {}, 1, {comm.rank(), comm.size()});
  data::Loader<float> test_whole(d, 20, {0.5f, 0.3f});
  const auto ev = train::evaluate(net, test_mine, &comm), er = train::evaluate(ref, test_whole);
  CHECK(ev.images == 50);
  CHECK(ev.accuracy == Approx(er.accuracy));
}

TEST_CASE("a NaN in one rank's shard stops, or is skipped on, every rank together", "[mpi]") {
  dist::MpiCommunicator& comm = world();
  data::Dataset d = test::bands(48, 23);  // 3 batches of 16
  const index_t per = d.images.size() / d.size();
  d.images.data()[47 * per + 5] = std::numeric_limits<float>::quiet_NaN();  // the last rank's shard of batch 3
  const data::Normalization norm{0.5f, 0.3f};
  const data::Shard shard{comm.rank(), comm.size()};
  train::Progress quiet(nullptr);
  SoftmaxCrossEntropy<float> loss;
  SECTION("stop: every rank throws at step 3, before the update") {
    data::Loader<float> mine(d, 16, norm, false, {}, 1, shard, data::Check::labels_only);
    test::Mlp net = test::make_mlp(500);
    optim::SGD<float> opt(net, sgd);
    dist::GradientAllReduce<float> sync(net, comm);
    CHECK_THROWS_WITH(train::train_epoch(net, loss, opt, mine, quiet, "dist", {}, {}, &sync),
                      Catch::Contains("step 3 of 3") && Catch::Contains("loss is nan"));
  }
  SECTION("skip: every rank drops batch 3 and the models stay those of one process skipping it") {
    data::Loader<float> mine(d, 16, norm, false, {}, 1, shard, data::Check::labels_only);
    data::Loader<float> whole(d, 16, norm, false, {}, 1, data::Check::labels_only);
    test::Mlp net = test::make_mlp(501), ref = test::make_mlp(501);
    optim::SGD<float> opt(net, sgd), ropt(ref, sgd);
    dist::GradientAllReduce<float> sync(net, comm);
    const train::TrainOptions skip{.on_non_finite = train::OnNonFinite::skip};
    const auto got = train::train_epoch(net, loss, opt, mine, quiet, "dist", {}, skip, &sync);
    const auto exp = train::train_epoch(ref, loss, ropt, whole, quiet, "ref", {}, skip);
    CHECK(got.skipped == 1);
    CHECK(exp.skipped == 1);
    CHECK(got.images == 32);
    CHECK(got.loss == Approx(exp.loss).epsilon(1e-4));
    CHECK(test::max_rel_diff(test::state(net), test::state(ref)) < 1e-4);
  }
}

TEST_CASE("dist::save_checkpoint writes rank 0's model once, readable by every rank", "[mpi]") {
  dist::MpiCommunicator& comm = world();
  test::BnNet net = test::make_bn_net(500);
  net.template get<1>().running_var()[1] = float(2 + comm.rank());  // drifted buffers
  const auto path = std::filesystem::temp_directory_path() / "lamina_test_dist_mpi.lck";
  dist::save_checkpoint(net, path, comm);
  test::BnNet back = test::make_bn_net(501);
  io::load_checkpoint(back, path);
  CHECK(back.template get<1>().running_var()[1] == 2.0f);
  CHECK(test::state(back) == test::state(net));
  comm.barrier();
  if (comm.is_root()) std::filesystem::remove(path);
}

TEST_CASE("a model that differs between ranks is refused on every rank", "[mpi]") {
  dist::MpiCommunicator& comm = world();
  if (comm.size() == 1) return;
  Rng rng(1);
  Linear<float> lin(4, comm.rank() == 0 ? 3 : 2, rng);
  CHECK_THROWS_WITH(dist::GradientAllReduce<float>(lin, comm),
                    Catch::Contains("GradientAllReduce: expected the same model (tensor and scalar counts) on every rank"));
}

int main(int argc, char** argv) {
  dist::MpiEnvironment env(argc, argv);
  const int failed = Catch::Session().run(argc, argv);
  int worst = failed;  // every rank exits with the worst result
  MPI_Allreduce(&failed, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}
