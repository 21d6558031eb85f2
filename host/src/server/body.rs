//! Reading request bodies within a byte limit.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;

use super::error::ApiError;

/// How far past the limit a body is still read (and discarded) before the
/// 413, so an ordinary client sees the answer instead of a broken pipe.
const DRAIN_CAP: usize = 16 << 20;

/// Reads the body, refusing more than `limit` bytes with a 413. Memory use
/// stays within `limit` whatever the client sends.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the {limit} byte limit (--max-body-bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(DRAIN_CAP)) {
        return Err(too_large());
    }
    let mut body = body;
    // A body that arrives in one frame (most do) is kept as it came, not
    // copied; a second frame starts a buffer holding both.
    let mut first = Bytes::new();
    let mut buffer: Option<bytes::BytesMut> = None;
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            match &mut buffer {
                Some(buffer) => buffer.extend_from_slice(&data),
                None if first.is_empty() => first = data,
                None => {
                    let mut joined = bytes::BytesMut::from(std::mem::take(&mut first));
                    joined.extend_from_slice(&data);
                    buffer = Some(joined);
                }
            }
        } else if seen > limit.saturating_add(DRAIN_CAP) {
            return Err(too_large());
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(buffer.map_or(first, bytes::BytesMut::freeze))
}

/// A body read on first use and kept, so that a request both decoded and
/// then forwarded is read once, and one forwarded undecoded is read only
/// then.
pub enum LazyBody {
    /// Not read yet.
    Unread(Body),
    /// Read; after a failed read, empty (callers stop at the first error).
    Read(Bytes),
}

impl LazyBody {
    /// The bytes, read on the first call as [`read_body`] does.
    pub async fn bytes(&mut self, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
        let bytes = match std::mem::replace(self, LazyBody::Read(Bytes::new())) {
            LazyBody::Unread(body) => read_body(body, headers, limit).await?,
            LazyBody::Read(bytes) => bytes,
        };
        *self = LazyBody::Read(bytes.clone());
        Ok(bytes)
    }
}
