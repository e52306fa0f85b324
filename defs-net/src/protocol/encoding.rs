//! The byte encoding of the shard protocol's messages: the frame tags, the writers of every
//! [`Request`], [`Response`] and [`Ask`], and the bounds-checked reader that decodes them
//! (docs/format.md, "Shard protocol"). The message types themselves are the parent's.

#[allow(clippy::wildcard_imports)]
use super::*;
pub(super) const TAG_STORE: u8 = 1;
pub(super) const TAG_FETCH: u8 = 2;
pub(super) const TAG_HAS: u8 = 3;
pub(super) const TAG_DELETE: u8 = 4;
pub(super) const TAG_HOLDERS: u8 = 5;
pub(super) const TAG_INFO: u8 = 6;
pub(super) const TAG_PUT_ROOT: u8 = 7;
pub(super) const TAG_GET_ROOT: u8 = 8;
/// Share records: one tag, the operation in the next byte ([`SHARE_PUT`], [`SHARE_LIST`]).
pub(super) const TAG_SHARE: u8 = 9;
pub(super) const SHARE_PUT: u8 = 1;
pub(super) const SHARE_LIST: u8 = 2;
pub(super) const TAG_OWNER_USAGE: u8 = 10;
// Pairing and audits: well clear of the root-record frames (7, 8).
pub(super) const TAG_AUDIT: u8 = 20;
pub(super) const TAG_PAIR: u8 = 21;
pub(super) const TAG_HEARTBEAT: u8 = 22;
pub(super) const TAG_MIRROR: u8 = 23;

pub(super) const TAG_STORED: u8 = 101;
pub(super) const TAG_DATA: u8 = 102;
pub(super) const TAG_HAS_REPLY: u8 = 103;
pub(super) const TAG_DELETED: u8 = 104;
pub(super) const TAG_ACK: u8 = 105;
pub(super) const TAG_INFO_REPLY: u8 = 106;
pub(super) const TAG_ERROR: u8 = 107;
pub(super) const TAG_ROOT: u8 = 108;
pub(super) const TAG_SHARES: u8 = 109;
pub(super) const TAG_OWNER_USAGE_REPLY: u8 = 110;
pub(super) const TAG_PROOF: u8 = 120;
pub(super) const TAG_BEAT: u8 = 122;

fn put_record(h: &mut Vec<u8>, record: &[u8]) -> Result<()> {
    put_record_of(h, "root record", record, MAX_ROOT_LEN)
}

fn put_record_of(h: &mut Vec<u8>, what: &'static str, record: &[u8], limit: usize) -> Result<()> {
    let n = len_u32(what, record.len(), limit as u64)?;
    h.extend_from_slice(&n.to_le_bytes());
    h.extend_from_slice(record);
    Ok(())
}

/// `n` if it is at most `limit`, else [`Error::TooLarge`] (a count read from a frame, checked
/// before anything is allocated for it).
fn at_most(what: &'static str, n: usize, limit: usize) -> Result<usize> {
    if n > limit {
        return Err(Error::TooLarge {
            what,
            size: n as u64,
            limit: limit as u64,
        });
    }
    Ok(n)
}

fn len_u32(what: &'static str, len: usize, limit: u64) -> Result<u32> {
    let len64 = u64::try_from(len).unwrap_or(u64::MAX);
    if len64 > limit {
        return Err(Error::TooLarge {
            what,
            size: len64,
            limit,
        });
    }
    u32::try_from(len).map_err(|_| Error::TooLarge {
        what,
        size: len64,
        limit,
    })
}

fn put_auth(out: &mut Vec<u8>, auth: &Auth) {
    out.extend_from_slice(&auth.public_key);
    out.extend_from_slice(&auth.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&auth.nonce);
    out.extend_from_slice(&auth.signature);
}

