//! The management web UI: a handful of static files (HTML, CSS, ES
//! modules, an icon) compiled into the binary and served at `/` beside
//! the API, which the UI calls from the browser with the user's own
//! credentials. Nothing is fetched from another origin: the
//! `Content-Security-Policy` allows only this one.
//!
//! Every asset is sent with `Cache-Control: no-cache` and a strong `ETag`
//! (a hash of its bytes), so a browser revalidates on each load and gets
//! a 304 while the binary is the same; after an upgrade it gets the new
//! files at once, with no stale mix of old and new modules.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Only this origin: scripts, styles, images and API calls. No inline
/// script or style, no plugins, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The request header the UI sets on its API calls: the API then leaves
/// `WWW-Authenticate` off its 401s, so a failed login is shown in the
/// page instead of the browser's own password dialog.
pub const UI_HEADER: &str = "x-warren-ui";

/// One embedded file.
struct Asset {
    /// Where it is served.
    path: &'static str,
    /// Its `Content-Type`.
    content_type: &'static str,
    /// Its bytes.
    body: &'static [u8],
}

/// Every file of the UI.
static ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../ui/index.html"),
    },
    Asset {
        path: "/ui/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../ui/style.css"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/app.js"),
    },
    Asset {
        path: "/ui/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/api.js"),
    },
    Asset {
        path: "/ui/dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/dom.js"),
    },
    Asset {
        path: "/ui/chart.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/chart.js"),
    },
    Asset {
        path: "/ui/pages.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/pages.js"),
    },
    Asset {
        path: "/ui/admin.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/admin.js"),
    },
    Asset {
        path: "/ui/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../ui/favicon.svg"),
    },
];

/// Each asset's `ETag`, in the order of [`ASSETS`].
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            // FNV-1a, 64 bits: stable, and enough to tell builds apart.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in a.body {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            HeaderValue::from_str(&format!("\"{h:016x}\""))
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// The UI's routes: `/`, `/index.html` and `/ui/...`. Anything else falls
/// through to the API (and its JSON 404).
pub(crate) fn routes() -> Router {
    let mut router = Router::new();
    for (i, asset) in ASSETS.iter().enumerate() {
        router = router.route(asset.path, get(move |h: HeaderMap| serve(i, h)));
    }
    router
        .route("/index.html", get(|h: HeaderMap| serve(0, h)))
        .route(
            "/favicon.ico",
            get(|h: HeaderMap| serve(ASSETS.len() - 1, h)),
        )
}

async fn serve(index: usize, request: HeaderMap) -> Response {
    let (Some(asset), Some(etag)) = (ASSETS.get(index), ETAGS.get(index)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == etag.to_str().unwrap_or(""))
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Drops `WWW-Authenticate` from replies to the UI's own calls (marked
/// with [`UI_HEADER`]); other clients get RabbitMQ's challenge as before.
pub(crate) async fn quiet_challenge(req: Request, next: Next) -> Response {
    let from_ui = req.headers().contains_key(UI_HEADER);
    let mut response = next.run(req).await;
    if from_ui {
        response.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_named_once_and_nonempty() {
        let mut paths: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len());
        assert!(ASSETS.iter().all(|a| !a.body.is_empty()));
        assert_eq!(ETAGS.len(), ASSETS.len());
    }

    #[test]
    fn no_asset_names_another_origin() {
        // The UI works offline: no CDN, no web font, no external image.
        for a in ASSETS {
            let text = String::from_utf8_lossy(a.body);
            for origin in ["http://", "https://", "//cdn", "@import"] {
                let hits: Vec<&str> = text
                    .match_indices(origin)
                    .map(|(i, _)| &text[i..text.len().min(i + 60)])
                    // The SVG namespace is a name, not a fetch.
                    .filter(|s| !s.starts_with("http://www.w3.org/"))
                    .collect();
                assert!(hits.is_empty(), "{} names {hits:?}", a.path);
            }
        }
    }
}
