//! The inbound side: an HTTP/1.1 server that hands each whole request body to a [`Handler`].

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{encode, MAX_MESSAGE};

/// A request whose body has been read in full.
pub type HttpRequest = hyper::Request<Bytes>;
/// A response with an in-memory body.
pub type HttpResponse = hyper::Response<Full<Bytes>>;

/// Serves requests for one node.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request.
    fn handle(&self, request: HttpRequest) -> impl Future<Output = HttpResponse> + Send;
}

fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> HttpResponse {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// 200 with a bincode body.
pub fn bincode_reply<T: Serialize>(value: &T) -> HttpResponse {
    response(StatusCode::OK, "application/octet-stream", encode(value))
}

/// 200 with a JSON body.
pub fn json_reply(value: &serde_json::Value) -> HttpResponse {
    let mut body = value.to_string().into_bytes();
    body.push(b'\n');
    response(StatusCode::OK, "application/json", body)
}

/// 400 with an explanation.
pub fn bad_request(message: impl std::fmt::Display) -> HttpResponse {
    response(
        StatusCode::BAD_REQUEST,
        "text/plain; charset=utf-8",
        message.to_string().into_bytes(),
    )
}

/// 404 naming the path.
pub fn not_found(path: &str) -> HttpResponse {
    response(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        format!("no such endpoint: {path}").into_bytes(),
    )
}

/// Read the whole body (at most [`MAX_MESSAGE`] bytes) and hand the request to `handler`.
async fn handle_one<H: Handler>(handler: &H, request: hyper::Request<Incoming>) -> HttpResponse {
    let (parts, body) = request.into_parts();
    match Limited::new(body, MAX_MESSAGE).collect().await {
        Ok(body) => {
            handler
                .handle(HttpRequest::from_parts(parts, body.to_bytes()))
                .await
        }
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain; charset=utf-8",
                format!("request body over {MAX_MESSAGE} bytes").into_bytes(),
            )
        }
        Err(err) => bad_request(format!("could not read the request body: {err}")),
    }
}

/// Accept connections on `listener` and serve them with `handler` until `shutdown` completes.
/// Open connections are closed when this returns.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!("accept failed: {err}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let handler = handler.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(handle_one(&*handler, request).await)
                        }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(err) = connection.await {
                        tracing::debug!("connection ended: {err}");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}
