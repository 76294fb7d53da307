#pragma once
// DynaLay (spec/fpi_dynalay.md §4): the model of K FPI layers with its gating
// agent, the policy, options and the three-phase training.
#include "lamina/dynalay/model.hpp"
#include "lamina/dynalay/options.hpp"
#include "lamina/dynalay/policy.hpp"
#include "lamina/dynalay/report.hpp"
#include "lamina/dynalay/train.hpp"
