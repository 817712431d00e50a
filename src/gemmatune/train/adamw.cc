#include "gemmatune/train/adamw.h"

#include <cmath>

#include "gemmatune/util/error.h"

namespace gt {

void AdamW::step(std::vector<std::vector<float>*> params, const std::vector<std::vector<float>>& grads, double lr) {
  GT_CHECK(params.size() == grads.size(), "AdamW: ", params.size(), " parameter tensors but ", grads.size(), " gradients");
  if (m_.empty()) {
    for (auto* p : params) {
      m_.emplace_back(p->size(), 0.0f);
      v_.emplace_back(p->size(), 0.0f);
    }
  }
  GT_CHECK(m_.size() == params.size(), "AdamW: the set of parameters changed between steps");
  ++t_;
  const double bc1 = 1.0 - std::pow(c_.beta1, double(t_));
  const double bc2 = 1.0 - std::pow(c_.beta2, double(t_));
  const double step_size = lr / bc1, sqrt_bc2 = std::sqrt(bc2), decay = 1.0 - lr * c_.weight_decay;
  for (size_t i = 0; i < params.size(); ++i) {
    std::vector<float>& p = *params[i];
    const std::vector<float>& g = grads[i];
    GT_CHECK(p.size() == g.size() && p.size() == m_[i].size(), "AdamW: tensor ", i, " changed size");
    float* m = m_[i].data();
    float* v = v_[i].data();
#pragma omp parallel for schedule(static) if (p.size() > 65536)
    for (size_t j = 0; j < p.size(); ++j) {
      const double gj = g[j];
      const double mj = c_.beta1 * m[j] + (1.0 - c_.beta1) * gj;
      const double vj = c_.beta2 * v[j] + (1.0 - c_.beta2) * gj * gj;
      m[j] = float(mj);
      v[j] = float(vj);
      double pj = double(p[j]) * decay;
      pj -= step_size * double(m[j]) / (std::sqrt(double(v[j])) / sqrt_bc2 + c_.eps);
      p[j] = float(pj);
    }
  }
}

}  // namespace gt
