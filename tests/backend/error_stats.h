// Error accounting for comparisons against float64 references that can never be fooled by NaN:
// a NaN or infinity anywhere makes the worst error infinite.
#pragma once

#include <cmath>
#include <limits>

namespace lockstep::backend_test {

// Unit roundoff of float32.
inline constexpr double kU32 = 1.0 / double(1 << 24);

struct WorstError {
  double worst_excess = 0;  // max over elements of |got - want| / tol (<= 1 passes)
  double worst_abs = 0;     // max |got - want|
  bool non_finite = false;

  void add(double got, double want, double tol) {
    if (!std::isfinite(got) || !std::isfinite(want)) {
      non_finite = true;
      return;
    }
    const double e = std::fabs(got - want);
    if (e > worst_abs) worst_abs = e;
    const double ratio = tol > 0 ? e / tol : (e > 0 ? std::numeric_limits<double>::infinity() : 0);
    if (ratio > worst_excess) worst_excess = ratio;
  }
  // The ratio to assert <= 1; infinite when anything was not finite.
  double excess() const {
    return non_finite ? std::numeric_limits<double>::infinity() : worst_excess;
  }
  double abs() const { return non_finite ? std::numeric_limits<double>::infinity() : worst_abs; }
};

}  // namespace lockstep::backend_test
