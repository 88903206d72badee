#include "parity/metrics.h"

#include <cmath>
#include <limits>

#include "util/error.h"

namespace lockstep {

int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[size_t(best)]) best = int32_t(i);
  return best;
}

LogitComparison compare_logits(std::span<const float> ref, std::span<const float> cand) {
  if (ref.size() != cand.size() || ref.empty())
    throw Error("compare_logits: vectors of different or zero length");
  LogitComparison c;
  const size_t n = ref.size();
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(ref[i]) || !std::isfinite(cand[i])) c.finite = false;
  if (!c.finite) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    c.cosine = c.kl = c.max_abs = nan;
    return c;
  }
  double dot = 0, nr = 0, nc = 0, max_abs = 0;
  double ref_max = -INFINITY, cand_max = -INFINITY;
  for (size_t i = 0; i < n; ++i) {
    const double r = ref[i], k = cand[i];
    dot += r * k;
    nr += r * r;
    nc += k * k;
    max_abs = std::max(max_abs, std::fabs(r - k));
    ref_max = std::max(ref_max, r);
    cand_max = std::max(cand_max, k);
  }
  // Two zero vectors are identical (cosine 1); one zero vector against another is not.
  c.cosine = (nr == 0 || nc == 0) ? (nr == nc ? 1.0 : 0.0) : dot / (std::sqrt(nr) * std::sqrt(nc));
  c.max_abs = max_abs;

  // KL(P_ref || P_cand) = sum p_r (log p_r - log p_c) in double, in one pass of two exp() per
  // entry: with e_r = exp(r - ref_max), z_r = sum e_r (likewise for the candidate),
  //   log p_r - log p_c = (r - c) - (ref_max + log z_r) + (cand_max + log z_c),
  // and sum p_r = 1, so KL = sum e_r (r - c) / z_r - (ref_max + log z_r) + (cand_max + log z_c).
  double zr = 0, zc = 0, weighted = 0;
  for (size_t i = 0; i < n; ++i) {
    const double r = ref[i], k = cand[i];
    const double er = std::exp(r - ref_max);
    zr += er;
    zc += std::exp(k - cand_max);
    weighted += er * (r - k);
  }
  const double kl = weighted / zr - (ref_max + std::log(zr)) + (cand_max + std::log(zc));
  c.kl = std::max(0.0, kl);  // rounding can make an exact match a hair negative

  c.ref_top1 = argmax(ref);
  c.cand_top1 = argmax(cand);
  double second = -INFINITY;
  for (size_t i = 0; i < n; ++i)
    if (int32_t(i) != c.ref_top1) second = std::max(second, double(ref[i]));
  c.ref_margin = n > 1 ? double(ref[size_t(c.ref_top1)]) - second : INFINITY;
  return c;
}

}  // namespace lockstep
