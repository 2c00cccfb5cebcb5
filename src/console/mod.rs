//! The read-only web console: one page at `GET /` and its assets under `GET /console/...`, all
//! embedded in the binary (no CDN, no build step; uPlot is vendored under
//! `assets/vendor/uplot/`, with its licence).
//!
//! The assets hold no data and are served without a signature (a browser cannot sign the
//! request that loads a page), but still behind the router's `Host` check (`api::same_origin`),
//! so a rebinding name cannot load them either. Everything the page shows it reads through the
//! ordinary APIs with SigV4-signed requests, signed in the browser (`assets/sigv4.js`) with the
//! key the user types in: the console is no way around authentication or IAM policies.
//!
//! Every answer carries a strict `Content-Security-Policy` (only this server's own scripts,
//! styles and connections; no inline script, no framing), `X-Content-Type-Options: nosniff`
//! and an `ETag` with `Cache-Control: no-cache`, so a browser revalidates (a `304` when nothing
//! changed) and never runs an old page against a newer server.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorCode};

/// One embedded file of the console.
#[derive(Debug)]
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file of the console, by the path it is served at (`/` is the page).
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_bytes!("assets/index.html"),
    },
    Asset {
        path: "/console/app.js",
        content_type: JS,
        body: include_bytes!("assets/app.js"),
    },
    Asset {
        path: "/console/sigv4.js",
        content_type: JS,
        body: include_bytes!("assets/sigv4.js"),
    },
    Asset {
        path: "/console/style.css",
        content_type: CSS,
        body: include_bytes!("assets/style.css"),
    },
    Asset {
        path: "/console/favicon.svg",
        content_type: SVG,
        body: include_bytes!("assets/favicon.svg"),
    },
    Asset {
        path: "/console/vendor/uplot/uPlot.iife.min.js",
        content_type: JS,
        body: include_bytes!("assets/vendor/uplot/uPlot.iife.min.js"),
    },
    Asset {
        path: "/console/vendor/uplot/uPlot.min.css",
        content_type: CSS,
        body: include_bytes!("assets/vendor/uplot/uPlot.min.css"),
    },
    Asset {
        path: "/console/vendor/uplot/LICENSE",
        content_type: TEXT,
        body: include_bytes!("assets/vendor/uplot/LICENSE"),
    },
];

/// The `Content-Security-Policy` of every console answer: scripts, styles, images and
/// connections from this server only, no inline script or style element, no plugins, no
/// framing (clickjacking), no form posts anywhere, no `<base>`.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// The path prefix of the console's assets (the page itself is `/`).
pub const PREFIX: &str = "/console/";

/// Whether a request is for the console's static files: a `GET` or `HEAD` of `/` or of a path
/// under [`PREFIX`]. These alone are served without a signature; `POST /` (the AWS APIs) and
/// every other method are not.
pub fn is_console_request(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD) && (path == "/" || path.starts_with(PREFIX))
}

/// The asset served at `path`.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Each asset's `ETag` (FNV-1a 64 of its bytes), in the order of [`ASSETS`].
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let h = a.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            format!("\"{h:016x}\"")
        })
        .collect()
});

