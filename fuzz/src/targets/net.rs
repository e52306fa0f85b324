//! Targets for what peers and local clients send.

use defs_core::types::ShardId;
use defs_net::audit;
use defs_net::control::{ControlReply, ControlRequest};
use defs_net::protocol::codec::ShardCodec;
use defs_net::protocol::{Ask, MAX_FRAME_LEN, Request, Response, SHARD_PROTOCOL};
use futures::executor::block_on;
use futures::io::Cursor;
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;

use super::{PER_BYTE, SLACK, must, verdict, wire_body};
use crate::Verdict;
use crate::alloc::bounded;

/// A shard protocol request body (what a storage node reads from any peer): decodes within the
/// allocation bound, and an accepted body re-encodes to exactly its bytes.
pub fn wire_request(data: &[u8]) -> Verdict {
    let r = bounded("request", data.len(), PER_BYTE, SLACK, || {
        Request::decode(data.to_vec())
    });
    if let Ok(req) = &r {
        let body = wire_body("a decoded request does not encode", req.encode());
        assert_eq!(body, data, "request round trip changed the bytes");
    }
    verdict(&r)
}

/// A shard protocol response body (what a client reads from any peer), whole and split at the
/// data head as the codec reads it: both decodes agree, and an accepted body re-encodes to
/// exactly its bytes.
pub fn wire_response(data: &[u8]) -> Verdict {
    let r = bounded("response", data.len(), PER_BYTE, SLACK, || {
        Response::decode(data.to_vec())
    });
    if let Ok(head) =
        <[u8; Response::DATA_HEAD]>::try_from(data.get(..Response::DATA_HEAD).unwrap_or(&[]))
    {
        let parts = bounded("response in parts", data.len(), PER_BYTE, SLACK, || {
            Response::decode_parts(head, data[Response::DATA_HEAD..].to_vec())
        });
        match (&r, &parts) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "decode and decode_parts disagree"),
            (Err(_), Err(_)) => {}
            _ => panic!("decode and decode_parts disagree: {r:?} vs {parts:?}"),
        }
    }
    if let Ok(resp) = &r {
        let body = wire_body("a decoded response does not encode", resp.encode());
        assert_eq!(body, data, "response round trip changed the bytes");
    }
    verdict(&r)
}

/// A stream of bytes read by the shard codec (length prefix, then body), as a request when the
/// first byte is even and as a response otherwise. An accepted frame written back by the codec
/// is exactly the bytes it read. The codec reserves the announced frame length (at most
/// [`MAX_FRAME_LEN`], address space only) before reading it: that, not the input, bounds its
/// allocation.
pub fn wire_codec(data: &[u8]) -> Verdict {
    let Some((&mode, stream)) = data.split_first() else {
        return Verdict::Refused;
    };
    let proto = StreamProtocol::new(SHARD_PROTOCOL);
    let mut codec = ShardCodec::default();
    let mut io = Cursor::new(stream);
    let limit = MAX_FRAME_LEN as usize + SLACK;
    let mut out = Cursor::new(Vec::new());
    let read = if mode % 2 == 0 {
        let r = bounded("codec request", 0, 0, limit, || {
            block_on(codec.read_request(&proto, &mut io))
        });
        match r {
            // A frame that does not decode reaches the node as `Malformed` (it answers with
            // the reason and ends only that stream): the codec's refusal, never sent back.
            Ok(Request::Malformed { .. }) => return Verdict::Refused,
            r => r.map(|req| block_on(codec.write_request(&proto, &mut out, req))),
        }
    } else {
        let r = bounded("codec response", 0, 0, limit, || {
            block_on(codec.read_response(&proto, &mut io))
        });
        r.map(|resp| block_on(codec.write_response(&proto, &mut out, resp)))
    };
    match read {
        Ok(written) => {
            must("the codec cannot write back what it read", written);
            let used = io.position() as usize;
            assert_eq!(
                out.into_inner(),
                &stream[..used],
                "codec round trip changed the frame"
            );
            Verdict::Accepted
        }
        Err(_) => Verdict::Refused,
    }
}

