// The Module contract v2 (core/module.hpp): state per application, input-only
// gradients, per-sample routing, the stage memory, recomputation without side
// effects. Every case has a central-difference gradient check in double with
// pre-filled gradient buffers (support/gradcheck.hpp).
#include <catch2/catch.hpp>

#include <array>
#include <vector>

#include "lamina/lamina.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;

namespace {

std::vector<std::vector<double>> gradients(auto& m) {
  std::vector<std::vector<double>> g;
  visit_parameters(m, [&](const ParamRef<double>& p) {
    if (p.trainable) g.emplace_back(p.grad.data(), p.grad.data() + p.grad.size());
  });
  return g;
}
void prefill_gradients(auto& m, std::uint64_t seed) {
  Rng rng(seed);
  visit_parameters(m, [&](const ParamRef<double>& p) {
    if (p.trainable)
      for (double& v : p.grad.span()) v = rng.uniform(-1, 1);
  });
}

// ---- 1. a stage of toy blocks sharing a stage memory ----------------------------
// y = h + a · Σ_{earlier active j} h_j with h = tanh(x W); publishes h unless off.
class MemoryBlock {
 public:
  using value_type = double;
  using T = double;
  static constexpr std::uint32_t key = memory_key::user;
  struct Cache {
    Sequential<Linear<T>, Tanh<T>>::Cache body;
    Tensor<T> h;
    std::vector<std::size_t> seen;  // earlier blocks read
    BlockMemory<T> memory;
  };
  MemoryBlock(index_t D, Rng& rng, bool off) : body_(Linear<T>(D, D, rng), Tanh<T>{}), off_(off) {
    a_[0] = rng.uniform(0.2, 0.8);
  }
  Shape output_shape(const Shape& s) const { return body_.output_shape(s); }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) { forward(x, y, c, BlockMemory<T>{}, p); }
  void forward(ConstView<T> x, View<T> y, Cache& c, BlockMemory<T> mem, Pass p = {}) {
    c.h.resize(y.shape());
    body_.forward(x, c.h.view(), c.body, p);
    c.memory = mem;
    if (!off_) mem.publish(key, c.h.cview());
    mem.earlier(key, 100, c.seen);
    std::copy(c.h.data(), c.h.data() + c.h.size(), y.data());
    for (std::size_t j : c.seen) axpy(y.data(), mem.value(j, key).data(), y.size(), a_[0]);
  }
  void infer(ConstView<T> x, View<T> y) { infer(x, y, BlockMemory<T>{}); }
  void infer(ConstView<T> x, View<T> y, BlockMemory<T> mem) {
    Cache& c = infer_;
    forward(x, y, c, mem);
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    dh_.resize(dy.shape());
    std::copy(dy.data(), dy.data() + dy.size(), dh_.data());
    if (!off_ && c.memory.attached()) axpy(dh_.data(), c.memory.own_grad(key).data(), dh_.size());
    for (std::size_t j : c.seen) {
      const ConstView<T> hj = c.memory.value(j, key);
      if (g.params)
        for (index_t i = 0; i < dy.size(); ++i) da_[0] += dy.data()[i] * hj.data()[i];
      axpy(c.memory.grad(j, key).data(), dy.data(), dy.size(), a_[0]);
    }
    body_.backward(c.body, dh_.cview(), dx, g);
  }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    body_.visit(f, prefix + "body.");
    f(ParamRef<T>{prefix + "a", View<T>(a_.data(), Shape{1}), View<T>(da_.data(), Shape{1}), false, true});
  }

 private:
  Sequential<Linear<T>, Tanh<T>> body_;
  bool off_;
  std::array<T, 1> a_{}, da_{};
  Tensor<T> dh_;
  Cache infer_;
};
static_assert(UsesStageMemory<MemoryBlock>);

