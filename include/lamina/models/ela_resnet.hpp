#pragma once
// The E1 network with layer attention (spec/experiments.md E2,
// layer_attention.md): n BasicBlocks per stage (E2: n = 4), every block wrapped
// in LayerAttention, so each stage's blocks attend over the stage's earlier
// blocks. Methods: none (the plain ResNet of models/resnet.hpp), MRLA-base,
// ELA (MRLA-base with the redundancy monitor, for attention::ElaSchedule) and
// MRLA-light. The attention weights are drawn after each block's body, so for
// one seed the bodies differ from the plain network's: compare methods over
// seeds.
#include "lamina/attention/ela.hpp"
#include "lamina/attention/layer_attention.hpp"
#include "lamina/models/resnet.hpp"

namespace lamina {

namespace attention {
enum class Method { none, mrla_base, ela, mrla_light };

/// Branch options of a method that has layer attention.
inline Options options_of(Method m, const Options& base = {}) {
  require(m != Method::none, "ElaResNet", "method", "one with layer attention", "none");
  Options o = base;
  o.branch.variant = m == Method::mrla_light ? Variant::light : Variant::base;
  o.branch.monitor = m == Method::ela;
  return o;
}
}  // namespace attention

template <class T>
using AttentionBasicBlock = LayerAttention<BasicBlock<T>>;
template <class T>
using ElaResNet = ResNetWith<T, AttentionBasicBlock<T>>;

/// The network of a method with layer attention (Method::none: make_resnet).
template <class T>
ElaResNet<T> make_ela_resnet(const ResNetOptions& o, attention::Method m, Rng& rng, const attention::Options& base = {}) {
  const attention::Options ao = attention::options_of(m, base);
  return make_resnet_with<T>(o, rng, [&](index_t in, index_t out, index_t stride, Rng& r) {
    return AttentionBasicBlock<T>(make_basic_block<T>(in, out, stride, r), out, ao, r);
  });
}

/// Registers the three stages of the network with an ELA schedule (stage ids 0, 1, 2).
template <class T>
void add_stages(attention::ElaSchedule<T>& s, ElaResNet<T>& net) {
  s.add_stage(0, net.template get<resnet_stage_index(0)>());
  s.add_stage(1, net.template get<resnet_stage_index(1)>());
  s.add_stage(2, net.template get<resnet_stage_index(2)>());
}

}  // namespace lamina
