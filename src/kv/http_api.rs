//! The HTTP/JSON API on every kv server's HTTP port, for `curl` and any HTTP client:
//! `/v1/kv/{key}` (GET, PUT, DELETE), `/v1/kv/{key}/append` (POST), `/v1/kv?prefix=&after=&limit=`
//! (a sorted, paged listing) and `/v1/openapi.json` (this API, described). Like a Redis
//! connection, each request runs through the client library, so any server answers (one that
//! is not the primary forwards to it) and a write is applied at most once. Errors are JSON with
//! a stable `code` (see [`error_code`]).

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use percent_encoding::percent_decode;
use serde_json::{json, Map, Value};

use super::api::{KvError, Op, SCAN_BYTES, SCAN_MAX_KEYS};
use super::server::KvServer;
use crate::client::{ClientError, ReadConsistency};
use crate::net::{through_http, Answering, Gauge, Handler, HttpRequest, HttpResponse};
use crate::Client;

/// Where the keys are.
pub const KV: &str = "/v1/kv";
/// The OpenAPI document.
pub const OPENAPI: &str = "/v1/openapi.json";
/// The OpenAPI document's text.
pub const OPENAPI_DOCUMENT: &str = include_str!("openapi.json");
/// Keys in a listing page when the request names no `limit`.
pub const DEFAULT_LIMIT: u32 = 100;
/// Idle client sessions kept for later requests.
const IDLE_SESSIONS: usize = 256;

/// The routes and their methods, as the OpenAPI document must list them.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/kv", &["get"]),
    ("/v1/kv/{key}", &["get", "put", "delete"]),
    ("/v1/kv/{key}/append", &["post"]),
    ("/v1/openapi.json", &["get"]),
];

/// Makes one client session of a server.
pub type NewClient = Arc<dyn Fn() -> Client + Send + Sync>;

/// A kv server's HTTP port: its own RPCs, and the API under `/v1/`.
pub struct Node {
    /// The kv server: every path outside `/v1/`.
    pub server: Arc<KvServer>,
    /// Makes a client session when none is idle.
    pub new_client: NewClient,
    /// Sessions not in use: a request borrows one, so the duplicate table holds a session per
    /// concurrent request rather than one per request.
    pub idle: Mutex<Vec<Client>>,
}

/// What a `/v1/` path names.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `/v1/kv`.
    List,
    /// `/v1/kv/{key}`.
    Key(Vec<u8>),
    /// `/v1/kv/{key}/append` (with POST; with another method it is the key `…/append`).
    Append(Vec<u8>),
    /// `/v1/openapi.json`.
    OpenApi,
}

/// The route of `path` with `method`, if the API has one. Keys are percent-decoded, so any
/// bytes can be a key.
fn route(method: &Method, path: &str) -> Option<Route> {
    if path == OPENAPI {
        return Some(Route::OpenApi);
    }
    let rest = path.strip_prefix(KV)?;
    let Some(key) = rest.strip_prefix('/').filter(|k| !k.is_empty()) else {
        return (rest.is_empty() || rest == "/").then_some(Route::List);
    };
    let decode = |text: &str| percent_decode(text.as_bytes()).collect::<Vec<u8>>();
    match key.strip_suffix("/append") {
        Some(key) if *method == Method::POST && !key.is_empty() => Some(Route::Append(decode(key))),
        _ => Some(Route::Key(decode(key))),
    }
}