TEST_CASE("contract: blocks of a stage write to and read from the stage memory; a switched-off block is unseen",
          "[contract][memory][gradcheck]") {
  Rng rng(1);
  Stage<MemoryBlock> stage;
  for (int i = 0; i < 4; ++i) stage.push_back(MemoryBlock(5, rng, /*off=*/i == 2));
  auto x = gradcheck::random_tensor({3, 5}, 2);
  gradcheck::check(stage, x);

  Stage<MemoryBlock>::Cache c;
  Tensor<double> y(Shape{3, 5});
  stage.forward(x.cview(), y.view(), c);
  CHECK(c.blocks[1].seen == std::vector<std::size_t>{0});
  CHECK(c.blocks[2].seen == std::vector<std::size_t>{1, 0});
  CHECK(c.blocks[3].seen == std::vector<std::size_t>{1, 0});  // block 2 published nothing
  CHECK(c.memory.active(0));
  CHECK_FALSE(c.memory.active(2));
  CHECK_THROWS_AS(c.memory.value(2, MemoryBlock::key), shape_error);

  // infer gives the training output (no BatchNorm here), and a new forward resets the memory.
  Tensor<double> yi(y.shape());
  stage.infer(x.cview(), yi.view());
  for (index_t i = 0; i < y.size(); ++i) CHECK(yi[i] == Approx(y[i]).margin(1e-14));
  stage.forward(x.cview(), y.view(), c);
  CHECK(c.blocks[3].seen.size() == 2);
}

// ---- 2. one module applied three times in a step -----------------------------------
// z3 = f(f(f(x))) with one f and three caches: a Module itself, gradient-checked.
template <class F>
class Thrice {
 public:
  using value_type = typename F::value_type;
  using T = value_type;
  struct Cache {
    std::array<typename F::Cache, 3> f;
    std::array<Tensor<T>, 2> z;
  };
  explicit Thrice(F f) : f_(std::move(f)) {}
  Shape output_shape(const Shape& s) const { return f_.output_shape(f_.output_shape(f_.output_shape(s))); }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) {
    ConstView<T> cur = x;
    for (int i = 0; i < 2; ++i) {
      c.z[i].resize(f_.output_shape(cur.shape()));
      f_.forward(cur, c.z[i].view(), c.f[i], p);
      cur = c.z[i].cview();
    }
    f_.forward(cur, y, c.f[2], p);
  }
  void infer(ConstView<T> x, View<T> y) {
    Cache c;
    forward(x, y, c);
  }
  // The applications are differentiated in the order 3, 2, 1, each from its own cache.
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    std::array<Tensor<T>, 2> d{Tensor<T>(c.z[0].shape()), Tensor<T>(c.z[1].shape())};
    f_.backward(c.f[2], dy, d[1].view(), {.input = true, .params = g.params});
    f_.backward(c.f[1], d[1].cview(), d[0].view(), {.input = true, .params = g.params});
    f_.backward(c.f[0], d[0].cview(), dx, g);
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx) { backward(cache_, dy, dx); }
  template <class Fn>
  void visit(Fn&& fn, const std::string& prefix) {
    f_.visit(fn, prefix);
  }
  void set_training(bool on) { lamina::set_training(f_, on); }

 private:
  F f_;
  Cache cache_;
};

TEST_CASE("contract: one module applied three times in one step, each backward from its own state",
          "[contract][gradcheck]") {
  Rng rng(3);
  Thrice dense(Sequential<Linear<double>, Tanh<double>>(Linear<double>(4, 4, rng), Tanh<double>{}));
  auto x = gradcheck::random_tensor({5, 4}, 4);
  gradcheck::check(dense, x);

  // A BasicBlock keeps conv inputs and BatchNorm statistics per application.
  Thrice block(make_basic_block<double>(2, 2, 1, rng));
  auto xi = gradcheck::random_tensor({2, 2, 4, 4}, 5);
  gradcheck::check(block, xi, 1e-5);
}

// ---- 3. input-only vector–Jacobian products ------------------------------------------
template <class M>
void check_input_only(M& m, const Shape& xs, double tol = 0) {
  const auto x = gradcheck::random_tensor(xs, 11);
  const Shape ys = m.output_shape(xs);
  const auto dy = gradcheck::random_tensor(ys, 12);
  typename M::Cache c;
  Tensor<double> y(ys);
  m.forward(x.cview(), y.view(), c);
  prefill_gradients(m, 13);
  const auto before = gradients(m);
  Tensor<double> dx_only = gradcheck::random_tensor(xs, 14), dx_full = Tensor<double>::copy_of(dx_only.cview());
  m.backward(c, dy.cview(), dx_only.view(), {.params = false});
  CHECK(gradients(m) == before);  // bit for bit
  m.backward(c, dy.cview(), dx_full.view());
  CHECK(gradients(m) != before);
  for (index_t i = 0; i < dx_only.size(); ++i) REQUIRE(dx_only[i] == Approx(dx_full[i]).margin(tol));
}

