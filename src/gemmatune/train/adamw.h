// AdamW with decoupled weight decay, as torch.optim.AdamW computes it (amsgrad off):
//   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
//   p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)
// State is f32 like the parameters; the update arithmetic is done in double and rounded once.
#pragma once
#include <cstdint>
#include <vector>

namespace gt {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

class AdamW {
 public:
  explicit AdamW(const AdamWConfig& c) : c_(c) {}
  // One step over every tensor: params[i] -= update(grads[i]). Shapes must not change between steps.
  void step(std::vector<std::vector<float>*> params, const std::vector<std::vector<float>>& grads, double lr);
  int64_t steps() const { return t_; }
  const AdamWConfig& config() const { return c_; }
  // State for checkpoints.
  std::vector<std::vector<float>>& m() { return m_; }
  std::vector<std::vector<float>>& v() { return v_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  AdamWConfig c_;
  int64_t t_ = 0;
  std::vector<std::vector<float>> m_, v_;
};

}  // namespace gt