fn put_ids(out: &mut Vec<u8>, ids: &[ShardId]) -> Result<()> {
    let n = len_u32("shard id list", ids.len(), MAX_IDS as u64)?;
    out.extend_from_slice(&n.to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    Ok(())
}

impl Encoded<'_> {
    /// The body length (header + payload), checked against [`MAX_FRAME_LEN`].
    pub fn body_len(&self) -> Result<u32> {
        len_u32(
            "frame",
            self.header.len() + self.payload.len(),
            u64::from(MAX_FRAME_LEN),
        )
    }

    /// The whole frame in one buffer (length prefix included). For tests and small messages.
    pub fn to_frame(&self) -> Result<Vec<u8>> {
        let len = self.body_len()?;
        let mut v = Vec::with_capacity(4 + self.header.len() + self.payload.len());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&self.header);
        v.extend_from_slice(self.payload);
        Ok(v)
    }
}

impl Request {
    /// Encodes the body, checking every limit.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when a field exceeds its limit.
    pub fn encode(&self) -> Result<Encoded<'_>> {
        let mut h = vec![WIRE_VERSION];
        let mut payload: &[u8] = &[];
        match self {
            Request::Store {
                id,
                auth,
                crc,
                data,
            } => {
                h.push(TAG_STORE);
                h.extend_from_slice(&id.0);
                put_auth(&mut h, auth);
                h.extend_from_slice(&crc.to_le_bytes());
                let n = len_u32("shard", data.len(), u64::from(MAX_SHARD_LEN))?;
                h.extend_from_slice(&n.to_le_bytes());
                payload = data;
            }
            Request::Fetch { id, range } => {
                h.push(TAG_FETCH);
                h.extend_from_slice(&id.0);
                match range {
                    None => h.push(0),
                    Some((off, len)) => {
                        len_u32("fetch range", *len as usize, u64::from(MAX_SHARD_LEN))?;
                        h.push(1);
                        h.extend_from_slice(&off.to_le_bytes());
                        h.extend_from_slice(&len.to_le_bytes());
                    }
                }
            }
            Request::Has { ids } => {
                h.push(TAG_HAS);
                put_ids(&mut h, ids)?;
            }
            Request::Delete { id, auth } => {
                h.push(TAG_DELETE);
                h.extend_from_slice(&id.0);
                put_auth(&mut h, auth);
            }
            Request::Holders { ask, ids } => {
                h.push(TAG_HOLDERS);
                h.extend_from_slice(&ask.to_le_bytes());
                put_ids(&mut h, ids)?;
            }
            Request::Info => h.push(TAG_INFO),
            Request::OwnerUsage => h.push(TAG_OWNER_USAGE),
            Request::PutRoot { record } => {
                h.push(TAG_PUT_ROOT);
                put_record(&mut h, record)?;
            }
            Request::GetRoot { owner } => {
                h.push(TAG_GET_ROOT);
                h.extend_from_slice(&owner.0);
            }
            Request::PutShare { record } => {
                h.extend_from_slice(&[TAG_SHARE, SHARE_PUT]);
                put_record_of(&mut h, "share record", record, MAX_SHARE_LEN)?;
            }
            Request::ListShares { recipient } => {
                h.extend_from_slice(&[TAG_SHARE, SHARE_LIST]);
                h.extend_from_slice(&recipient.0);
            }
            Request::Audit { id, chunk } => {
                h.push(TAG_AUDIT);
                h.extend_from_slice(&id.0);
                h.extend_from_slice(&chunk.to_le_bytes());
            }
            Request::Pair => h.push(TAG_PAIR),
            Request::Heartbeat { primary_bytes } => {
                h.push(TAG_HEARTBEAT);
                h.extend_from_slice(&primary_bytes.to_le_bytes());
            }
            Request::Mirror {
                id,
                owners,
                crc,
                data,
            } => {
                h.push(TAG_MIRROR);
                h.extend_from_slice(&id.0);
                let n = len_u32("mirror owners", owners.len(), MAX_MIRROR_OWNERS as u64)?;
                h.push(n as u8);
                for o in owners {
                    h.extend_from_slice(&o.0);
                }
                h.extend_from_slice(&crc.to_le_bytes());
                let n = len_u32("shard", data.len(), u64::from(MAX_SHARD_LEN))?;
                h.extend_from_slice(&n.to_le_bytes());
                payload = data;
            }
            Request::Malformed { reason } => {
                return Err(Error::Malformed {
                    what: "shard request",
                    reason: format!("a malformed request is never sent ({reason})"),
                });
            }
        }
        Ok(Encoded { header: h, payload })
    }

    /// Decodes a body read from the wire.
    ///
    /// # Errors
    /// [`Error::Malformed`] or [`Error::TooLarge`]; never panics.
    pub fn decode(body: Vec<u8>) -> Result<Request> {
        let mut r = Reader::new(&body, "shard request");
        r.version()?;
        let req = match r.u8()? {
            TAG_STORE => {
                let id = r.shard_id()?;
                let auth = r.auth()?;
                let crc = r.u32()?;
                let start = r.shard_tail()?;
                // A view of the frame, not a copy of its tail.
                let data = Bytes::from(body).slice(start..);
                return Ok(Request::Store {
                    id,
                    auth,
                    crc,
                    data,
                });
            }
            TAG_FETCH => {
                let id = r.shard_id()?;
                let range = match r.u8()? {
                    0 => None,
                    1 => {
                        let off = r.u64()?;
                        let len = r.u32()?;
                        if len > MAX_SHARD_LEN {
                            return Err(Error::TooLarge {
                                what: "fetch range",
                                size: u64::from(len),
                                limit: u64::from(MAX_SHARD_LEN),
                            });
                        }
                        Some((off, len))
                    }
                    f => return Err(r.bad(format!("range flag {f}"))),
                };
                Request::Fetch { id, range }
            }
            TAG_HAS => Request::Has { ids: r.ids()? },
            TAG_DELETE => {
                let id = r.shard_id()?;
                let auth = r.auth()?;
                Request::Delete { id, auth }
            }
            TAG_HOLDERS => {
                let ask = r.u64()?;
                Request::Holders { ask, ids: r.ids()? }
            }
            TAG_INFO => Request::Info,
            TAG_OWNER_USAGE => Request::OwnerUsage,
            TAG_PUT_ROOT => Request::PutRoot {
                record: r.record()?,
            },
            TAG_GET_ROOT => Request::GetRoot {
                owner: NodeId(r.array()?),
            },
            TAG_SHARE => match r.u8()? {
                SHARE_PUT => Request::PutShare {
                    record: r.record_of("share record", MAX_SHARE_LEN)?,
                },
                SHARE_LIST => Request::ListShares {
                    recipient: NodeId(r.array()?),
                },
                op => return Err(r.bad(format!("unknown share operation {op}"))),
            },
            TAG_AUDIT => Request::Audit {
                id: r.shard_id()?,
                chunk: r.u32()?,
            },
            TAG_PAIR => Request::Pair,
            TAG_HEARTBEAT => Request::Heartbeat {
                primary_bytes: r.u64()?,
            },
            TAG_MIRROR => {
                let id = r.shard_id()?;
                let n = usize::from(r.u8()?);
                if n == 0 || n > MAX_MIRROR_OWNERS {
                    return Err(r.bad(format!("{n} mirror owners (1 to {MAX_MIRROR_OWNERS})")));
                }
                let mut owners = Vec::with_capacity(n);
                for _ in 0..n {
                    owners.push(NodeId(r.array()?));
                }
                let crc = r.u32()?;
                let start = r.shard_tail()?;
                let data = Bytes::from(body).slice(start..);
                return Ok(Request::Mirror {
                    id,
                    owners,
                    crc,
                    data,
                });
            }
            t => return Err(r.bad(format!("unknown tag {t}"))),
        };
        r.end()?;
        Ok(req)
    }
}

