// Data-parallel pieces that need no MPI: the local communicator, batch shards
// and the sharded loader, the gradient arena and the data-parallel step on one
// rank.
#include <catch2/catch.hpp>

#include <numeric>

#include "support/dist_fixtures.hpp"

using namespace lamina;

TEST_CASE("LocalCommunicator is rank 0 of 1 and leaves data as it is", "[dist]") {
  dist::LocalCommunicator comm;
  CHECK(comm.rank() == 0);
  CHECK(comm.size() == 1);
  CHECK(comm.is_root());
  std::vector<float> f{1.5f, -2.0f};
  std::vector<double> d{3.25};
  comm.allreduce_sum(std::span<float>(f));
  comm.allreduce_sum(std::span<double>(d));
  comm.broadcast(std::span<float>(f), 0);
  comm.barrier();
  CHECK(f == std::vector<float>{1.5f, -2.0f});
  CHECK(d == std::vector<double>{3.25});
  CHECK_THROWS_WITH(comm.broadcast(std::span<double>(d), 1),
                    "lamina::dist::Communicator: broadcast root: expected a root rank in [0, 1), got 1");
}

TEST_CASE("run_or_abort rethrows with one rank and returns fn's value", "[dist]") {
  dist::LocalCommunicator comm;
  CHECK(dist::run_or_abort(comm, [] { return 7; }) == 7);
  CHECK_THROWS_AS(dist::run_or_abort(comm, []() -> int { throw value_error("x"); }), value_error);
}

TEST_CASE("shard_range splits a batch into contiguous parts differing by at most one row", "[dist][data]") {
  for (index_t n = 0; n <= 20; ++n)
    for (int k = 1; k <= 5; ++k) {
      index_t next = 0, lo = n, hi = 0;
      for (int r = 0; r < k; ++r) {
        const data::ShardRange s = data::shard_range(n, {.rank = r, .size = k});
        CHECK(s.first == next);
        next += s.count;
        lo = std::min(lo, s.count), hi = std::max(hi, s.count);
      }
      CHECK(next == n);
      CHECK(hi - lo <= 1);
    }
  CHECK_THROWS_WITH(data::shard_range(4, {.rank = 3, .size = 3}),
                    "lamina::shard_range: shard rank: expected in [0, 3), got 3");
  CHECK_THROWS_AS(data::shard_range(4, {.rank = 0, .size = 0}), value_error);
}

TEST_CASE("sharded loaders draw the same permutation and their shards make up the global batch", "[dist][data]") {
  const data::Dataset d = test::bands(50, 3);
  const data::Normalization norm{0.5f, 0.3f};
  for (int k : {2, 3}) {
    std::vector<data::Loader<float>> parts;
    for (int r = 0; r < k; ++r) parts.emplace_back(d, 16, norm, true, data::Augmentation{}, 11, data::Shard{r, k});
    data::Loader<float> ref(d, 16, norm, true, {}, 11);
    for (int epoch = 0; epoch < 2; ++epoch) {
      ref.start_epoch();
      for (auto& p : parts) p.start_epoch();
      for (index_t b = 0; b < ref.batches(); ++b) {
        REQUIRE(parts[0].batches() == ref.batches());
        std::vector<index_t> joined;
        for (auto& p : parts) joined.insert(joined.end(), p.indices(b).begin(), p.indices(b).end());
        const auto expect = ref.indices(b);
        CHECK(joined == std::vector<index_t>(expect.begin(), expect.end()));
      }
    }
    Tensor<float> x;
    std::vector<std::int32_t> y;
    parts[k - 1].batch(parts[0].batches() - 1, x, y);  // last batch: 50 - 48 = 2 rows
    CHECK(x.dim(0) == data::shard_range(2, {.rank = k - 1, .size = k}).count);
    CHECK(y.size() == std::size_t(x.dim(0)));
  }
}

TEST_CASE("augmentation does not desynchronise the sharded permutations", "[dist][data]") {
  const data::Dataset d = test::bands(40, 4);
  data::Loader<float> a(d, 8, {0.5f, 0.3f}, true, {.pad = 2, .hflip = true}, 5, {0, 2});
  data::Loader<float> b(d, 8, {0.5f, 0.3f}, true, {.pad = 2, .hflip = true}, 5, {1, 2});
  Tensor<float> x;
  std::vector<std::int32_t> y;
  for (int epoch = 0; epoch < 3; ++epoch) {
    a.start_epoch(), b.start_epoch();
    for (index_t i = 0; i < a.batches(); ++i) a.batch(i, x, y);  // rank 0 draws augmentations, rank 1 does not
    CHECK(a.range(1).first + a.range(1).count == b.range(1).first);
    std::vector<index_t> oa(a.indices(1).begin(), a.indices(1).end()), ob(b.indices(1).begin(), b.indices(1).end());
    data::Loader<float> whole(d, 8, {0.5f, 0.3f}, true, {}, 5);
    for (int e = 0; e <= epoch; ++e) whole.start_epoch();
    oa.insert(oa.end(), ob.begin(), ob.end());
    const auto w = whole.indices(1);
    CHECK(oa == std::vector<index_t>(w.begin(), w.end()));
  }
}