TEST_CASE("contract: the input-only product leaves every parameter gradient unchanged and equals the full dx",
          "[contract]") {
  Rng rng(5);
  auto net = make_resnet<double>({.in_channels = 1, .widths = {2, 3, 4}, .blocks_per_stage = 2, .num_classes = 3}, rng);
  check_input_only(net, Shape{2, 1, 8, 8});
  laurel::Options o;
  o.rank = 2;
  auto laurel_net = make_laurel_resnet<double, laurel::RW_LR_PA>(
      {.in_channels = 1, .widths = {2, 3, 4}, .blocks_per_stage = 3, .num_classes = 3}, o, rng);
  check_input_only(laurel_net, Shape{2, 1, 8, 8});
  GemmaLaurel<Linear<double>> gemma(Linear<double>(6, 6, rng), 6, 2, rng);
  check_input_only(gemma, Shape{4, 6});
}

// ---- 4. per-sample routing ----------------------------------------------------------------
// Rows go to three different modules by an index list and come back in place.
class Routed3 {
 public:
  using value_type = double;
  using T = double;
  using A = Linear<T>;
  using B = Sequential<Linear<T>, Tanh<T>>;
  using C = Sequential<Linear<T>, ReLU<T>, Linear<T>>;
  struct Cache {
    A::Cache a;
    B::Cache b;
    C::Cache c;
    std::array<Tensor<T>, 3> x, y;
  };
  Routed3(std::vector<index_t> route, Rng& rng)
      : a_(4, 3, rng), b_(Linear<T>(4, 3, rng), Tanh<T>{}), c_(Linear<T>(4, 5, rng), ReLU<T>{}, Linear<T>(5, 3, rng)),
        routing_(std::move(route), 3) {}
  Shape output_shape(const Shape& s) const { return a_.output_shape(s); }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) {
    each([&](auto& m, auto& mc, int k) {
      gather_rows(x, routing_.rows(k), sub(c.x[k], x.shape(), k));
      sub(c.y[k], y.shape(), k);
      m.forward(c.x[k].cview(), c.y[k].view(), mc, p);
      scatter_rows(c.y[k].cview(), routing_.rows(k), y);
    }, c);
  }
  void infer(ConstView<T> x, View<T> y) {
    Cache c;
    each([&](auto& m, auto&, int k) {
      gather_rows(x, routing_.rows(k), sub(c.x[k], x.shape(), k));
      m.infer(c.x[k].cview(), sub(c.y[k], y.shape(), k));
      scatter_rows(c.y[k].cview(), routing_.rows(k), y);
    }, c);
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    each([&](auto& m, const auto& mc, int k) {
      Tensor<T> dyk(c.y[k].shape()), dxk(c.x[k].shape());
      gather_rows(dy, routing_.rows(k), dyk.view());
      m.backward(mc, dyk.cview(), dxk.view(), g);
      if (g.input) scatter_add_rows(dxk.cview(), routing_.rows(k), dx);
    }, c);
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx) { backward(cache_, dy, dx); }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    a_.visit(f, prefix + "a."), b_.visit(f, prefix + "b."), c_.visit(f, prefix + "c.");
  }
  A a_;
  B b_;
  C c_;

 private:
  View<T> sub(Tensor<T>& t, const Shape& batch, int k) {
    t.resize(with_rows(batch, index_t(routing_.rows(k).size())));
    return t.view();
  }
  template <class Fn, class Cc>
  void each(Fn&& fn, Cc& c) {
    fn(a_, c.a, 0), fn(b_, c.b, 1), fn(c_, c.c, 2);
  }
  RowRouting routing_;
  Cache cache_;
};