impl Response {
    /// Encodes the body, checking every limit.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when a field exceeds its limit.
    pub fn encode(&self) -> Result<Encoded<'_>> {
        let mut h = vec![WIRE_VERSION];
        let mut payload: &[u8] = &[];
        match self {
            Response::Stored => h.push(TAG_STORED),
            Response::Data(data) => {
                h.push(TAG_DATA);
                let n = len_u32("shard", data.len(), u64::from(MAX_SHARD_LEN))?;
                h.extend_from_slice(&n.to_le_bytes());
                payload = data;
            }
            Response::Has(lens) => {
                h.push(TAG_HAS_REPLY);
                let n = len_u32("has reply", lens.len(), MAX_IDS as u64)?;
                h.extend_from_slice(&n.to_le_bytes());
                for l in lens {
                    match l {
                        None => h.push(0),
                        Some(l) => {
                            h.push(1);
                            h.extend_from_slice(&l.to_le_bytes());
                        }
                    }
                }
            }
            Response::Deleted => h.push(TAG_DELETED),
            Response::Ack => h.push(TAG_ACK),
            Response::Info(info) => {
                h.push(TAG_INFO_REPLY);
                h.push(u8::from(info.storage));
                h.extend_from_slice(&info.capacity.to_le_bytes());
                h.extend_from_slice(&info.used.to_le_bytes());
                h.extend_from_slice(&info.shards.to_le_bytes());
                let n = len_u32("zone", info.zone.len(), MAX_ZONE_LEN as u64)?;
                h.push(n as u8);
                h.extend_from_slice(info.zone.as_bytes());
            }
            Response::OwnerUsage(u) => {
                h.push(TAG_OWNER_USAGE_REPLY);
                for v in [u.used, u.quota, u.capacity, u.node_used] {
                    h.extend_from_slice(&v.to_le_bytes());
                }
            }
            Response::Root(record) => {
                h.push(TAG_ROOT);
                put_record(&mut h, record)?;
            }
            Response::Shares(records) => {
                h.push(TAG_SHARES);
                let n = len_u32("share records", records.len(), MAX_SHARES as u64)?;
                h.extend_from_slice(&(n as u16).to_le_bytes());
                for record in records {
                    put_record_of(&mut h, "share record", record, MAX_SHARE_LEN)?;
                }
            }
            Response::Error(e) => {
                h.push(TAG_ERROR);
                h.extend_from_slice(&e.code.to_u16().to_le_bytes());
                let n = len_u32("error message", e.message.len(), MAX_ERROR_MESSAGE as u64)?;
                h.extend_from_slice(&(n as u16).to_le_bytes());
                h.extend_from_slice(e.message.as_bytes());
            }
            Response::Proof(p) => {
                h.push(TAG_PROOF);
                let n = len_u32("proof chunk", p.chunk.len(), crate::audit::CHUNK_LEN)?;
                h.extend_from_slice(&(n as u16).to_le_bytes());
                h.extend_from_slice(&p.chunk);
                let n = len_u32(
                    "proof siblings",
                    p.siblings.len(),
                    crate::audit::MAX_PROOF_DEPTH as u64,
                )?;
                h.push(n as u8);
                for s in &p.siblings {
                    h.extend_from_slice(s);
                }
            }
            Response::Beat { mirrored_bytes } => {
                h.push(TAG_BEAT);
                h.extend_from_slice(&mirrored_bytes.to_le_bytes());
            }
        }
        Ok(Encoded { header: h, payload })
    }

    /// Bytes before a [`Response::Data`]'s payload: version, tag, length u32.
    pub const DATA_HEAD: usize = 6;

    /// Decodes a body read in two parts, its first [`DATA_HEAD`](Self::DATA_HEAD) bytes and the
    /// rest: a data response takes `rest` as its payload without moving it; anything else is
    /// joined and decoded as by [`decode`](Self::decode).
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    pub fn decode_parts(head: [u8; Self::DATA_HEAD], rest: Vec<u8>) -> Result<Response> {
        let n = u32::from_le_bytes([head[2], head[3], head[4], head[5]]);
        if head[0] == WIRE_VERSION
            && head[1] == TAG_DATA
            && n <= MAX_SHARD_LEN
            && n as usize == rest.len()
        {
            return Ok(Response::Data(rest));
        }
        let mut body = Vec::with_capacity(head.len() + rest.len());
        body.extend_from_slice(&head);
        body.extend_from_slice(&rest);
        Response::decode(body)
    }

    /// Decodes a body read from the wire.
    ///
    /// # Errors
    /// [`Error::Malformed`] or [`Error::TooLarge`]; never panics.
    pub fn decode(body: Vec<u8>) -> Result<Response> {
        let mut r = Reader::new(&body, "shard response");
        r.version()?;
        let resp = match r.u8()? {
            TAG_STORED => Response::Stored,
            TAG_DATA => {
                let n = r.u32()?;
                if n > MAX_SHARD_LEN {
                    return Err(Error::TooLarge {
                        what: "shard",
                        size: u64::from(n),
                        limit: u64::from(MAX_SHARD_LEN),
                    });
                }
                let start = r.pos;
                r.take(n as usize)?;
                r.end()?;
                // Shift the payload to the front in place: no second allocation of a shard.
                let mut body = body;
                body.drain(..start);
                return Ok(Response::Data(body));
            }
            TAG_HAS_REPLY => {
                let n = r.count(MAX_IDS, "has reply")?;
                let mut lens = Vec::with_capacity(n);
                for _ in 0..n {
                    lens.push(match r.u8()? {
                        0 => None,
                        1 => Some(r.u32()?),
                        f => return Err(r.bad(format!("has flag {f}"))),
                    });
                }
                Response::Has(lens)
            }
            TAG_DELETED => Response::Deleted,
            TAG_ACK => Response::Ack,
            TAG_INFO_REPLY => {
                let storage = match r.u8()? {
                    0 => false,
                    1 => true,
                    f => return Err(r.bad(format!("storage flag {f}"))),
                };
                let capacity = r.u64()?;
                let used = r.u64()?;
                let shards = r.u64()?;
                let n = usize::from(r.u8()?);
                if n > MAX_ZONE_LEN {
                    return Err(Error::TooLarge {
                        what: "zone",
                        size: n as u64,
                        limit: MAX_ZONE_LEN as u64,
                    });
                }
                let zone = r.string(n)?;
                Response::Info(NodeInfo {
                    storage,
                    capacity,
                    used,
                    shards,
                    zone,
                })
            }
            TAG_OWNER_USAGE_REPLY => Response::OwnerUsage(OwnerUsage {
                used: r.u64()?,
                quota: r.u64()?,
                capacity: r.u64()?,
                node_used: r.u64()?,
            }),
            TAG_ERROR => {
                let code = ErrorCode::from_u16(r.u16()?);
                let n = usize::from(r.u16()?);
                if n > MAX_ERROR_MESSAGE {
                    return Err(Error::TooLarge {
                        what: "error message",
                        size: n as u64,
                        limit: MAX_ERROR_MESSAGE as u64,
                    });
                }
                let message = r.string(n)?;
                Response::Error(RemoteError { code, message })
            }
            TAG_ROOT => Response::Root(r.record()?),
            TAG_SHARES => {
                let n = at_most("share records", usize::from(r.u16()?), MAX_SHARES)?;
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    records.push(r.record_of("share record", MAX_SHARE_LEN)?);
                }
                Response::Shares(records)
            }
            TAG_PROOF => {
                let n = usize::from(r.u16()?);
                if n as u64 > crate::audit::CHUNK_LEN {
                    return Err(Error::TooLarge {
                        what: "proof chunk",
                        size: n as u64,
                        limit: crate::audit::CHUNK_LEN,
                    });
                }
                let chunk = r.take(n)?.to_vec();
                let n = usize::from(r.u8()?);
                if n > crate::audit::MAX_PROOF_DEPTH {
                    return Err(Error::TooLarge {
                        what: "proof siblings",
                        size: n as u64,
                        limit: crate::audit::MAX_PROOF_DEPTH as u64,
                    });
                }
                let mut siblings = Vec::with_capacity(n);
                for _ in 0..n {
                    siblings.push(r.array()?);
                }
                Response::Proof(crate::audit::Proof { chunk, siblings })
            }
            TAG_BEAT => Response::Beat {
                mirrored_bytes: r.u64()?,
            },
            t => return Err(r.bad(format!("unknown tag {t}"))),
        };
        r.end()?;
        Ok(resp)
    }
}

