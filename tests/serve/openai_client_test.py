"""Drives a running `gemmatune serve` with the official openai client (run by openai_client_test.sh).

The server serves the quick-start demo model (a tiny Gemma 3 trained on examples/demo_chat.jsonl)
with the demo adapter as model `demo`: with the adapter, the trained answer must come back; the
base model (random weights) must not give it.
"""
import argparse
import sys

import openai
from openai import OpenAI

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--base-model", required=True)
    ap.add_argument("--adapter", required=True)
    a = ap.parse_args()
    client = OpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=120)
    msgs = [{"role": "user", "content": QUESTION}]

    # Models: the base and the adapter.
    ids = [m.id for m in client.models.list().data]
    check(a.base_model in ids and a.adapter in ids, f"models.list() has {a.base_model} and {a.adapter}: {ids}")

    # Chat, not streamed, with the adapter: the trained answer.
    r = client.chat.completions.create(model=a.adapter, messages=msgs, temperature=0, max_tokens=32)
    text = r.choices[0].message.content
    check(ANSWER in text, f"chat with the adapter answers {ANSWER!r}: {text!r}")
    check(r.choices[0].finish_reason == "stop", f"finish_reason stop: {r.choices[0].finish_reason}")
    check(r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0 and
          r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, f"usage: {r.usage}")

    # The base model does not know it.
    b = client.chat.completions.create(model=a.base_model, messages=msgs, temperature=0, max_tokens=16)
    check(ANSWER not in (b.choices[0].message.content or ""), f"the base model does not answer it: {b.choices[0].message.content!r}")

    # Streamed, with usage in the last chunk.
    pieces, finish, usage, roles = [], None, None, []
    for chunk in client.chat.completions.create(model=a.adapter, messages=msgs, temperature=0, max_tokens=32, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    streamed = "".join(pieces)
    check(streamed == text, f"the stream gives the same text: {streamed!r}")
    check(len(pieces) > 1, f"the text arrives in several chunks: {len(pieces)}")
    check(roles == ["assistant"], f"one role delta: {roles}")
    check(finish == "stop", f"stream finish_reason stop: {finish}")
    check(usage is not None and usage.completion_tokens == r.usage.completion_tokens, f"stream usage: {usage}")

    # llama.cpp-style adapter list on the base model.
    l = client.chat.completions.create(model=a.base_model, messages=msgs, temperature=0, max_tokens=32,
                                       extra_body={"lora": [{"name": a.adapter, "scale": 1.0}]})
    check(ANSWER in l.choices[0].message.content, f"lora: [{{name: {a.adapter}}}] gives the answer: {l.choices[0].message.content!r}")

    # Completions on the rendered chat prompt (the server adds <bos>), plain and streamed.
    prompt = f"<start_of_turn>user\n{QUESTION}<end_of_turn>\n<start_of_turn>model\n"
    c = client.completions.create(model=a.adapter, prompt=prompt, temperature=0, max_tokens=32)
    check(ANSWER in c.choices[0].text, f"completions with the adapter: {c.choices[0].text!r}")
    cs = "".join(ch.choices[0].text for ch in client.completions.create(model=a.adapter, prompt=prompt, temperature=0,
                                                                        max_tokens=32, stream=True) if ch.choices)
    check(cs == c.choices[0].text, f"streamed completions agree: {cs!r}")

    # Logprobs.
    lp = client.chat.completions.create(model=a.adapter, messages=msgs, temperature=0, max_tokens=8, logprobs=True, top_logprobs=2)
    content = lp.choices[0].logprobs.content
    check(len(content) > 0 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content), "logprobs with top_logprobs=2")

    # Run-time adapter loading from --adapter-dir, then unloading.
    client.post("/load_lora_adapter", body={"lora_name": "copy", "lora_path": "demo-copy"}, cast_to=object)
    check("copy" in [m.id for m in client.models.list().data], "load_lora_adapter adds the model 'copy'")
    r2 = client.chat.completions.create(model="copy", messages=msgs, temperature=0, max_tokens=32)
    check(ANSWER in r2.choices[0].message.content, "the loaded copy answers too")
    client.post("/unload_lora_adapter", body={"lora_name": "copy"}, cast_to=object)
    check("copy" not in [m.id for m in client.models.list().data], "unload_lora_adapter removes it")

    # Errors, as the client raises them.
    try:
        client.chat.completions.create(model="no-such-model", messages=msgs, max_tokens=4)
        check(False, "unknown model raises NotFoundError")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and "no-such-model" in str(e), f"unknown model: 404 NotFoundError ({e})")
    try:
        client.chat.completions.create(model=a.adapter, messages=msgs, temperature=7)
        check(False, "temperature 7 raises BadRequestError")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "temperature" in str(e), f"temperature 7: 400 BadRequestError ({e})")
    try:
        client.post("/load_lora_adapter", body={"lora_name": "x", "lora_path": "../../etc"}, cast_to=object)
        check(False, "a path outside --adapter-dir is refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400, f"load_lora_adapter with '../../etc': 400 ({e})")
    bad = OpenAI(base_url=a.base_url, api_key="wrong-key", max_retries=0)
    try:
        bad.models.list()
        check(False, "a wrong API key raises AuthenticationError")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, f"wrong API key: 401 AuthenticationError ({e})")

    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
