//! The station's HTTP side: the page (HTML, CSS and script embedded in the binary), its state,
//! its event stream and its buttons, behind one guard.
//!
//! The guard, on every request before any handler runs:
//! * the **token**: the `token` query parameter or the `X-Veriflash-Token` header must equal the
//!   station's token (compared in constant time) — the page, its script, the event stream, the
//!   exports, the buttons alike;
//! * the **host**: the `Host` header must name the address the station listens on, so a page
//!   of another site whose name was pointed at 127.0.0.1 (DNS rebinding) is refused;
//! * the **origin**: an `Origin` header must be the station's own, and `Sec-Fetch-Site` (sent
//!   by current browsers) `same-origin` or `none` (typed in the address bar); a button (a POST)
//!   must carry the token in its header and a JSON body, which no cross-site form can send.
//!
//! Nothing here accepts a package: there is no route for one, and bodies are limited to
//! [`MAX_BODY`] bytes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::Station;
use super::state::Record;

/// The largest request body (a list of targets).
pub(crate) const MAX_BODY: usize = 16 * 1024;
/// The header a script sends the token in.
pub(crate) const TOKEN_HEADER: &str = "x-veriflash-token";

const INDEX_HTML: &str = include_str!("page/index.html");
const STATION_JS: &str = include_str!("page/station.js");
const STATION_CSS: &str = include_str!("page/station.css");

/// What the guard checks against.
#[derive(Clone)]
struct Guard {
    token: Arc<str>,
    /// The `Host` values accepted: the listening address, and `localhost:PORT` on loopback.
    hosts: Arc<[String]>,
}

#[derive(Clone)]
struct App {
    station: Arc<Station>,
    token: Arc<str>,
}

/// The station's routes for a server listening on `addr`, guarded by `token`.
pub(crate) fn router(station: Arc<Station>, addr: SocketAddr, token: String) -> Router {
    let mut hosts = vec![addr.to_string()];
    if addr.ip().is_loopback() {
        hosts.push(format!("localhost:{}", addr.port()));
    }
    let token: Arc<str> = token.into();
    let guard = Guard {
        token: Arc::clone(&token),
        hosts: hosts.into(),
    };
    let app = App { station, token };
    Router::new()
        .route("/", get(index))
        .route(
            "/station.js",
            get(|| async { asset(STATION_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/station.css",
            get(|| async { asset(STATION_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/state", get(state))
        .route("/api/events", get(events))
        .route("/api/history.json", get(history_json))
        .route("/api/history.csv", get(history_csv))
        .route("/api/flash", post(flash))
        .route("/api/cancel", post(cancel))
        .with_state(app)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(guard, check))
}

/// A refusal as plain text.
fn refuse(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{why}\n"),
    )
        .into_response()
}

/// Equal strings, compared without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `token` query parameter of `query`.
fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

/// The guard: see the module documentation.
async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host_ok = text(header::HOST).is_some_and(|h| guard.hosts.iter().any(|a| a == h));
    if !host_ok {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this station answers only at the address it printed",
        );
    }
    if let Some(origin) = text(header::ORIGIN)
        && !guard.hosts.iter().any(|h| origin == format!("http://{h}"))
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "requests from another origin are refused",
        );
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "requests from another site are refused",
        );
    }
    let from_header = headers.get(TOKEN_HEADER).map(HeaderValue::as_bytes);
    let post = request.method() == Method::POST;
    let given = if post {
        // A button: the token in its header (which a cross-site form cannot set) and JSON.
        let json = text(header::CONTENT_TYPE).is_some_and(|c| c.starts_with("application/json"));
        if !json {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a JSON body is required",
            );
        }
        from_header
    } else {
        from_header.or_else(|| query_token(request.uri().query()).map(str::as_bytes))
    };
    if !given.is_some_and(|t| same(t, guard.token.as_bytes())) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "a valid access token is required: open the URL the station printed",
        );
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // The token is in the URL: never hand it to another site.
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The page, its script and style linked with the token (hex: nothing to escape).
async fn index(State(app): State<App>) -> Response {
    let page = INDEX_HTML.replace("{{TOKEN}}", &app.token);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

async fn state(State(app): State<App>) -> Response {
    axum_json(StatusCode::OK, &app.station.snapshot())
}

fn axum_json(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The event stream: a snapshot, then every change; a page that fell behind gets a new
/// snapshot rather than a gap.
async fn events(State(app): State<App>) -> Response {
    let receiver = app.station.subscribe();
    let first = app.station.snapshot().to_string();
    let stream = futures_util::stream::unfold(
        (app.station, receiver, Some(first)),
        |(station, mut receiver, first)| async move {
            let data = match first {
                Some(snapshot) => snapshot,
                None => match receiver.recv().await {
                    Ok(message) => message.to_string(),
                    Err(RecvError::Lagged(_)) => station.snapshot().to_string(),
                    Err(RecvError::Closed) => return None,
                },
            };
            let event = SseEvent::default().data(data);
            Some((Ok::<_, Infallible>(event), (station, receiver, None)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn download(body: String, content_type: &'static str, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

async fn history_json(State(app): State<App>) -> Response {
    let records: Vec<Value> = app.station.history().iter().map(Record::json).collect();
    let body = serde_json::to_string_pretty(&json!({
        "package_id": app.station.package_id(),
        "records": records,
    }))
    .unwrap_or_default();
    download(body, "application/json", "veriflash-history.json")
}

async fn history_csv(State(app): State<App>) -> Response {
    let mut body = String::from(Record::CSV_HEADER);
    body.push_str("\r\n");
    for record in app.station.history() {
        body.push_str(&record.csv_row());
        body.push_str("\r\n");
    }
    download(body, "text/csv; charset=utf-8", "veriflash-history.csv")
}

/// The JSON object of a button's body.
fn body_json(body: &Bytes) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

fn not_an_object() -> Response {
    refuse(StatusCode::BAD_REQUEST, "the body must be a JSON object")
}

/// `{"all": true}` flashes every waiting device; `{"targets": [...]}` those.
async fn flash(State(app): State<App>, body: Bytes) -> Response {
    let Some(body) = body_json(&body) else {
        return not_an_object();
    };
    let targets: Option<Vec<String>> = if body["all"] == true {
        None
    } else {
        match body["targets"].as_array() {
            Some(list) => {
                let list: Option<Vec<String>> =
                    list.iter().map(|t| t.as_str().map(str::to_owned)).collect();
                match list {
                    Some(list) => Some(list),
                    None => return refuse(StatusCode::BAD_REQUEST, "targets are strings"),
                }
            }
            None => return refuse(StatusCode::BAD_REQUEST, "give \"all\": true or \"targets\""),
        }
    };
    let station = Arc::clone(&app.station);
    let started = tokio::task::spawn_blocking(move || station.flash(targets.as_deref())).await;
    match started {
        Ok(Ok(targets)) => axum_json(
            StatusCode::ACCEPTED,
            &json!({"ok": true, "targets": targets}),
        ),
        Ok(Err(refusal)) => axum_json(
            StatusCode::CONFLICT,
            &json!({"ok": false, "message": refusal.0}),
        ),
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "the request failed"),
    }
}

/// `{"target": T}` cancels T's install; `{}` every install.
async fn cancel(State(app): State<App>, body: Bytes) -> Response {
    let Some(body) = body_json(&body) else {
        return not_an_object();
    };
    let cancelled = app.station.cancel(body["target"].as_str());
    axum_json(StatusCode::OK, &json!({"ok": true, "cancelled": cancelled}))
}
