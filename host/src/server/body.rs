//! Reading request bodies within a byte limit.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;

use super::error::ApiError;
use super::oip::json_len;
use crate::body_memory::OverBudget;

/// How far past the limit a body is still read (and discarded) before the
/// 413, so an ordinary client sees the answer instead of a broken pipe.
const DRAIN_CAP: usize = 16 << 20;

/// Why a body could not be read: the server holds as many body bytes as
/// it may (`Ok`, the message of the 503 to answer once the rest is
/// drained), or the error to answer at once: 408 where it stopped arriving
/// ([`crate::listen::Stalled`]), else 400.
fn unreadable(error: axum::Error) -> Result<String, ApiError> {
    let error = error.into_inner();
    if error.is::<OverBudget>() {
        Ok(error.to_string())
    } else if error.is::<crate::listen::Stalled>() {
        Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            error.to_string(),
        ))
    } else {
        Err(ApiError::bad_request(format!(
            "cannot read the request body: {error}"
        )))
    }
}

/// Where a body is joined from several frames, the binary extension's data
/// starts at an address that is a multiple of this: every tensor type's
/// alignment, and a cache line, so the decoder shares it instead of
/// copying it.
const BINARY_ALIGN: usize = 64;

/// Room reserved for a body on the strength of its declared length alone
/// is at most this, or twice what has arrived when that is more.
const PREALLOCATE: usize = 1 << 20;

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
    // A body that arrives in one frame (most small ones do) is kept as it
    // came, not copied; a second frame starts a buffer holding both, with
    // room for the declared length and its binary data (if any) aligned.
    let mut first = Bytes::new();
    let mut buffer: Option<Joined> = None;
    let mut seen = 0usize;
    // Set when the server's memory for bodies ran out: what was read is
    // let go and the rest read past (uncounted) before the 503, as for the
    // 413, so the client is not cut off mid-send.
    let mut refused = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => {
                refused = Some(unreadable(error)?);
                (first, buffer) = (Bytes::new(), None);
                continue;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if refused.is_some() {
            if seen > limit.saturating_add(DRAIN_CAP) {
                break;
            }
        } else if seen <= limit {
            match &mut buffer {
                Some(joined) => joined.extend(&data),
                None if first.is_empty() => first = data,
                None => {
                    // Room for the declared length, but never much more
                    // than has come: a client that declares a large body
                    // and stalls holds little memory.
                    let size = declared
                        .unwrap_or(0)
                        .min(seen.saturating_mul(2).max(PREALLOCATE))
                        .clamp(seen, limit);
                    // An unreadable length is refused by the decoder; none
                    // means no binary data, which needs no alignment.
                    let json = json_len(headers).ok().flatten().unwrap_or(0);
                    let mut joined = Joined::new(size, json, limit);
                    joined.extend(&first);
                    joined.extend(&data);
                    first = Bytes::new();
                    buffer = Some(joined);
                }
            }
        } else if seen > limit.saturating_add(DRAIN_CAP) {
            return Err(too_large());
        }
    }
    if let Some(message) = refused {
        return Err(ApiError::retry_soon(message));
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(buffer.map_or(first, Joined::freeze))
}

/// A body of at most `limit` bytes being joined from frames, behind `pad`
/// leading bytes that put its binary data (after `json` bytes of JSON) at
/// a multiple of [`BINARY_ALIGN`].
struct Joined {
    bytes: bytes::BytesMut,
    pad: usize,
    json: usize,
    limit: usize,
}

impl Joined {
    /// Room for `size` bytes of a body whose JSON part is `json` bytes.
    fn new(size: usize, json: usize, limit: usize) -> Joined {
        let mut joined = Joined {
            bytes: bytes::BytesMut::with_capacity(size + BINARY_ALIGN),
            pad: 0,
            json,
            limit,
        };
        joined.pad = joined.aligning_pad();
        joined.bytes.resize(joined.pad, 0);
        joined
    }

    /// The pad that puts the binary data at a multiple of [`BINARY_ALIGN`]
    /// in the buffer as it is allocated now.
    fn aligning_pad(&self) -> usize {
        let start = self.bytes.as_ptr() as usize + self.json;
        start.next_multiple_of(BINARY_ALIGN) - start
    }

    /// Appends `data` (the body stays within `limit`), growing the buffer
    /// as a `Vec` grows, up to `limit`, and moving what it holds back into
    /// alignment when the allocator moved it.
    fn extend(&mut self, data: &[u8]) {
        let len = self.bytes.len();
        if self.bytes.capacity() - len < data.len() {
            let held = len - self.pad;
            let size = held
                .saturating_mul(2)
                .min(self.limit)
                .max(held + data.len());
            self.bytes.reserve(size + BINARY_ALIGN - len);
            let pad = self.aligning_pad();
            if pad != self.pad {
                self.bytes.resize(len.max(pad + held), 0);
                self.bytes.copy_within(self.pad..len, pad);
                self.bytes.truncate(pad + held);
                self.pad = pad;
            }
        }
        self.bytes.extend_from_slice(data);
    }

    fn freeze(self) -> Bytes {
        self.bytes.freeze().slice(self.pad..)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A body sent as `frames` and read back, with the headers a
    /// binary-extension client sends (`declare`: a Content-Length too).
    async fn read(frames: &[&[u8]], json: usize, declare: bool) -> Bytes {
        let mut headers = HeaderMap::new();
        headers.insert(crate::protocol::HEADER_LENGTH, json.into());
        if declare {
            let len: usize = frames.iter().map(|f| f.len()).sum();
            headers.insert(header::CONTENT_LENGTH, len.into());
        }
        let chunks: Vec<Result<Bytes, std::io::Error>> = frames
            .iter()
            .map(|f| Ok(Bytes::copy_from_slice(f)))
            .collect();
        let body = Body::from_stream(futures::stream::iter(chunks));
        read_body(body, &headers, 1 << 20)
            .await
            .expect("within the limit")
    }

    /// Whatever the JSON part's length and however the frames cut the
    /// body, a joined body holds exactly what was sent, with its binary
    /// data at an aligned address, where the decoder takes it uncopied.
    #[tokio::test]
    async fn joined_bodies_align_their_binary_data() {
        let whole: Vec<u8> = (0..9000u32).map(|i| (i * 7 % 251) as u8).collect();
        for json in (0..200).step_by(3) {
            for (cuts, declare) in [(&[100, 4000][..], true), (&[1, 2, 3, 50, 700, 5000], false)] {
                let mut frames = Vec::new();
                let mut from = 0;
                for &cut in cuts.iter().chain([&whole.len()]) {
                    frames.push(&whole[from..cut]);
                    from = cut;
                }
                let got = read(&frames, json, declare).await;
                assert_eq!(&got[..], &whole[..], "json {json}, cuts {cuts:?}");
                assert_eq!(
                    (got.as_ptr() as usize + json) % BINARY_ALIGN,
                    0,
                    "json {json}, cuts {cuts:?}, declared {declare}"
                );
            }
        }
    }
}
