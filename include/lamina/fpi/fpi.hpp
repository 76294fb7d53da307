#pragma once
// FPI layers (spec/fpi_dynalay.md §1–3): options, solvers, cells, backward modes.
#include "lamina/fpi/adjoint.hpp"
#include "lamina/fpi/anderson.hpp"
#include "lamina/fpi/broyden.hpp"
#include "lamina/fpi/cell.hpp"
#include "lamina/fpi/layer.hpp"
#include "lamina/fpi/options.hpp"
#include "lamina/fpi/picard.hpp"
#include "lamina/fpi/report.hpp"
#include "lamina/fpi/solve.hpp"
#include "lamina/fpi/spectral_linear.hpp"
#include "lamina/fpi/unrolled.hpp"