/// The decoded `name=value` pairs of a query string (`+` is a space, as in forms).
fn query(request: &HttpRequest) -> Vec<(String, Vec<u8>)> {
    let text = request.uri().query().unwrap_or_default();
    let decode = |part: &str| -> Vec<u8> {
        let spaced = part.replace('+', " ");
        percent_decode(spaced.as_bytes()).collect()
    };
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                String::from_utf8_lossy(&decode(name)).into_owned(),
                decode(value),
            )
        })
        .collect()
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> HttpResponse {
    let mut response = hyper::Response::new(http_body_util::Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn json_body(status: StatusCode, value: &Value) -> HttpResponse {
    let mut body = value.to_string().into_bytes();
    body.push(b'\n');
    respond(status, "application/json", body)
}

/// A JSON error: `{"code": ..., "message": ...}`.
fn failed(status: StatusCode, code: &str, message: impl std::fmt::Display) -> HttpResponse {
    json_body(
        status,
        &json!({"code": code, "message": message.to_string()}),
    )
}

/// The status and stable code of a client library error.
pub fn error_code(err: &ClientError) -> (StatusCode, &'static str) {
    match err {
        ClientError::Refused(KvError::TooLarge { .. }) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        }
        ClientError::Refused(KvError::Invalid { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        }
        ClientError::Refused(KvError::NoReplicas { .. }) => {
            (StatusCode::SERVICE_UNAVAILABLE, "no_replicas")
        }
        ClientError::Refused(_) => (StatusCode::CONFLICT, "refused"),
        ClientError::ReadFailed { .. } => (StatusCode::SERVICE_UNAVAILABLE, "read_failed"),
        ClientError::Indeterminate { .. } => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"),
        ClientError::NoMonitors { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_monitors"),
        ClientError::SessionLost => (StatusCode::SERVICE_UNAVAILABLE, "session_lost"),
        ClientError::Unauthorized(_) => (StatusCode::BAD_GATEWAY, "forward_unauthorized"),
        ClientError::BadReply(_) => (StatusCode::BAD_GATEWAY, "bad_reply"),
    }
}

fn client_failed(err: ClientError) -> HttpResponse {
    let (status, code) = error_code(&err);
    failed(status, code, err)
}

fn method_not_allowed(allowed: &'static str) -> HttpResponse {
    let mut response = failed(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this path takes {allowed}"),
    );
    response.headers_mut().insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static(allowed),
    );
    response
}

/// `bytes` under `name` if they are UTF-8 text, else base64 under `name_base64`.
fn put_bytes(item: &mut Map<String, Value>, name: &str, bytes: Vec<u8>) {
    match String::from_utf8(bytes) {
        Ok(text) => item.insert(name.into(), Value::String(text)),
        Err(err) => item.insert(
            format!("{name}_base64"),
            Value::String(base64::engine::general_purpose::STANDARD.encode(err.into_bytes())),
        ),
    };
}

impl Node {
    /// Borrow a client session.
    fn session(&self) -> Client {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        idle.unwrap_or_else(|| (self.new_client)())
    }

    /// Give a session back for a later request.
    fn give_back(&self, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_SESSIONS {
            idle.push(client);
        }
    }

    /// Answer a `/v1/` request.
    async fn api(&self, request: HttpRequest, route: Route) -> HttpResponse {
        let method = request.method().clone();
        if let Route::OpenApi = route {
            return match method {
                Method::GET => respond(
                    StatusCode::OK,
                    "application/json",
                    OPENAPI_DOCUMENT.as_bytes().to_vec(),
                ),
                _ => method_not_allowed("GET"),
            };
        }
        let consistency = match consistency(&request) {
            Ok(consistency) => consistency,
            Err(why) => return failed(StatusCode::BAD_REQUEST, "bad_request", why),
        };
        let mut client = self.session();
        client.set_read_consistency(consistency);
        let response = match (route, method) {
            (Route::List, Method::GET) => list(&mut client, &request).await,
            (Route::List, _) => method_not_allowed("GET"),
            (Route::Key(key), Method::GET) => match client.get(&key).await {
                Ok(Some(value)) => respond(StatusCode::OK, "application/octet-stream", value),
                Ok(None) => failed(StatusCode::NOT_FOUND, "not_found", "no such key"),
                Err(err) => client_failed(err),
            },
            (Route::Key(key), Method::PUT) => match client.put(&key, request.body()).await {
                Ok(()) => json_body(StatusCode::OK, &json!({"ok": true})),
                Err(err) => client_failed(err),
            },
            (Route::Key(key), Method::DELETE) => match client.delete(&key).await {
                Ok(previous) => json_body(StatusCode::OK, &json!({"deleted": previous.is_some()})),
                Err(err) => client_failed(err),
            },
            (Route::Key(_), _) => method_not_allowed("GET, PUT, DELETE"),
            (Route::Append(key), _) => {
                let op = Op::AppendLen {
                    key,
                    value: request.body().to_vec(),
                };
                match client.execute(op).await {
                    Ok(length) => {
                        let length = length
                            .and_then(|l| String::from_utf8(l).ok())
                            .and_then(|l| l.parse::<u64>().ok());
                        json_body(StatusCode::OK, &json!({ "length": length }))
                    }
                    Err(err) => client_failed(err),
                }
            }
            (Route::OpenApi, _) => method_not_allowed("GET"),
        };
        client.set_read_consistency(ReadConsistency::Linearizable);
        self.give_back(client);
        response
    }
}

/// The `consistency` a request's query asks for: `linearizable` (the default) or `stale`
/// (answered by the server asked, from its own state).
fn consistency(request: &HttpRequest) -> Result<ReadConsistency, String> {
    let asked = query(request)
        .into_iter()
        .rev()
        .find_map(|(name, value)| (name == "consistency").then_some(value));
    match asked.as_deref() {
        None | Some(b"linearizable") => Ok(ReadConsistency::Linearizable),
        Some(b"stale") => Ok(ReadConsistency::Stale),
        Some(other) => Err(format!(
            "consistency must be linearizable or stale, not {:?}",
            String::from_utf8_lossy(other)
        )),
    }
}

/// `GET /v1/kv?prefix=P&after=K&limit=N[&keys_only=true]`: keys in order, with their values.
async fn list(client: &mut Client, request: &HttpRequest) -> HttpResponse {
    let (mut prefix, mut after, mut limit, mut values) = (Vec::new(), None, DEFAULT_LIMIT, true);
    for (name, value) in query(request) {
        match name.as_str() {
            "prefix" => prefix = value,
            "after" => after = Some(value),
            "limit" => match std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse().ok())
            {
                Some(n @ 1..=SCAN_MAX_KEYS) => limit = n,
                _ => {
                    let why = format!("limit must be a number from 1 to {SCAN_MAX_KEYS}");
                    return failed(StatusCode::BAD_REQUEST, "bad_request", why);
                }
            },
            "keys_only" => values = value == b"false" || value == b"0",
            "consistency" => {}
            other => {
                let why = format!(
                    "unknown parameter {other:?} (prefix, after, limit, keys_only, consistency)"
                );
                return failed(StatusCode::BAD_REQUEST, "bad_request", why);
            }
        }
    }
    let mut items = Vec::new();
    let mut more = true;
    let mut bytes = 0;
    // A store page may stop short of `limit` at its byte budget: ask again until the listing is
    // full, or holds about that budget itself (the client asks on from `next`).
    while more && items.len() < limit as usize && bytes < SCAN_BYTES {
        let wanted = limit - items.len() as u32;
        let page = match client.scan(&prefix, after.as_deref(), wanted, values).await {
            Ok(page) => page,
            Err(err) => return client_failed(err),
        };
        more = page.more;
        for (key, value) in page.pairs {
            bytes += key.len() + value.len();
            after = Some(key.clone());
            let mut item = Map::new();
            put_bytes(&mut item, "key", key);
            if values {
                put_bytes(&mut item, "value", value);
            }
            items.push(Value::Object(item));
        }
    }
    let mut body = Map::new();
    body.insert("items".into(), Value::Array(items));
    body.insert("more".into(), Value::Bool(more));
    if let Some(next) = after.filter(|_| more) {
        put_bytes(&mut body, "next", next);
    }
    json_body(StatusCode::OK, &Value::Object(body))
}

impl Handler for Node {
    fn call(self: Arc<Self>, path: &str, body: Bytes) -> Answering {
        if path.starts_with("/v1/") {
            return through_http(self, path, body);
        }
        KvServer::call(&self.server, path, body)
    }

    fn gauges(&self) -> Vec<Gauge> {
        self.server.gauges()
    }

    fn route(&self, path: &str) -> String {
        match route(&Method::GET, path) {
            Some(Route::Key(_) | Route::Append(_)) if path.ends_with("/append") => {
                "/v1/kv/{key}/append".into()
            }
            Some(Route::Key(_) | Route::Append(_)) => "/v1/kv/{key}".into(),
            _ => path.into(),
        }
    }

    async fn handle(&self, request: HttpRequest) -> HttpResponse {
        match route(request.method(), request.uri().path()) {
            Some(route) => self.api(request, route).await,
            None => self.server.handle(request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_refused_for_copies_is_no_replicas_and_one_that_may_be_applied_is_unknown() {
        let refused = ClientError::Refused(KvError::NoReplicas {
            copies: 0,
            min_copies: 2,
        });
        assert_eq!(
            error_code(&refused),
            (StatusCode::SERVICE_UNAVAILABLE, "no_replicas")
        );
        let unknown = ClientError::Indeterminate {
            deadline: std::time::Duration::from_secs(1),
            last: "not enough copies: 1 of the 2 required hold the write so far".into(),
        };
        assert_eq!(
            error_code(&unknown),
            (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown")
        );
    }

    #[test]
    fn paths_route_with_percent_decoded_keys() {
        let get = |path| route(&Method::GET, path);
        assert_eq!(get("/v1/kv"), Some(Route::List));
        assert_eq!(get("/v1/kv/"), Some(Route::List));
        assert_eq!(get("/v1/kv/a%2Fb%00"), Some(Route::Key(b"a/b\0".to_vec())));
        assert_eq!(get("/v1/kv/a/b"), Some(Route::Key(b"a/b".to_vec())));
        assert_eq!(
            get("/v1/kv/k/append"),
            Some(Route::Key(b"k/append".to_vec()))
        );
        assert_eq!(
            route(&Method::POST, "/v1/kv/k%20x/append"),
            Some(Route::Append(b"k x".to_vec()))
        );
        assert_eq!(get("/v1/openapi.json"), Some(Route::OpenApi));
        assert_eq!(get("/v1/kvx"), None);
        assert_eq!(get("/kv/request"), None);
    }

    #[test]
    fn queries_decode_like_forms() {
        let request = hyper::Request::builder()
            .uri("/v1/kv?prefix=a+b%2B&limit=5&flag")
            .body(Bytes::new())
            .expect("a request");
        assert_eq!(
            query(&request),
            [
                ("prefix".to_string(), b"a b+".to_vec()),
                ("limit".to_string(), b"5".to_vec()),
                ("flag".to_string(), Vec::new()),
            ]
        );
    }

    #[test]
    fn binary_bytes_are_given_in_base64() {
        let mut item = Map::new();
        put_bytes(&mut item, "key", b"text".to_vec());
        put_bytes(&mut item, "value", vec![0xff, 0x00]);
        assert_eq!(
            Value::Object(item),
            json!({"key": "text", "value_base64": "/wA="})
        );
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI_DOCUMENT).expect("valid JSON");
        let paths = doc["paths"].as_object().expect("paths");
        let mut listed: Vec<(String, Vec<String>)> = paths
            .iter()
            .map(|(path, item)| {
                let mut methods: Vec<String> = item
                    .as_object()
                    .expect("a path item")
                    .keys()
                    .cloned()
                    .collect();
                methods.retain(|m| m != "parameters");
                methods.sort();
                (path.clone(), methods)
            })
            .collect();
        listed.sort();
        let mut routes: Vec<(String, Vec<String>)> = ROUTES
            .iter()
            .map(|(path, methods)| {
                let mut methods: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
                methods.sort();
                (path.to_string(), methods)
            })
            .collect();
        routes.sort();
        assert_eq!(listed, routes);
        for (path, methods) in ROUTES {
            let concrete = path.replace("{key}", "k");
            for method in *methods {
                let method =
                    Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
                assert!(route(&method, &concrete).is_some(), "{method} {concrete}");
            }
        }
    }
}