/// `GET /` and `GET /console/{*file}`: the asset at the request's path, or an AWS-shaped 404
/// (`UnknownOperationException`, as for any path nothing is served at).
pub async fn serve(uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return ApiError::new(
            ErrorCode::NoSuchPath,
            format!("No file of the console is served at {path}; the console is at /"),
        )
        .into_response();
    };
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = asset.body.into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        r
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: HeaderMap) -> Response {
        let uri: Uri = path.parse().expect("a valid path");
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(serve(uri, headers))
    }

    fn header_of(r: &Response, name: header::HeaderName) -> &str {
        r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[test]
    fn every_asset_is_served_with_its_content_type_and_the_csp() {
        for a in ASSETS {
            let r = get(a.path, HeaderMap::new());
            assert_eq!(r.status(), StatusCode::OK, "{}", a.path);
            let want = match a.path.rsplit_once('.').map(|(_, e)| e) {
                Some("js") => JS,
                Some("css") => CSS,
                Some("svg") => SVG,
                _ if a.path == "/" => HTML,
                _ => TEXT,
            };
            assert_eq!(header_of(&r, header::CONTENT_TYPE), want, "{}", a.path);
            assert_eq!(a.content_type, want, "{}", a.path);
            assert_eq!(header_of(&r, header::CONTENT_SECURITY_POLICY), CSP, "{}", a.path);
            assert_eq!(header_of(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{}", a.path);
            assert_eq!(header_of(&r, header::CACHE_CONTROL), "no-cache", "{}", a.path);
            assert!(!a.body.is_empty(), "{}", a.path);
        }
    }

    #[test]
    fn the_csp_allows_nothing_but_this_server_and_no_inline_script() {
        let directive = |name: &str| {
            CSP.split(';')
                .map(str::trim)
                .find(|d| d.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} in {CSP}"))
                .to_string()
        };
        assert_eq!(directive("default-src"), "default-src 'self'");
        assert_eq!(directive("script-src"), "script-src 'self'");
        assert_eq!(directive("connect-src"), "connect-src 'self'");
        assert_eq!(directive("frame-ancestors"), "frame-ancestors 'none'");
        assert!(!CSP.contains("unsafe"), "{CSP}");
    }

    #[test]
    fn the_page_loads_only_embedded_assets_and_has_no_inline_script() {
        let html = std::str::from_utf8(asset("/").expect("the page").body).expect("UTF-8");
        let mut rest = html;
        let mut refs = 0;
        while let Some(i) = rest.find(['"', '\'']).map(|i| i + 1) {
            let q = rest.as_bytes()[i - 1] as char;
            let end = rest[i..].find(q).map_or(rest.len(), |e| i + e);
            let value = &rest[i..end];
            if value.starts_with('/') {
                assert!(asset(value).is_some(), "the page names {value}, which is not embedded");
                refs += 1;
            }
            assert!(!value.starts_with("http"), "the page loads {value} from elsewhere");
            rest = &rest[(end + 1).min(rest.len())..];
        }
        assert!(refs >= 5, "the page names its assets ({refs})");
        // Every <script> has a src and nothing between its tags (the CSP would refuse it).
        for part in html.split("<script").skip(1) {
            let tag_end = part.find('>').expect("a closed tag");
            assert!(
                part[..tag_end].contains("src="),
                "inline script: <script{}",
                &part[..tag_end]
            );
            assert!(
                part[tag_end + 1..].trim_start().starts_with("</script>"),
                "inline script"
            );
        }
        assert!(!html.contains(" style=") && !html.contains("<style"), "inline style");
    }

    #[test]
    fn an_unchanged_asset_revalidates_as_304_and_an_unknown_one_is_404() {
        let r = get("/console/app.js", HeaderMap::new());
        let etag = header_of(&r, header::ETAG).to_string();
        assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&etag).expect("a header value"),
        );
        let r = get("/console/app.js", h);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header_of(&r, header::CONTENT_SECURITY_POLICY), CSP);
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"0000000000000000\""));
        assert_eq!(get("/console/app.js", h).status(), StatusCode::OK);
        assert_eq!(
            get("/console/nope.js", HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(get("/console/", HeaderMap::new()).status(), StatusCode::NOT_FOUND);
    }

    proptest::proptest! {
        /// Any path and any `If-None-Match` a client sends: an asset, a 304 or a 404, never a
        /// panic, and every answer carries the CSP; only `GET`/`HEAD` of `/` and `/console/...`
        /// are let through unsigned.
        #[test]
        fn any_request_is_answered_and_only_console_gets_go_unsigned(
            tail in "[a-zA-Z0-9._~%/-]{0,40}",
            inm in "[ -~]{0,40}",
            method in proptest::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
        ) {
            let path = format!("/{tail}");
            let m: Method = method.parse().expect("a method");
            let unsigned = is_console_request(&m, &path);
            proptest::prop_assert_eq!(
                unsigned,
                (method == "GET" || method == "HEAD") && (path == "/" || path.starts_with("/console/"))
            );
            if let Ok(uri) = path.parse::<Uri>() {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&inm) {
                    h.insert(header::IF_NONE_MATCH, v);
                }
                let r = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("a runtime")
                    .block_on(serve(uri.clone(), h));
                let known = asset(uri.path()).is_some();
                proptest::prop_assert!(
                    matches!(r.status(), StatusCode::OK | StatusCode::NOT_MODIFIED) == known,
                    "{path}: {}", r.status()
                );
                if known {
                    proptest::prop_assert_eq!(header_of(&r, header::CONTENT_SECURITY_POLICY), CSP);
                }
            }
        }
    }

    #[test]
    fn only_gets_of_the_console_paths_go_unsigned() {
        assert!(is_console_request(&Method::GET, "/"));
        assert!(is_console_request(&Method::HEAD, "/console/app.js"));
        assert!(!is_console_request(&Method::POST, "/"));
        assert!(!is_console_request(&Method::PUT, "/console/app.js"));
        assert!(!is_console_request(&Method::GET, "/_spillway/capacity"));
        assert!(!is_console_request(&Method::GET, "/consolex"));
        assert!(!is_console_request(&Method::GET, "/metrics"));
    }
}
