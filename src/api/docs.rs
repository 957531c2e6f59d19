//! `GET /api/docs`: an interactive page for the OpenAPI document. Self-contained (no CDN, no
//! build-time download): it reads `/api/v1/openapi.json` and lets a reader send each request
//! with a bearer token.
//!
//! Its `Content-Security-Policy` admits exactly its own inline script and style (by their SHA-256)
//! and same-origin requests: nothing injected into the page could run.

use std::sync::LazyLock;

use axum::{
    http::{HeaderValue, header},
    response::{Html, IntoResponse},
};

/// Its inline script and style are allowed by their hashes and nothing else (a strict CSP).
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    HeaderValue::from_str(&crate::web::inline_page_csp(PAGE)).unwrap_or(HeaderValue::from_static("default-src 'none'"))
});

pub(super) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_SECURITY_POLICY, CSP.clone()),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        Html(PAGE),
    )
}

const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Suroga Stream API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:980px;padding:1rem;color:#222}
h1{font-size:1.4rem} .op{border:1px solid #ccd;border-radius:6px;margin:.6rem 0}
.op>summary{cursor:pointer;padding:.5rem;list-style:none} .m{display:inline-block;width:4.5rem;font-weight:700;text-transform:uppercase}
.get .m{color:#1769aa}.post .m{color:#2e7d32}.delete .m{color:#c62828} .op form{padding:.5rem 1rem}
label{display:block;margin:.3rem 0} input,textarea{font:13px monospace;width:100%;box-sizing:border-box}
pre{background:#f5f5f8;padding:.5rem;overflow:auto;max-height:24rem} code{font-size:13px}
</style></head><body>
<h1>Suroga Stream API</h1>
<p id="desc"></p>
<label>Bearer token (<code>suroga token --sub alice</code>) <input id="token" placeholder="eyJ..."></label>
<div id="ops">Loading <code>/api/v1/openapi.json</code>…</div>
<script>
"use strict";
const el = (t, a = {}, ...kids) => { const e = document.createElement(t); Object.assign(e, a); e.append(...kids); return e; };
fetch("/api/v1/openapi.json").then(r => r.json()).then(doc => {
  document.getElementById("desc").textContent = doc.info.description || "";
  const ops = document.getElementById("ops"); ops.textContent = "";
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get","post","put","patch","delete"].includes(method)) continue;
      const params = (op.parameters || []).filter(p => p.in !== "header");
      const form = el("form");
      const inputs = params.map(p => { const i = el("input", {name: p.name, placeholder: p.in + (p.required ? ", required" : "")});
        form.append(el("label", {}, p.name + " ", i)); return [p, i]; });
      let body = null;
      if (op.requestBody) { body = el("textarea", {rows: 5, value: "{\n}"}); form.append(el("label", {}, "JSON body", body)); }
      const out = el("pre");
      form.append(el("button", {type: "submit"}, "Send"), out);
      form.onsubmit = async ev => {
        ev.preventDefault();
        let url = path; const q = new URLSearchParams();
        for (const [p, i] of inputs) { if (!i.value) continue;
          if (p.in === "path") url = url.replace("{" + p.name + "}", encodeURIComponent(i.value)); else q.append(p.name, i.value); }
        if ([...q].length) url += "?" + q;
        const headers = {}; const tok = document.getElementById("token").value.trim();
        if (tok) headers.Authorization = "Bearer " + tok;
        if (body) headers["Content-Type"] = "application/json";
        const r = await fetch(url, {method: method.toUpperCase(), headers, body: body ? body.value : undefined});
        const text = await r.text(); let shown = text; try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) {}
        out.textContent = r.status + " " + r.statusText + "\n\n" + shown;
      };
      const responses = Object.entries(op.responses || {}).map(([c, r]) => c + (r.description ? " " + r.description : "")).join("\n");
      ops.append(el("details", {className: "op " + method},
        el("summary", {}, el("span", {className: "m"}, method), el("code", {}, path), " ", op.summary || ""),
        el("div", {style: "padding:0 1rem"}, el("p", {}, op.description || ""), el("pre", {}, responses)), form));
    }
  }
}).catch(e => { document.getElementById("ops").textContent = "Could not load the OpenAPI document: " + e; });
</script></body></html>
"##;
