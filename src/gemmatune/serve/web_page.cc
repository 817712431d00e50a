// The chat page served at /: one static HTML file with its script, embedded in the binary. It talks
// to the same OpenAI API as any client: GET /v1/models for the model/adapter list, then streaming
// POST /v1/chat/completions (SSE read from fetch's body stream).
//
// Query string (for links and the headless-browser test): ?q=TEXT sends TEXT once the model list
// has loaded; model=NAME picks the model or adapter; system=TEXT, temperature=T, thinking=1,
// max_tokens=N and key=API_KEY preset the controls; stream=0 asks for the reply in one piece. When
// a reply ends, #status says "done" and the page's title becomes "gemmatune: done: <the answer>".
#include "gemmatune/serve/server.h"

namespace gt::serve {

const std::string& web_page() {
  static const std::string page = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gemmatune</title>
<style>
  :root { --bg: #f6f7f9; --fg: #1d2330; --muted: #667085; --accent: #2f6fed; --card: #fff; --line: #dde1e8; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--fg); }
  header { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; padding: 10px 16px; background: var(--card); border-bottom: 1px solid var(--line); }
  header h1 { font-size: 17px; margin: 0 12px 0 0; }
  header label { display: flex; gap: 6px; align-items: center; color: var(--muted); font-size: 13px; }
  select, input[type=number], input[type=password], textarea { font: inherit; border: 1px solid var(--line); border-radius: 6px; padding: 4px 6px; background: #fff; }
  #system { width: 100%; min-height: 38px; }
  #sysrow { padding: 8px 16px; background: var(--card); border-bottom: 1px solid var(--line); }
  main { max-width: 880px; margin: 0 auto; padding: 16px; }
  .msg { margin: 10px 0; padding: 10px 14px; border-radius: 10px; background: var(--card); border: 1px solid var(--line); white-space: pre-wrap; word-wrap: break-word; }
  .user { background: #e8f0fe; border-color: #c9dafc; }
  .role { font-size: 12px; color: var(--muted); margin-bottom: 4px; }
  .thought { color: var(--muted); font-style: italic; border-left: 3px solid var(--line); padding-left: 8px; margin-bottom: 6px; }
  .error { color: #b42318; }
  form { display: flex; gap: 8px; max-width: 880px; margin: 0 auto; padding: 0 16px 16px; }
  #input { flex: 1; min-height: 44px; resize: vertical; }
  button { font: inherit; border: 0; border-radius: 6px; padding: 8px 16px; background: var(--accent); color: #fff; cursor: pointer; }
  button:disabled { opacity: .5; }
  #status { font-size: 12px; color: var(--muted); padding: 0 16px 8px; max-width: 880px; margin: 0 auto; }
</style>
</head>
<body>
<header>
  <h1>gemmatune</h1>
  <label>model <select id="model"></select></label>
  <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7" style="width:70px"></label>
  <label>max tokens <input id="max_tokens" type="number" min="1" step="1" value="512" style="width:80px"></label>
  <label><input id="thinking" type="checkbox"> thinking</label>
  <label>API key <input id="key" type="password" style="width:120px"></label>
  <button id="clear" type="button">new chat</button>
</header>
<div id="sysrow"><textarea id="system" placeholder="system prompt (optional)"></textarea></div>
<main id="chat"></main>
<div id="status">ready</div>
<form id="form"><textarea id="input" placeholder="Message (Enter sends, Shift+Enter for a new line)"></textarea><button id="send">Send</button></form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let history = [];
let busy = false;

function headers() {
  const h = {"Content-Type": "application/json"};
  const k = $("key").value || localStorage.getItem("gemmatune_key") || "";
  if (k) h["Authorization"] = "Bearer " + k;
  return h;
}
function status(s) { $("status").textContent = s; }
function bubble(role, text) {
  const d = document.createElement("div");
  d.className = "msg " + role;
  const r = document.createElement("div");
  r.className = "role";
  r.textContent = role;
  d.appendChild(r);
  const t = document.createElement("div");
  t.className = "thought";
  t.style.display = "none";
  d.appendChild(t);
  const c = document.createElement("div");
  c.className = "content";
  c.textContent = text || "";
  d.appendChild(c);
  $("chat").appendChild(d);
  window.scrollTo(0, document.body.scrollHeight);
  return {thought: t, content: c, box: d};
}

async function loadModels() {
  try {
    const r = await fetch("/v1/models", {headers: headers()});
    const j = await r.json();
    if (!r.ok) throw new Error(j.error ? j.error.message : r.statusText);
    const sel = $("model");
    sel.innerHTML = "";
    j.data.forEach((m, i) => {
      const o = document.createElement("option");
      o.value = m.id;
      o.textContent = i === 0 ? m.id + " (base)" : m.id + " (adapter)";
      sel.appendChild(o);
    });
    if (params.get("model")) sel.value = params.get("model");
    status("ready: " + j.data.length + " model(s)");
    return true;
  } catch (e) {
    status("cannot list models: " + e.message);
    return false;
  }
}

async function send(text) {
  if (busy || !text.trim()) return;
  busy = true;
  $("send").disabled = true;
  history.push({role: "user", content: text});
  bubble("user", text);
  const out = bubble("assistant", "");
  const messages = [];
  const sys = $("system").value.trim();
  if (sys) messages.push({role: "system", content: sys});
  messages.push(...history);
  const body = {
    model: $("model").value, messages, stream: params.get("stream") !== "0",
    temperature: parseFloat($("temperature").value), max_tokens: parseInt($("max_tokens").value, 10),
    chat_template_kwargs: {enable_thinking: $("thinking").checked}
  };
  if (body.stream) body.stream_options = {include_usage: true};
  let answer = "", thought = "", finish = "", usage = null;
  const t0 = performance.now();
  status("generating...");
  try {
    const r = await fetch("/v1/chat/completions", {method: "POST", headers: headers(), body: JSON.stringify(body)});
    if (!r.ok) {
      const j = await r.json().catch(() => ({}));
      throw new Error(j.error ? j.error.message : r.status + " " + r.statusText);
    }
    if (!body.stream) {
      const j = await r.json();
      const m = j.choices[0].message;
      if (m.reasoning_content) { out.thought.textContent = m.reasoning_content; out.thought.style.display = ""; }
      answer = m.content || "";
      out.content.textContent = answer;
      finish = j.choices[0].finish_reason;
      usage = j.usage;
    }
    const reader = body.stream ? r.body.getReader() : null;
    const dec = new TextDecoder();
    let buf = "";
    while (reader) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let at;
      while ((at = buf.indexOf("\n\n")) >= 0) {
        const ev = buf.slice(0, at);
        buf = buf.slice(at + 2);
        for (const line of ev.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const j = JSON.parse(data);
          if (j.error) throw new Error(j.error.message);
          if (j.usage) usage = j.usage;
          for (const c of j.choices || []) {
            if (c.delta && c.delta.reasoning_content) {
              thought += c.delta.reasoning_content;
              out.thought.textContent = thought;
              out.thought.style.display = "";
            }
            if (c.delta && c.delta.content) { answer += c.delta.content; out.content.textContent = answer; }
            if (c.finish_reason) finish = c.finish_reason;
          }
        }
      }
      window.scrollTo(0, document.body.scrollHeight);
    }
    history.push({role: "assistant", content: answer});
    const secs = (performance.now() - t0) / 1000;
    status("done: " + (usage ? usage.completion_tokens + " tokens, " : "") + secs.toFixed(1) + " s, finish_reason " + finish);
  } catch (e) {
    out.content.textContent = answer + (answer ? "\n" : "") + "[error] " + e.message;
    out.content.classList.add("error");
    history.pop();
    status("done: error");
  }
  document.title = "gemmatune: done: " + answer.slice(0, 200);
  busy = false;
  $("send").disabled = false;
}

$("form").addEventListener("submit", (e) => { e.preventDefault(); const t = $("input").value; $("input").value = ""; send(t); });
$("input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); } });
$("clear").addEventListener("click", () => { history = []; $("chat").innerHTML = ""; status("new chat"); });
$("key").addEventListener("change", () => { localStorage.setItem("gemmatune_key", $("key").value); loadModels(); });

(async () => {
  if (params.get("key")) $("key").value = params.get("key");
  if (params.get("system")) $("system").value = params.get("system");
  if (params.get("temperature")) $("temperature").value = params.get("temperature");
  if (params.get("max_tokens")) $("max_tokens").value = params.get("max_tokens");
  if (params.get("thinking") === "1") $("thinking").checked = true;
  const ok = await loadModels();
  if (ok && params.get("q")) send(params.get("q"));
  else if (params.get("q")) document.title = "gemmatune: done";
})();
</script>
</body>
</html>
)HTML";
  return page;
}

}  // namespace gt::serve
