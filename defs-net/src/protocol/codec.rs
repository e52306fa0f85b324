//! [`ShardCodec`]: moves [`Request`] and [`Response`] frames over libp2p streams for
//! request-response. It reads the `u32` length prefix first and refuses a frame over
//! [`MAX_FRAME_LEN`] with an error before allocating anything; it never reads to the end of a
//! stream unbounded.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use super::{MAX_FRAME_LEN, Request, Response};
use crate::error::Error;

/// The request-response codec of the shard protocol.
#[derive(Debug, Clone, Copy)]
pub struct ShardCodec {
    max_frame: u32,
}

impl Default for ShardCodec {
    fn default() -> Self {
        ShardCodec {
            max_frame: MAX_FRAME_LEN,
        }
    }
}

impl ShardCodec {
    /// A codec with a smaller frame limit (tests use it to check the refusal path).
    pub fn with_max_frame(max_frame: u32) -> Self {
        ShardCodec {
            max_frame: max_frame.min(MAX_FRAME_LEN),
        }
    }
}

fn invalid(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Reads a frame's length prefix and checks it against the limit.
async fn read_len<T: AsyncRead + Unpin + Send>(io: &mut T, max: u32) -> io::Result<usize> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(invalid(Error::TooLarge {
            what: "shard protocol frame",
            size: u64::from(len),
            limit: u64::from(max),
        }));
    }
    Ok(len as usize)
}

/// Reads exactly `len` bytes (`len` already checked against the frame limit).
async fn read_exact_vec<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    len: usize,
) -> io::Result<Vec<u8>> {
    // Reserved whole (address space only), filled chunk by chunk: pages are touched as bytes
    // arrive, so a peer that announces a big frame and stalls costs little memory, and each
    // chunk is zeroed just before the read overwrites it, while it is in cache.
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        let at = body.len();
        body.resize(len.min(at + READ_CHUNK), 0);
        io.read_exact(&mut body[at..]).await?;
    }
    Ok(body)
}

/// How much of a frame [`read_exact_vec`] reads (and allocates) at a time.
const READ_CHUNK: usize = 256 << 10;

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    enc: super::Encoded<'_>,
    max: u32,
) -> io::Result<()> {
    let len = enc.body_len().map_err(invalid)?;
    if len > max {
        return Err(invalid(Error::TooLarge {
            what: "shard protocol frame",
            size: u64::from(len),
            limit: u64::from(max),
        }));
    }
    // Small messages in one write; shards as header then payload, without copying the payload.
    let mut head = Vec::with_capacity(4 + enc.header.len());
    head.extend_from_slice(&len.to_le_bytes());
    head.extend_from_slice(&enc.header);
    io.write_all(&head).await?;
    if !enc.payload.is_empty() {
        io.write_all(enc.payload).await?;
    }
    io.flush().await?;
    io.close().await
}

impl libp2p::request_response::Codec for ShardCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        // An oversized prefix or a failed read drops the stream (the codec cannot answer
        // through a reader); a frame that arrived but does not decode, or whose body the
        // stream cut short, becomes `Request::Malformed`, which the node answers with the reason.
        let len = read_len(io, self.max_frame).await?;
        let body = match read_exact_vec(io, len).await {
            Ok(body) => body,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Request::Malformed {
                    reason: format!("truncated frame: the stream ended before its {len} bytes"),
                });
            }
            Err(e) => return Err(e),
        };
        Ok(
            Request::decode(body).unwrap_or_else(|e| Request::Malformed {
                reason: e.to_string(),
            }),
        )
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        // The head of a response is read apart from the rest, so a shard's bytes land at the
        // start of a buffer of their own instead of being shifted past the head afterwards (a
        // memmove of every fetched shard).
        let len = read_len(io, self.max_frame).await?;
        let mut head = [0u8; Response::DATA_HEAD];
        if len < head.len() {
            return Response::decode(read_exact_vec(io, len).await?).map_err(invalid);
        }
        io.read_exact(&mut head).await?;
        let rest = read_exact_vec(io, len - head.len()).await?;
        Response::decode_parts(head, rest).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let enc = req.encode().map_err(invalid)?;
        write_frame(io, enc, self.max_frame).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let enc = resp.encode().map_err(invalid)?;
        write_frame(io, enc, self.max_frame).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    use super::*;
    use crate::protocol::SHARD_PROTOCOL;

    #[tokio::test]
    async fn oversized_frame_is_refused_by_its_prefix() {
        let mut codec = ShardCodec::default();
        let proto = StreamProtocol::new(SHARD_PROTOCOL);
        // Only the prefix is present: a reader that allocated first would try to read 4 GiB.
        let mut io = Cursor::new(u32::MAX.to_le_bytes().to_vec());
        let err = codec.read_request(&proto, &mut io).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[tokio::test]
    async fn responses_round_trip_through_the_split_head() {
        let mut codec = ShardCodec::default();
        let proto = StreamProtocol::new(SHARD_PROTOCOL);
        for resp in [
            Response::Data(vec![7; 100_000]),
            Response::Data(Vec::new()),
            Response::Data(vec![1, 2, 3, 4, 5, 6, 7]),
            Response::Stored,
            Response::Ack,
            Response::Has(vec![Some(5), None]),
        ] {
            let mut buf = Cursor::new(Vec::new());
            codec
                .write_response(&proto, &mut buf, resp.clone())
                .await
                .unwrap();
            let mut rd = Cursor::new(buf.into_inner());
            assert_eq!(codec.read_response(&proto, &mut rd).await.unwrap(), resp);
        }
        // A data head whose length disagrees with the frame is refused, as by `decode`.
        let mut frame = 10u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&[super::super::WIRE_VERSION, super::super::encoding::TAG_DATA]);
        frame.extend_from_slice(&5u32.to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        let err = codec
            .read_response(&proto, &mut Cursor::new(frame))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_small_limit_refuses_large_writes() {
        let mut codec = ShardCodec::with_max_frame(1000);
        let proto = StreamProtocol::new(SHARD_PROTOCOL);
        let mut buf = Cursor::new(Vec::new());
        let err = codec
            .write_response(&proto, &mut buf, Response::Data(vec![0; 5000]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        assert!(buf.into_inner().is_empty());
    }
}