impl Ask {
    /// Encodes the ask (a gossipsub payload), checking every limit.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when there are too many ids or addresses.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut h = vec![WIRE_VERSION];
        h.extend_from_slice(&self.ask.to_le_bytes());
        put_ids(&mut h, &self.ids)?;
        let n = len_u32("ask addresses", self.addrs.len(), MAX_ASK_ADDRS as u64)?;
        h.push(n as u8);
        for a in &self.addrs {
            let bytes = a.to_vec();
            let l = len_u32("address", bytes.len(), MAX_ADDR_LEN as u64)?;
            h.extend_from_slice(&(l as u16).to_le_bytes());
            h.extend_from_slice(&bytes);
        }
        Ok(h)
    }

    /// Decodes an ask.
    ///
    /// # Errors
    /// [`Error::Malformed`] or [`Error::TooLarge`]; never panics.
    pub fn decode(body: &[u8]) -> Result<Ask> {
        if body.len() > MAX_ASK_LEN {
            return Err(Error::TooLarge {
                what: "lookup ask",
                size: body.len() as u64,
                limit: MAX_ASK_LEN as u64,
            });
        }
        let mut r = Reader::new(body, "lookup ask");
        r.version()?;
        let ask = r.u64()?;
        let ids = r.ids()?;
        let n = at_most("ask addresses", usize::from(r.u8()?), MAX_ASK_ADDRS)?;
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let l = usize::from(r.u16()?);
            if l > MAX_ADDR_LEN {
                return Err(Error::TooLarge {
                    what: "address",
                    size: l as u64,
                    limit: MAX_ADDR_LEN as u64,
                });
            }
            let bytes = r.take(l)?;
            let addr =
                Multiaddr::try_from(bytes.to_vec()).map_err(|e| r.bad(format!("address: {e}")))?;
            addrs.push(addr);
        }
        r.end()?;
        Ok(Ask { ask, ids, addrs })
    }
}

