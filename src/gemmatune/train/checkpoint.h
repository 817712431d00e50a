// Training checkpoints: <out>/checkpoints/step-NNNNNNNN/ holds the adapter (PEFT format), the
// AdamW state (optimizer.safetensors) and trainer_state.json (step, data cursor, options, model
// fingerprint). A checkpoint is written into a temporary folder, every file fsync'ed, then the
// folder is renamed into place and the parent fsync'ed: a kill -9 at any moment leaves either the
// previous checkpoints or the new complete one, never a partial "latest".
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gemmatune/lora/adapter.h"
#include "gemmatune/model/model.h"
#include "gemmatune/train/adamw.h"

namespace gt {

struct TrainerState {
  int64_t step = 0;            // optimizer steps done
  std::string data_cursor;     // BatchLoader::save()
  nlohmann::json options;      // the run's options
  std::string model_fingerprint;
  double tokens_seen = 0;
  nlohmann::json extra;        // anything else (e.g. eval history)
};

// A fingerprint of the model: architecture, shapes and dtypes of every tensor (not the values).
std::string model_fingerprint(const Model& m);

void save_checkpoint(const std::string& out_dir, const Model& m, const Adapter& a, AdamW& opt, const TrainerState& st,
                     int64_t keep_last);
// The newest complete checkpoint folder in out_dir, or "" when there is none.
std::string latest_checkpoint(const std::string& out_dir);
// Loads a checkpoint; refuses (clear error) one made for another model or another LoRA setup.
void load_checkpoint(const std::string& ckpt_dir, const Model& m, Adapter& a, AdamW& opt, TrainerState& st);

}  // namespace gt
