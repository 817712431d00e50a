// The projections of a decoder layer that LoRA can adapt, named as PEFT names them. One enum
// replaces string lists and magic indices everywhere (decoder activations, LoRA views, adapter
// modules, target matching): the order is the order modules are kept in, layer by layer.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace gt {

enum class Proj : uint8_t {
  q_proj,
  k_proj,
  v_proj,
  o_proj,
  gate_proj,
  up_proj,
  down_proj,
  experts_gate_up_proj,  // MoE routed experts, fused [E, 2I, H] (PEFT target_parameters)
  experts_down_proj,     // [E, H, I]
};

inline constexpr int kNumProj = 9;
inline constexpr int kNumLinearProj = 7;  // q .. down: nn.Linear modules; the rest are expert parameters

inline constexpr std::array<Proj, kNumProj> kAllProj = {Proj::q_proj,    Proj::k_proj,  Proj::v_proj,
                                                        Proj::o_proj,    Proj::gate_proj, Proj::up_proj,
                                                        Proj::down_proj, Proj::experts_gate_up_proj,
                                                        Proj::experts_down_proj};

inline constexpr int proj_index(Proj p) { return int(p); }
inline constexpr bool is_expert_proj(Proj p) { return int(p) >= kNumLinearProj; }

// PEFT's name: "q_proj" ... "down_proj", "experts.gate_up_proj", "experts.down_proj".
constexpr std::string_view proj_name(Proj p) {
  constexpr std::array<std::string_view, kNumProj> names = {
      "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "experts.gate_up_proj",
      "experts.down_proj"};
  return names[size_t(p)];
}

// The inverse of proj_name; nullopt for anything else.
constexpr std::optional<Proj> proj_from_name(std::string_view name) {
  for (Proj p : kAllProj)
    if (proj_name(p) == name) return p;
  return std::nullopt;
}

}  // namespace gt