/// A bounds-checked cursor over a received body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn bad(&self, reason: String) -> Error {
        Error::Malformed {
            what: self.what,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                self.bad(format!(
                    "truncated: need {n} bytes at offset {}, have {}",
                    self.pos,
                    self.buf.len().saturating_sub(self.pos)
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn shard_id(&mut self) -> Result<ShardId> {
        Ok(ShardId(self.array()?))
    }

    /// A root record: length u32 (≤ [`MAX_ROOT_LEN`], checked before allocating) and bytes.
    fn record(&mut self) -> Result<Vec<u8>> {
        self.record_of("root record", MAX_ROOT_LEN)
    }

    /// `len u32` (at most `limit`) and that many bytes.
    fn record_of(&mut self, what: &'static str, limit: usize) -> Result<Vec<u8>> {
        let n = self.u32()? as usize;
        if n > limit {
            return Err(Error::TooLarge {
                what,
                size: n as u64,
                limit: limit as u64,
            });
        }
        Ok(self.take(n)?.to_vec())
    }

    /// A shard's bytes at the end of a frame: `len u32` (at most [`MAX_SHARD_LEN`]) and exactly
    /// that many bytes, nothing after. Returns where they start.
    fn shard_tail(&mut self) -> Result<usize> {
        let n = self.u32()?;
        if n > MAX_SHARD_LEN {
            return Err(Error::TooLarge {
                what: "shard",
                size: u64::from(n),
                limit: u64::from(MAX_SHARD_LEN),
            });
        }
        let start = self.pos;
        self.take(n as usize)?;
        self.end()?;
        Ok(start)
    }

    fn version(&mut self) -> Result<()> {
        match self.u8()? {
            WIRE_VERSION => Ok(()),
            v => Err(self.bad(format!(
                "unsupported wire version {v} (this node speaks version {WIRE_VERSION})"
            ))),
        }
    }

    fn count(&mut self, limit: usize, what: &'static str) -> Result<usize> {
        at_most(what, self.u32()? as usize, limit)
    }

    fn ids(&mut self) -> Result<Vec<ShardId>> {
        let n = self.count(MAX_IDS, "shard id list")?;
        // The count is bounded, and the bytes must be present before anything is allocated.
        let bytes = self.take(n * 32)?;
        Ok(bytes
            .chunks_exact(32)
            .map(|c| {
                let mut a = [0u8; 32];
                a.copy_from_slice(c);
                ShardId(a)
            })
            .collect())
    }

    fn auth(&mut self) -> Result<Auth> {
        Ok(Auth {
            public_key: self.array()?,
            timestamp_ms: self.u64()?,
            nonce: self.array()?,
            signature: self.array()?,
        })
    }

    fn string(&mut self, n: usize) -> Result<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("string is not UTF-8".into()))
    }

    fn end(&self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.bad(format!("{} trailing bytes", self.buf.len() - self.pos)))
        }
    }
}