TEST_CASE("contract: rows routed to three modules by an index list come back in place", "[contract][routing][gradcheck]") {
  Rng rng(7);
  const std::vector<index_t> route{0, 2, 1, 0, 2, 2, 1};
  Routed3 m(route, rng);
  auto x = gradcheck::random_tensor({7, 4}, 8);
  gradcheck::check(m, x);

  // Each output row is its own module's output on that row alone.
  Tensor<double> y(Shape{7, 3}), yi(Shape{7, 3}), row_y(Shape{1, 3});
  m.forward(x.cview(), y.view());
  m.infer(x.cview(), yi.view());
  for (index_t i = 0; i < 7; ++i) {
    const ConstView<double> row = x.cview().slice(i, 1);
    const index_t k = route[std::size_t(i)];
    if (k == 0) m.a_.infer(row, row_y.view());
    if (k == 1) m.b_.infer(row, row_y.view());
    if (k == 2) m.c_.infer(row, row_y.view());
    for (index_t j = 0; j < 3; ++j) {
      CHECK(y[i * 3 + j] == Approx(row_y[j]).margin(1e-14));
      CHECK(yi[i * 3 + j] == Approx(row_y[j]).margin(1e-14));
    }
  }
  const std::vector<index_t> bad{0, 3};
  CHECK_THROWS_WITH(RowRouting(bad, 3), Catch::Contains("route[1]: expected in [0, 3), got 3"));
  Tensor<double> out(Shape{2, 4});
  const std::vector<index_t> far{0, 9};
  CHECK_THROWS_WITH(gather_rows(x.cview(), far, out.view()), Catch::Contains("rows[1]: expected in [0, 7), got 9"));
}

// ---- 5. recomputation has no side effects ------------------------------------------------
TEST_CASE("contract: BatchNorm running statistics and Dropout masks do not change when a recomputation runs",
          "[contract][recompute]") {
  using Net = Sequential<Conv2d<double>, BatchNorm2d<double>, ReLU<double>, Dropout<double>>;
  auto make = [] {
    Rng rng(9);
    return Net(Conv2d<double>({.in_channels = 2, .out_channels = 3, .padding = 1}, rng), BatchNorm2d<double>(3),
               ReLU<double>{}, Dropout<double>(0.4, 17));
  };
  const auto x = gradcheck::random_tensor({2, 2, 5, 5}, 10), dy = gradcheck::random_tensor({2, 3, 5, 5}, 11);
  auto run = [&](bool recompute) {
    Net net = make();
    Net::Cache c;
    Tensor<double> y(dy.shape()), y2(dy.shape()), dx(x.shape());
    for (int step = 0; step < 2; ++step) {  // two steps: two draws, two statistics updates
      net.forward(x.cview(), y.view(), c);
      if (recompute) {
        net.forward(x.cview(), y2.view(), c, {.recompute = true});
        for (index_t i = 0; i < y.size(); ++i) REQUIRE(y2[i] == y[i]);
      }
      net.backward(c, dy.cview(), dx.view());
    }
    auto& bn = net.get<1>();
    std::vector<double> out(y.data(), y.data() + y.size());
    out.insert(out.end(), bn.running_mean().data(), bn.running_mean().data() + 3);
    out.insert(out.end(), bn.running_var().data(), bn.running_var().data() + 3);
    out.insert(out.end(), dx.data(), dx.data() + dx.size());
    for (auto& g : gradients(net)) out.insert(out.end(), g.begin(), g.end());
    return out;
  };
  CHECK(run(true) == run(false));  // outputs (masks), running statistics and gradients, bit for bit

  // Recomputing needs the cache of the application it repeats.
  Net net = make();
  Net::Cache fresh;
  Tensor<double> y(dy.shape());
  CHECK_THROWS_WITH(net.forward(x.cview(), y.view(), fresh, {.recompute = true}),
                    Catch::Contains("Dropout: forward(recompute): expected the cache of the application it repeats"));
  // A forward that threw leaves no usable state: backward refuses.
  Tensor<double> dx(x.shape());
  CHECK_THROWS_WITH(net.get<3>().backward(std::get<3>(fresh.parts), dy.cview(), dx.view()),
                    Catch::Contains("backward(): expected a preceding forward()"));
}

}  // namespace

