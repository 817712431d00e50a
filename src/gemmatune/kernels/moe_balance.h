// MaxText's MoE load-balance auxiliary loss for one layer (RoutedMoE.load_balance_loss), a
// per-sequence Switch-style loss, with its backward:
//   f[b, e] = mean over the tokens s of row b of Σ_k [topk[s, k] = e]   (not differentiable)
//   P[b, e] = mean over the tokens s of row b of probs[s, e]            (router softmax)
//   loss    = mean_{b,e} f[b, e]·P[b, e] · E² · weight  =  weight·E/B · Σ_b Σ_e f[b, e]·P[b, e]
// Rows are the batch rows (packed rows count as one row, as in MaxText).
#pragma once
#include <cstdint>
#include <vector>

namespace gt {

// probs [T, E], topk [T, K]; rows: token offsets of the B batch rows, rows[0] = 0 ... rows[B] = T.
// Returns the loss; coef [B, E] receives ∂loss/∂P[b, e] = weight·E/B · f[b, e].
double moe_balance_forward(const float* probs, const int32_t* topk, int64_t E, int64_t K,
                           const std::vector<int64_t>& rows, double weight, std::vector<double>& coef);
// dprobs[t, e] += scale · coef[b(t), e] / (tokens of row b): the gradient of scale·loss.
void moe_balance_backward(const std::vector<double>& coef, int64_t E, const std::vector<int64_t>& rows, double scale,
                          float* dprobs);

}  // namespace gt
