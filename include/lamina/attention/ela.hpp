#pragma once
// The ELA schedule (spec/layer_attention.md §5 step 6, §7): plain layer
// attention for the first w epochs (default 10 % of the epochs, at least 1),
// then an EBQM decision after every epoch on the epoch means of D_t; a skipped
// block stays skipped and is no longer measured. Register the LayerAttention
// blocks in network order (add_stage for each Stage, with its stage id); the
// schedule keeps pointers to their Control, so register after the model has
// reached its final place in memory.
#include <cmath>
#include <limits>
#include <vector>

#include "lamina/attention/ebqm.hpp"
#include "lamina/attention/layer_attention.hpp"
#include "lamina/core/stage.hpp"

namespace lamina::attention {

struct ScheduleOptions {
  index_t epochs = 10;  ///< planned epochs (sets the default warm-up)
  index_t warmup = 0;   ///< w; 0 = max(1, epochs / 10)
  EbqmOptions ebqm{};
};

/// What one epoch's end recorded: per registered block, in network order.
struct EpochRecord {
  index_t epoch = 0;
  bool decided = false;
  std::vector<double> D;   ///< epoch mean of D_t (NaN: not measured)
  std::vector<double> u;   ///< u_t of the decision (NaN: not a candidate or no decision)
  std::vector<char> skip;  ///< skip set after this epoch
};

template <class T>
class ElaSchedule {
 public:
  explicit ElaSchedule(const ScheduleOptions& o = {}) : o_(o) {
    validate(o.ebqm);
    require(o.epochs >= 1, "ElaSchedule", "epochs", ">= 1", o.epochs);
    require(o.warmup >= 0, "ElaSchedule", "warmup", ">= 0", o.warmup);
  }
  index_t warmup() const noexcept { return o_.warmup > 0 ? o_.warmup : std::max<index_t>(1, o_.epochs / 10); }
  /// True when end_epoch(epoch) decides (epoch counted from 0).
  bool decides_after(index_t epoch) const noexcept { return epoch + 1 >= warmup(); }
  std::size_t size() const noexcept { return blocks_.size(); }

  void add(index_t stage, Control<T>& c) {
    stage_.push_back(stage);
    blocks_.push_back(&c);
  }
  template <class Block>
  void add_stage(index_t stage, Stage<LayerAttention<Block>>& s) {
    for (auto& b : s) add(stage, b.control());
  }

  /// Call after each epoch: records the epoch means of D, decides when due,
  /// applies new skips and clears the meters.
  EpochRecord end_epoch(index_t epoch) {
    const std::size_t nb = blocks_.size();
    EpochRecord rec{epoch, decides_after(epoch), std::vector<double>(nb, nan()), std::vector<double>(nb, nan()), {}};
    for (std::size_t b = 0; b < nb; ++b) rec.D[b] = blocks_[b]->meter.mean();
    if (rec.decided) decide(rec);
    for (Control<T>* c : blocks_) c->meter.reset();
    rec.skip.resize(nb);
    for (std::size_t b = 0; b < nb; ++b) rec.skip[b] = blocks_[b]->skipped();
    return rec;
  }

 private:
  static double nan() noexcept { return std::numeric_limits<double>::quiet_NaN(); }
  // Candidates: measured, eligible, not yet skipped.
  void decide(EpochRecord& rec) {
    const std::size_t nb = blocks_.size();
    std::vector<index_t> cand, streak(nb);
    std::vector<double> D;
    std::vector<char> skipped(nb);
    for (std::size_t b = 0; b < nb; ++b) {
      skipped[b] = blocks_[b]->skipped();
      streak[b] = index_t(blocks_[b]->streak[0]);
      const bool first = detail::first_of_stage(stage_, index_t(b));
      if (!first && !skipped[b] && blocks_[b]->meter.steps > 0) {
        cand.push_back(index_t(b));
        D.push_back(rec.D[b]);
      }
    }
    const EbqmResult r = ebqm_decide({.stage = stage_, .cand_block = cand, .D = D, .skipped = skipped, .streak = streak}, o_.ebqm);
    for (std::size_t b = 0; b < nb; ++b) {
      blocks_[b]->streak[0] = T(streak[b]);
      if (r.skip[b]) blocks_[b]->set_skipped(true);
    }
    for (std::size_t i = 0; i < r.u.size(); ++i) rec.u[std::size_t(cand[i])] = r.u[i];
  }

  ScheduleOptions o_;
  std::vector<index_t> stage_;
  std::vector<Control<T>*> blocks_;
};

}  // namespace lamina::attention