namespace {
// ---- the two-input cell form -----------------------------------------------------------
// z ↦ f(z, u) as a one-input Module of the pair [z | u] (columns), so the
// gradient check covers dz, du and the parameters.
template <class C>
class PairOf {
 public:
  using value_type = double;
  using T = double;
  struct Cache {
    typename C::Cache cell;
    Tensor<T> z, u;
  };
  explicit PairOf(C c, index_t D) : cell_(std::move(c)), D_(D) {}
  Shape output_shape(const Shape& s) const { return Shape{s[0], D_}; }
  void split(ConstView<T> x, Tensor<T>& z, Tensor<T>& u) const {
    const index_t N = x.dim(0);
    z.resize(Shape{N, D_}), u.resize(Shape{N, D_});
    for (index_t i = 0; i < N; ++i)
      for (index_t d = 0; d < D_; ++d) z[i * D_ + d] = x(i, d), u[i * D_ + d] = x(i, D_ + d);
  }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) {
    split(x, c.z, c.u);
    cell_.forward(c.z.cview(), c.u.cview(), y, c.cell, p);
  }
  void infer(ConstView<T> x, View<T> y) {
    Tensor<T> z, u;
    split(x, z, u);
    cell_.infer(z.cview(), u.cview(), y);
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    Tensor<T> dz(c.z.shape()), du(c.u.shape());
    cell_.backward(c.cell, dy, dz.view(), du.view(), g);
    for (index_t i = 0; i < dz.dim(0); ++i)
      for (index_t d = 0; d < D_; ++d) dx(i, d) += dz[i * D_ + d], dx(i, D_ + d) += du[i * D_ + d];
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx) { backward(cache_, dy, dx); }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    cell_.visit(f, prefix);
  }
  C cell_;

 private:
  index_t D_;
  Cache cache_;
};
}  // namespace

TEST_CASE("contract: the two-input cell tanh(z W + u) passes the gradient check for z, u and W", "[contract][cell][gradcheck]") {
  Rng rng(12);
  using TanhCell = Injected<Linear<double>, Tanh<double>>;
  static_assert(Cell<TanhCell>);
  PairOf<TanhCell> pair(TanhCell(Linear<double>(4, 4, rng, false), Tanh<double>{}), 4);
  auto x = gradcheck::random_tensor({3, 8}, 13);
  gradcheck::check(pair, x);

  // The state-only product (empty du, no parameters) leaves W's gradient alone
  // and gives the dz of the full backward.
  TanhCell& cell = pair.cell_;
  const auto z = gradcheck::random_tensor({3, 4}, 14), u = gradcheck::random_tensor({3, 4}, 15),
             dy = gradcheck::random_tensor({3, 4}, 16);
  TanhCell::Cache c;
  Tensor<double> y(Shape{3, 4}), dz1(Shape{3, 4}), dz2(Shape{3, 4}), du(Shape{3, 4});
  cell.forward(z.cview(), u.cview(), y.view(), c);
  prefill_gradients(cell, 17);
  const auto before = gradients(cell);
  cell.backward(c, dy.cview(), dz1.view(), View<double>{}, {.params = false});
  CHECK(gradients(cell) == before);
  cell.backward(c, dy.cview(), dz2.view(), du.view());
  for (index_t i = 0; i < dz1.size(); ++i) CHECK(dz1[i] == dz2[i]);
  Tensor<double> bad(Shape{3, 5});
  CHECK_THROWS_WITH(cell.forward(z.cview(), bad.cview(), y.view(), c), Catch::Contains("Injected: u shape: expected [3, 4], got [3, 5]"));
}

TEST_CASE("stage memory: gradients read as zero after publish and zero_grads, without a zeroing pass for overwriting readers",
          "[contract][memory]") {
  StageMemory<double> mem;
  Tensor<double> v(Shape{2, 3}, 1.0);
  auto application = [&] {
    mem.reset(2, true);
    mem.publish(0, 7, v.cview());
  };
  application();
  for (double& g : mem.grad(0, 7).span()) g = 5;  // a reader adds into it
  application();                                   // the next application: the buffer is stale
  for (double g : mem.grad(0, 7).span()) CHECK(g == 0.0);
  bool fresh = true;
  (void)mem.grad_unzeroed(0, 7, fresh);
  CHECK_FALSE(fresh);  // grad() above already materialised the zeros

  application();
  for (double& g : mem.grad_unzeroed(0, 7, fresh).span()) g = 3;  // fresh: the reader assigns
  CHECK(fresh);
  (void)mem.grad_unzeroed(0, 7, fresh);
  CHECK_FALSE(fresh);  // a second reader adds
  for (double g : mem.grad(0, 7).span()) CHECK(g == 3.0);

  mem.zero_grads();  // repeat a backward
  (void)mem.grad_unzeroed(0, 7, fresh);
  CHECK(fresh);
  mem.zero_grads();
  for (double g : mem.grad(0, 7).span()) CHECK(g == 0.0);
  mem.reset(2, false);
  mem.publish(0, 7, v.cview());
  CHECK_THROWS_AS(mem.grad_unzeroed(0, 7, fresh), shape_error);  // no gradients in inference
}
