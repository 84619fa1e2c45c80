//! Server-sent events: encoding of events and the streamed HTTP response.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

/// `data: <json>\n\n` (the OpenAI style, no event name).
pub(crate) fn data_event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// `data: [DONE]\n\n`, OpenAI's end-of-stream marker.
pub(crate) fn done_event() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// `event: <name>\ndata: <json>\n\n` (the Anthropic style).
pub(crate) fn named_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// A `200 text/event-stream` response sending `events` in order, waiting
/// `delay` between two events when set. Each event is written as its own
/// HTTP chunk.
pub(crate) fn response(events: Vec<Bytes>, delay: Option<Duration>) -> Response {
    let stream =
        futures::stream::iter(events.into_iter().enumerate()).then(move |(i, event)| async move {
            if let Some(delay) = delay.filter(|_| i > 0) {
                tokio::time::sleep(delay).await;
            }
            Ok::<Bytes, Infallible>(event)
        });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_events() {
        assert_eq!(
            data_event(&json!({"a": 1})),
            Bytes::from("data: {\"a\":1}\n\n")
        );
        assert_eq!(
            named_event("ping", &json!({"type": "ping"})),
            Bytes::from("event: ping\ndata: {\"type\":\"ping\"}\n\n")
        );
        assert_eq!(done_event(), Bytes::from("data: [DONE]\n\n"));
    }
}
