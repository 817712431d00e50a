#!/usr/bin/env python3
"""Cross-check: what gemmatune writes must load in Hugging Face transformers and PEFT and compute
what gemmatune computes.  Optional tooling, never part of the build or the required tests.

For every `init-model` preset (the big ones scaled down with --layers/--vocab, keeping their real
per-layer shapes) it
  1. checks every config.json field against the type transformers declares for it (the dataclass
     annotations of Gemma3TextConfig / Gemma4TextConfig / Gemma4Config),
  2. loads the folder with transformers (no missing or unexpected text weights allowed) and compares
     its float32 logits and greedy tokens with `gemmatune golden` on the same ids;
and for the tiny presets it also
  3. LoRA-trains a few steps with `gemmatune train`, loads the adapter with PEFT
     (`PeftModel.from_pretrained`, routed-expert LoRA included) and compares logits and greedy tokens
     with `gemmatune golden --parts lora`,
  4. merges it with `gemmatune merge` and loads the merged folder with transformers: same logits as PEFT.

Setup (a virtualenv outside the build):
    python3 -m venv /work/venv/hf && /work/venv/hf/bin/pip install torch transformers peft safetensors
    /work/venv/hf/bin/python scripts/crosscheck_hf.py --gemmatune build/gemmatune [--presets tiny,...]
Exit status 0 when every check passes; one line per check.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import types
import typing

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (preset, init-model extra args, can train an adapter with the real tokenizer)
PRESETS = {
    "tiny": ([], True),
    "gemma4-tiny": ([], True),
    "gemma4-tiny-moe": ([], True),
    "gemma3-270m": (["--layers", "6", "--vocab", "2048"], False),
    "gemma3-1b": (["--layers", "6", "--vocab", "2048"], False),
    "gemma3-4b": (["--layers", "2", "--vocab", "2048"], False),
    "gemma4-e2b": (["--layers", "10", "--vocab", "2048"], False),  # 10 layers keep KV sharing
    "gemma4-e4b": (["--layers", "12", "--vocab", "2048"], False),
    "gemma4-26b-a4b": (["--layers", "2", "--vocab", "2048"], False),
    "gemma4-31b": (["--layers", "2", "--vocab", "2048"], False),
}

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def run(cmd):
    # Exact mode: the f32 GEMM kernels (the bf16-input kernel, chosen automatically on some CPUs for
    # bf16 weights, rounds activations and is compared with its own derived tolerance in the tests).
    env = dict(os.environ, GEMMATUNE_PRECISION="f32")
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(" ".join(cmd) + " failed:\n" + r.stdout[-4000:])
    return r.stdout


def type_matches(value, ann):
    """Does a JSON value have the type a transformers config annotation declares?"""
    if ann is typing.Any:
        return True
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return any(type_matches(value, a) for a in typing.get_args(ann))
    if origin is typing.Literal:
        return value in typing.get_args(ann)
    if ann is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(ann)
        return isinstance(value, list) and (not args or all(type_matches(v, args[0]) for v in value))
    if origin is dict or ann is dict:
        return isinstance(value, dict)
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return isinstance(value, str)
    return True  # classes (sub-configs, torch.dtype): checked by loading


def annotations(cls):
    out = {}
    for k in reversed(cls.__mro__):
        out.update(getattr(k, "__annotations__", {}))
    return {k: v for k, v in out.items() if typing.get_origin(v) is not typing.ClassVar}


def check_config_types(folder, name):
    from transformers import Gemma3TextConfig
    from transformers.models.gemma4.configuration_gemma4 import Gemma4Config, Gemma4TextConfig

    cfg = json.load(open(os.path.join(folder, "config.json")))
    pairs = [(cfg, Gemma3TextConfig)] if cfg.get("model_type") == "gemma3_text" else [(cfg, Gemma4Config), (cfg.get("text_config", {}), Gemma4TextConfig)]
    bad = []
    for obj, cls in pairs:
        ann = annotations(cls)
        for k, v in obj.items():
            if k in ann and not type_matches(v, ann[k]):
                bad.append(f"{cls.__name__}.{k} = {v!r} (declared {ann[k]})")
    check(not bad, f"{name}: config.json field types match transformers' declarations" + ("" if not bad else ": " + "; ".join(bad)))


def load_hf(folder):
    from transformers import AutoConfig, AutoModelForCausalLM, Gemma4ForConditionalGeneration

    cfg = AutoConfig.from_pretrained(folder)
    cls = Gemma4ForConditionalGeneration if cfg.model_type == "gemma4" else AutoModelForCausalLM
    model, info = cls.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    model.eval()
    missing = sorted(k for k in info["missing_keys"] if "vision" not in k and "audio" not in k)
    return model, missing, sorted(info["unexpected_keys"])


def hf_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long)).logits.float().numpy()


def hf_greedy(model, prompt, steps):
    """Plain argmax decoding for `steps` tokens (no eos handling, no logits processors), with the cache."""
    with torch.no_grad():
        ids = torch.tensor(prompt, dtype=torch.long)
        out = model(input_ids=ids, use_cache=True)
        picked = []
        for _ in range(steps):
            nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
            picked.append(nxt)
            out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
    return torch.cat(picked, dim=1).numpy()


def make_fixture(work, model_dir, ids, prompt, steps, adapter=None):
    """A folder `gemmatune golden` reads: model/, golden.json, golden.safetensors (+ adapter/)."""
    fx = tempfile.mkdtemp(dir=work, prefix="fx-")
    os.symlink(os.path.abspath(model_dir), os.path.join(fx, "model"))
    if adapter:
        os.symlink(os.path.abspath(adapter), os.path.join(fx, "adapter"))
    json.dump({"greedy": {"new_tokens": steps}}, open(os.path.join(fx, "golden.json"), "w"))
    save_file({"input_ids": np.array(ids, dtype=np.int32), "greedy_prompt_ids": np.array(prompt, dtype=np.int32)},
              os.path.join(fx, "golden.safetensors"))
    return fx


def ours(gt, fx, parts, work):
    out = os.path.join(work, "ours.safetensors")
    run([gt, "golden", fx, "--parts", parts, "--out", out, "--threads", "2"])
    return load_file(out)


def compare_logits(name, a, b):
    scale = max(1.0, float(np.abs(b).max()))
    err = float(np.abs(a - b).max())
    check(err <= 1e-4 * scale + 1e-4, f"{name}: max |logits - transformers| = {err:.2e} (logit scale {scale:.1f})")


def one_preset(gt, preset, work, steps):
    extra, trainable = PRESETS[preset]
    d = os.path.join(work, preset)
    mdir = os.path.join(d, "model")
    tok = os.path.join(work, "tokenizer.json")
    args = [gt, "init-model", "--preset", preset, "--out", mdir, "--seed", "7", "--dtype", "f32"] + extra
    if trainable:
        args += ["--tokenizer", tok, "--chat-template", os.path.join(ROOT, "tests/data/assets/gemma3_chat_template.jinja")]
    run(args)
    check_config_types(mdir, preset)
    try:
        model, missing, unexpected = load_hf(mdir)
    except Exception as e:  # noqa: BLE001 - report what transformers said
        check(False, f"{preset}: transformers loads the init-model folder: {type(e).__name__}: {e}")
        return
    check(not missing and not unexpected, f"{preset}: transformers loads the folder (missing {missing[:3]}, unexpected {unexpected[:3]})")
    V = model.config.get_text_config().vocab_size
    rng = np.random.default_rng(11)
    ids = rng.integers(3, V, size=(2, 12)).tolist()
    prompt = rng.integers(3, V, size=(1, 6)).tolist()
    fx = make_fixture(d, mdir, ids, prompt, steps)
    g = ours(gt, fx, "forward,greedy", d)
    compare_logits(preset, g["logits"], hf_logits(model, ids))
    hg = hf_greedy(model, prompt, steps)
    check(np.array_equal(g["greedy_ids"], hg), f"{preset}: greedy tokens equal transformers' {hg[0].tolist()}")
    del model
    if not trainable:
        return

    # The bf16 folder (init-model's default dtype): loads, and computes the same in f32 over bf16 weights.
    bdir = os.path.join(d, "model-bf16")
    run([gt, "init-model", "--preset", preset, "--out", bdir, "--seed", "7"] + extra)
    check_config_types(bdir, preset + " bf16")
    bm, missing, unexpected = load_hf(bdir)
    check(not missing and not unexpected, f"{preset}: transformers loads the bf16 folder")
    g = ours(gt, make_fixture(d, bdir, ids, prompt, steps), "forward", d)
    compare_logits(preset + " bf16", g["logits"], hf_logits(bm, ids))
    del bm

    # Adapter written by `train` -> PEFT.
    run_dir = os.path.join(d, "run")
    data = os.path.join(ROOT, "examples", "demo_chat.jsonl")
    run([gt, "train", "--model", mdir, "--data", data, "--out", run_dir, "--threads", "2",
         "max_len=48", "batch_rows=2", "lora_r=4", "lora_alpha=8", "lr=0.05", "schedule=constant", "warmup_steps=0",
         "steps=3", "log_every=1", "save_every=3", "seed=1"])
    adir = os.path.join(run_dir, "adapter")
    from peft import PeftModel

    base, _, _ = load_hf(mdir)
    try:
        pm = PeftModel.from_pretrained(base, adir)
        pm.eval()
    except Exception as e:  # noqa: BLE001
        check(False, f"{preset}: PEFT loads the trained adapter: {type(e).__name__}: {e}")
        return
    fx = make_fixture(d, mdir, ids, prompt, steps, adapter=adir)
    g = ours(gt, fx, "lora", d)
    peft_logits = hf_logits(pm, ids)
    compare_logits(preset + " + adapter (PEFT)", g["lora_logits"], peft_logits)
    hg = hf_greedy(pm, prompt, steps)
    check(np.array_equal(g["lora_greedy_ids"], hg), f"{preset} + adapter: greedy tokens equal PEFT's {hg[0].tolist()}")
    del pm, base

    # `merge` -> transformers.
    merged = os.path.join(d, "merged")
    run([gt, "merge", "--model", mdir, "--adapter", adir, "--out", merged, "--force", "--threads", "2"])
    check_config_types(merged, preset + " merged")
    mm, missing, unexpected = load_hf(merged)
    check(not missing and not unexpected, f"{preset}: transformers loads the merged folder")
    compare_logits(preset + " merged vs PEFT", hf_logits(mm, ids), peft_logits)


def demo_check(gt, demo):
    """The quick-start demo (scripts/demo.sh): its adapter through PEFT and its merged folder answer the
    trained question with the same greedy tokens as `gemmatune generate`."""
    from peft import PeftModel
    from transformers import PreTrainedTokenizerFast

    mdir, adir = os.path.join(demo, "tiny-gemma3"), os.path.join(demo, "run", "adapter")
    # Gemma's special tokens (the folder has no tokenizer_config.json): the template renders {{ bos_token }}.
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(mdir, "tokenizer.json"), bos_token="<bos>",
                                  eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = open(os.path.join(mdir, "chat_template.jinja")).read()
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    n = 12
    out = run([gt, "generate", "--model", mdir, "--adapter", adir, "--prompt-ids", ",".join(map(str, ids)),
               "--greedy", "--max-new-tokens", str(n), "--ignore-eos", "--show-special"])
    base, _, _ = load_hf(mdir)
    pm = PeftModel.from_pretrained(base, adir).eval()
    peft_ids = hf_greedy(pm, [ids], n)[0].tolist()
    text = tok.decode(peft_ids)
    check(out.startswith(text), f"demo: PEFT greedy text {text!r} equals gemmatune generate's {out[:len(text) + 10]!r}")
    check("Paris" in text, "demo: the adapter through PEFT gives the trained answer")
    merged = os.path.join(demo, "crosscheck-merged")
    run([gt, "merge", "--model", mdir, "--adapter", adir, "--out", merged, "--force"])
    mm, missing, unexpected = load_hf(merged)
    check(not missing and not unexpected, "demo: transformers loads the merged folder")
    merged_ids = hf_greedy(mm, [ids], n)[0].tolist()
    check(merged_ids == peft_ids, f"demo: merged folder greedy tokens equal PEFT's ({tok.decode(merged_ids)!r})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemmatune", default=os.path.join(ROOT, "build", "gemmatune"))
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated (default: all)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--steps", type=int, default=6, help="greedy tokens compared")
    ap.add_argument("--demo", default=None, help="also check the quick-start demo folder (build/demo after scripts/demo.sh)")
    a = ap.parse_args()
    import peft
    import transformers

    torch.set_num_threads(2)
    print(f"transformers {transformers.__version__}, peft {peft.__version__}, torch {torch.__version__}")
    work = a.work or tempfile.mkdtemp(prefix="gt-crosscheck-")
    os.makedirs(work, exist_ok=True)
    tok = os.path.join(work, "tokenizer.json")
    if not os.path.exists(tok):
        subprocess.run(f"xz -dc '{ROOT}/tests/data/assets/gemma3_tokenizer.json.xz' > '{tok}'", shell=True, check=True)
    if a.demo:
        try:
            demo_check(a.gemmatune, a.demo)
        except Exception as e:  # noqa: BLE001
            check(False, f"demo: {type(e).__name__}: {e}")
    for p in [p for p in a.presets.split(",") if p]:
        if p not in PRESETS:
            sys.exit(f"unknown preset {p}; known: {', '.join(PRESETS)}")
        try:
            one_preset(a.gemmatune, p, work, a.steps)
        except Exception as e:  # noqa: BLE001
            check(False, f"{p}: {type(e).__name__}: {e}")
    print(f"{len(failures)} failed" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
