#pragma once
// The command-line flags every experiment program shares (E1, E2): data,
// subset sizes, seeds, epochs, variants, optimisation, timing, resume control
// and output folder. Each program adds its own flags after these.
#include <cxxopts.hpp>

#include <string>

#include "lamina/data/dataset.hpp"

namespace examples {

/// The defaults a program's help states (quick run / --full).
struct SharedDefaults {
  std::string program = "";   ///< "laurel_e1": the output folders are results/<program>[_full]
  std::string variants = "";  ///< every variant, comma-separated (the default selection)
  long epochs = 1;            ///< quick-run epochs (--full: 10)
  long train_limit = 4096;    ///< quick-run training images (--full: all)
  long test_limit = 2000;     ///< quick-run test images (--full: all)
  std::string epochs_note = "";  ///< appended to the --epochs help, e.g. "; ELA decides after the warm-up"
};

inline void add_shared_options(cxxopts::Options& cli, const SharedDefaults& d) {
  const std::string n = std::to_string(d.epochs), tr = std::to_string(d.train_limit), te = std::to_string(d.test_limit);
  cli.add_options()
    ("data", "Fashion-MNIST folder",
     cxxopts::value<std::string>()->default_value(lamina::data::default_fashion_mnist_dir().string()))
    ("full", "the full run: all images, 10 epochs, 3 seeds, 7 timing rounds")
    ("epochs", "epochs (default " + n + ", or 10 with --full" + d.epochs_note + ")", cxxopts::value<long>())
    ("seeds", "seeds per variant (default 1, or 3 with --full)", cxxopts::value<long>())
    ("train-limit", "first N training images (0 = all; default " + tr + ", or all with --full)", cxxopts::value<long>())
    ("test-limit", "first N test images (0 = all; default " + te + ", or all with --full)", cxxopts::value<long>())
    ("variants", "comma-separated subset of: " + d.variants, cxxopts::value<std::string>()->default_value(d.variants))
    ("batch", "batch size", cxxopts::value<long>()->default_value("128"))
    ("lr", "base learning rate (cosine per step)", cxxopts::value<double>()->default_value("0.1"))
    ("threads", "threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))
    ("timing-rounds", "interleaved timing rounds (0 = no timing; default 3, or 7 with --full)", cxxopts::value<long>())
    ("timing-steps", "training steps per variant and round", cxxopts::value<long>()->default_value("10"))
    ("train-only", "train the runs not yet recorded, then stop (no timing, no summary)")
    ("no-train", "train nothing: time the variants and summarise the runs already recorded")
    ("fresh", "ignore the runs already recorded in <out>/runs.json")
    ("out", "output folder (default results/" + d.program + ", or results/" + d.program +
                "_full with --full: the recorded full run, resumed)",
     cxxopts::value<std::string>())
    ("h,help", "show this help");
}

}  // namespace examples
