// AWS Signature Version 4 in the browser, with WebCrypto (crypto.subtle: HMAC-SHA256, SHA-256).
// crypto.subtle exists only in secure contexts: https, or http on 127.0.0.1 / localhost.
// The console signs every data request it makes exactly as an AWS SDK would; spillway checks
// the signature, the key and the caller's IAM policies as for any other client.
"use strict";

(function (global) {
  const enc = new TextEncoder();

  function hex(buf) {
    return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function sha256Hex(text) {
    return hex(await crypto.subtle.digest("SHA-256", enc.encode(text)));
  }

  async function hmac(key, text) {
    const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return crypto.subtle.sign("HMAC", k, enc.encode(text));
  }

  // RFC 3986 percent-encoding of everything but unreserved characters, as SigV4 requires.
  function uriEncode(s) {
    return Array.from(enc.encode(s), (b) => {
      const c = String.fromCharCode(b);
      return /[A-Za-z0-9\-_.~]/.test(c) ? c : "%" + b.toString(16).toUpperCase().padStart(2, "0");
    }).join("");
  }

  // "20261130T131500Z" and "20261130" of a Date.
  function stamps(now) {
    const iso = now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
    return { amzDate: iso, day: iso.slice(0, 8) };
  }

  /**
   * Signs a request; returns the headers to send (besides Host, which the browser sets to
   * location.host, the value signed here).
   *   req: { method, segments: [path segments, unencoded], query: [[k, v], ...], headers: {}, body: "" }
   *   creds: { accessKeyId, secret, region }, service: "sagemaker" | "monitoring" | "spillway"
   * Returns { url, headers }.
   */
  async function sign(req, creds, service, now) {
    const { amzDate, day } = stamps(now || new Date());
    const body = req.body || "";
    const wirePath = "/" + (req.segments || []).map(uriEncode).join("/");
    // Non-S3 services sign the path with each (already encoded) segment encoded again.
    const canonicalPath = "/" + (req.segments || []).map((s) => uriEncode(uriEncode(s))).join("/");
    const query = (req.query || []).map(([k, v]) => [uriEncode(k), uriEncode(String(v))]);
    const wireQuery = query.map(([k, v]) => k + "=" + v).join("&");
    const canonicalQuery = query
      .slice()
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
      .map(([k, v]) => k + "=" + v)
      .join("&");
    const headers = {};
    // SigV4's Trimall: no leading or trailing space, runs of spaces as one.
    for (const [k, v] of Object.entries(req.headers || {})) headers[k.toLowerCase()] = String(v).trim().replace(/\s+/g, " ");
    headers["host"] = global.location.host;
    headers["x-amz-date"] = amzDate;
    const names = Object.keys(headers).sort();
    const canonicalHeaders = names.map((n) => n + ":" + headers[n] + "\n").join("");
    const signedHeaders = names.join(";");
    const payloadHash = await sha256Hex(body);
    const canonical = [req.method, canonicalPath, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash].join("\n");
    const scope = `${day}/${creds.region}/${service}/aws4_request`;
    const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, await sha256Hex(canonical)].join("\n");
    let key = await hmac(enc.encode("AWS4" + creds.secret), day);
    key = await hmac(key, creds.region);
    key = await hmac(key, service);
    key = await hmac(key, "aws4_request");
    const signature = hex(await hmac(key, toSign));
    const out = {};
    for (const n of names) if (n !== "host") out[n] = headers[n];
    out["authorization"] =
      `AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
    return { url: wirePath + (wireQuery ? "?" + wireQuery : ""), headers: out };
  }

  // The same request, unsigned (for a server with [auth] mode = "none").
  function unsigned(req) {
    const wirePath = "/" + (req.segments || []).map(uriEncode).join("/");
    const wireQuery = (req.query || []).map(([k, v]) => uriEncode(k) + "=" + uriEncode(String(v))).join("&");
    return { url: wirePath + (wireQuery ? "?" + wireQuery : ""), headers: Object.assign({}, req.headers || {}) };
  }

  global.SigV4 = { sign, unsigned, uriEncode, sha256Hex };
})(window);