TEST_CASE("GradientAllReduce on one rank: weighted mean of one rank is the gradient itself", "[dist]") {
  dist::LocalCommunicator comm;
  test::Mlp net = test::make_mlp(1);
  visit_parameters(net, [](const ParamRef<float>& p) {
    for (index_t i = 0; i < p.grad.size(); ++i) p.grad.data()[i] = 0.25f * float(i % 7) - 0.5f;
  });
  const std::vector<float> before = test::grads(net);
  dist::GradientAllReduce<float> sync(net, comm);
  CHECK(sync.elements() == count_parameters(net));
  CHECK(sync.bytes() == sizeof(float) * std::size_t(count_parameters(net) + 3));
  const dist::StepTotals t = sync(4.0, 1.5, 3.0);
  CHECK(t.weight == 4.0);
  CHECK(t.loss == Approx(1.5));
  CHECK(t.correct == 3.0);
  CHECK(test::max_rel_diff(test::grads(net), before) < 1e-7);
  CHECK_THROWS_WITH(sync(0.0), "lamina::dist::GradientAllReduce: sum of the ranks' weights: expected > 0, got 0");
  CHECK_THROWS_AS(sync(-1.0), value_error);
}

TEST_CASE("broadcast and checkpoint helpers on one rank keep the model", "[dist]") {
  dist::LocalCommunicator comm;
  test::BnNet net = test::make_bn_net(2);
  const std::vector<float> before = test::state(net);
  dist::broadcast_parameters(net, comm);
  dist::broadcast_buffers(net, comm);
  CHECK(test::state(net) == before);
  const auto path = std::filesystem::temp_directory_path() / "lamina_test_dist.lck";
  dist::save_checkpoint(net, path, comm);
  test::BnNet other = test::make_bn_net(3);
  io::load_checkpoint(other, path);
  CHECK(test::state(other) == before);
  std::filesystem::remove(path);
}

TEST_CASE("the data-parallel step on one rank equals the plain step", "[dist][train]") {
  const data::Dataset d = test::bands(24, 5);
  data::Loader<float> loader(d, 24, {0.5f, 0.3f});
  Tensor<float> x, y, dy, dx;
  std::vector<std::int32_t> labels;
  loader.batch(0, x, labels);
  test::BnNet a = test::make_bn_net(4), b = test::make_bn_net(4);
  optim::SGD<float> oa(a, {.lr = 0.1, .momentum = 0.9}), ob(b, {.lr = 0.1, .momentum = 0.9});
  SoftmaxCrossEntropy<float> la, lb;
  dist::LocalCommunicator comm;
  dist::GradientAllReduce<float> sync(b, comm);
  for (int step = 0; step < 3; ++step) {
    const float l = train::train_step(a, la, oa, x.cview(), labels, 0.0, y, dy, dx);
    const dist::StepTotals t = train::train_step(b, lb, ob, x.cview(), labels, 0.0, y, dy, sync);
    CHECK(t.loss == Approx(l).epsilon(1e-6));
    CHECK(t.weight == 24.0);
    CHECK(t.correct == double(la.correct()));
  }
  CHECK(test::max_rel_diff(test::state(b), test::state(a)) < 1e-6);
}

TEST_CASE("train_epoch with a communicator of one rank equals train_epoch without", "[dist][train]") {
  const data::Dataset d = test::bands(40, 6);
  data::Loader<float> la(d, 8, {0.5f, 0.3f}, true, {}, 9), lb(d, 8, {0.5f, 0.3f}, true, {}, 9);
  test::Mlp a = test::make_mlp(7), b = test::make_mlp(7);
  optim::SGD<float> oa(a, {.lr = 0.1}), ob(b, {.lr = 0.1});
  SoftmaxCrossEntropy<float> loss;
  train::Progress quiet(nullptr);
  dist::LocalCommunicator comm;
  dist::GradientAllReduce<float> sync(b, comm);
  const auto sa = train::train_epoch(a, loss, oa, la, quiet, "a");
  const auto sb = train::train_epoch(b, loss, ob, lb, quiet, "b", {}, {}, &sync);
  CHECK(sb.images == sa.images);
  CHECK(sb.loss == Approx(sa.loss).epsilon(1e-5));
  CHECK(sb.accuracy == sa.accuracy);
  CHECK(test::max_rel_diff(test::state(b), test::state(a)) < 1e-5);
  const auto ea = train::evaluate(a, la), eb = train::evaluate(b, lb, &comm);
  CHECK(eb.accuracy == ea.accuracy);
  data::Loader<float> wrong(d, 8, {0.5f, 0.3f}, true, {}, 9, {0, 2});
  CHECK_THROWS_WITH(train::train_epoch(b, loss, ob, wrong, quiet, "c", {}, {}, &sync),
                    "lamina::train_epoch: loader shard size: expected 1, got 2");
}