/// A lookup ask (a gossipsub message from any peer): decodes within the bound, and an accepted
/// ask re-encodes to exactly its bytes.
pub fn lookup_ask(data: &[u8]) -> Verdict {
    let r = bounded("lookup ask", data.len(), PER_BYTE, SLACK, || {
        Ask::decode(data)
    });
    if let Ok(ask) = &r {
        let bytes = must("a decoded ask does not encode", ask.encode());
        assert_eq!(bytes, data, "ask round trip changed the bytes");
    }
    verdict(&r)
}

/// Audit proofs. The input is `chunk u32 LE ‖ n u32 LE ‖ shard (n bytes) ‖ response body`:
/// - the honest proof of the shard's chunk verifies against the shard's id, survives the wire,
///   and fails once its chunk or a sibling is altered;
/// - the response body, as a holder's answer, decodes within the bound, and when it is a proof
///   that verifies against the shard's id, it is the honest proof (nothing else proves it).
pub fn audit_proof(data: &[u8]) -> Verdict {
    if data.len() < 8 {
        return Verdict::Refused;
    }
    let chunk = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let n = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
    let Some((shard, answer)) = data[8..].split_at_checked(n) else {
        return Verdict::Refused;
    };
    let id = ShardId(*blake3::hash(shard).as_bytes());
    let len = n as u64;
    let honest = audit::prove(shard, chunk);
    match &honest {
        Ok(proof) => check_honest(&id, len, chunk, proof),
        Err(_) => assert!(
            u64::from(chunk) >= audit::chunks(len),
            "no proof for chunk {chunk} of a {n}-byte shard"
        ),
    }
    let received = bounded("proof response", answer.len(), PER_BYTE, SLACK, || {
        Response::decode(answer.to_vec())
    });
    match received {
        Ok(Response::Proof(p)) if audit::verify(&id, len, chunk, &p).is_ok() => {
            assert_eq!(
                honest.ok().as_ref(),
                Some(&p),
                "a proof other than the honest one verified"
            );
            Verdict::Accepted
        }
        _ => Verdict::Refused,
    }
}

/// An honest proof verifies, survives the wire, and stops verifying once altered.
fn check_honest(id: &ShardId, len: u64, chunk: u32, proof: &audit::Proof) {
    if let Err(e) = audit::verify(id, len, chunk, proof) {
        panic!("an honest proof does not verify: {e}");
    }
    let wire = match Response::Proof(proof.clone())
        .encode()
        .and_then(|e| e.to_frame())
    {
        Ok(f) => f,
        Err(e) => panic!("an honest proof does not encode: {e}"),
    };
    match Response::decode(wire[4..].to_vec()) {
        Ok(Response::Proof(back)) => assert_eq!(&back, proof, "proof round trip changed it"),
        other => panic!("an honest proof does not decode: {other:?}"),
    }
    let mut bad = proof.clone();
    if let Some(b) = bad.chunk.first_mut() {
        *b ^= 1;
        assert!(
            audit::verify(id, len, chunk, &bad).is_err(),
            "an altered chunk verifies"
        );
    }
    let mut bad = proof.clone();
    if let Some(s) = bad.siblings.first_mut() {
        s[0] ^= 1;
        assert!(
            audit::verify(id, len, chunk, &bad).is_err(),
            "an altered sibling verifies"
        );
    }
}

/// A control socket message (a request when the first byte is even, else a reply): decodes
/// within the bound, and an accepted one re-encodes to bytes that decode to the same value
/// (flags are read as zero or not, so the bytes themselves may differ).
pub fn control_message(data: &[u8]) -> Verdict {
    let Some((&mode, body)) = data.split_first() else {
        return Verdict::Refused;
    };
    if mode % 2 == 0 {
        let r = bounded("control request", body.len(), PER_BYTE, SLACK, || {
            ControlRequest::decode(body)
        });
        if let Ok(req) = &r {
            let again = req.encode().and_then(|b| ControlRequest::decode(&b));
            assert_eq!(again.ok().as_ref(), Some(req), "control request round trip");
        }
        verdict(&r)
    } else {
        let r = bounded("control reply", body.len(), PER_BYTE, SLACK, || {
            ControlReply::decode(body)
        });
        if let Ok(rep) = &r {
            let again = rep.encode().and_then(|b| ControlReply::decode(&b));
            assert_eq!(again.ok().as_ref(), Some(rep), "control reply round trip");
        }
        verdict(&r)
    }
}
