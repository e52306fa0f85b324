//! The seed inputs of every target, made by DeFS's own encoders (never typed by hand): every
//! wire message variant, every manifest body version, signed root records, snapshots and
//! segments of a real namespace, the default config, a real key file and a real split key.
//! `examples/write_seeds.rs` writes them to `fuzz/seeds/<target>/<name>`.

use bytes::Bytes;
use defs_core::manifest::{Extent, Manifest, PackRange};
use defs_core::root_record::{ObjectRef, RootBody, RootRecord, WriterId};
use defs_core::shard_store::{Quotas, ShardStore};
use defs_core::snapshot::segment::{SegmentHead, diff, trailer_of};
use defs_core::types::{FileId, NodeId, ShardId};
use defs_core::{MetaDb, SignDomain};
use defs_net::audit;
use defs_net::control::{ControlReply, ControlRequest};
use defs_net::protocol::{Ask, Auth, ErrorCode, NodeInfo, Request, Response, auth_message};

use crate::{fixtures, scratch};

/// One seed: the target it is for, a file name, its bytes.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target's name (see [`crate::TARGETS`]).
    pub target: &'static str,
    /// File name under `fuzz/seeds/<target>/`.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

/// A failure to make a seed (an encoder refused what it made itself).
#[derive(Debug)]
pub struct SeedError(pub String);

impl std::fmt::Display for SeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SeedError {}

fn err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> SeedError {
    move |e| SeedError(format!("{what}: {e}"))
}

type Result<T> = std::result::Result<T, SeedError>;

/// Collects seeds for one target.
struct Out<'a>(&'a mut Vec<Seed>, &'static str);

impl Out<'_> {
    fn add(&mut self, name: impl Into<String>, bytes: Vec<u8>) {
        self.0.push(Seed {
            target: self.1,
            name: name.into(),
            bytes,
        });
    }
}

/// Every seed of every target.
///
/// # Errors
/// When an encoder refuses its own output (a broken build).
pub fn all() -> Result<Vec<Seed>> {
    let mut v = Vec::new();
    let record = signed_record(3)?;
    let requests = requests(&record)?;
    let responses = responses(&record)?;
    {
        let mut o = Out(&mut v, "wire_request");
        for (name, r) in &requests {
            o.add(*name, frame(r.encode())?[4..].to_vec());
        }
    }
    {
        let mut o = Out(&mut v, "wire_response");
        for (name, r) in &responses {
            o.add(*name, frame(r.encode())?[4..].to_vec());
        }
    }
    {
        let mut o = Out(&mut v, "wire_codec");
        for (name, r) in &requests {
            o.add(
                format!("request_{name}"),
                [&[0u8][..], &frame(r.encode())?].concat(),
            );
        }
        for (name, r) in &responses {
            o.add(
                format!("response_{name}"),
                [&[1u8][..], &frame(r.encode())?].concat(),
            );
        }
    }
    lookup_asks(&mut Out(&mut v, "lookup_ask"))?;
    audit_proofs(&mut Out(&mut v, "audit_proof"))?;
    control_messages(&mut Out(&mut v, "control_message"))?;
    manifests(&mut Out(&mut v, "manifest"))?;
    shards(&mut Out(&mut v, "shard_verify"));
    pack_files(&mut Out(&mut v, "shard_pack"))?;
    root_records(&mut Out(&mut v, "root_record"))?;
    snapshots(&mut v)?;
    config_files(&mut Out(&mut v, "config_file"))?;
    identity_files(&mut Out(&mut v, "identity_file"))?;
    key_shares(&mut Out(&mut v, "key_share"))?;
    Ok(v)
}

fn frame(enc: defs_net::Result<defs_net::protocol::Encoded<'_>>) -> Result<Vec<u8>> {
    enc.and_then(|e| e.to_frame()).map_err(err("frame"))
}

fn body(n: u8) -> RootBody {
    RootBody {
        writer: WriterId([n; 16]),
        lease_secs: 300,
        writer_name: format!("host-{n}"),
        snapshot: ObjectRef {
            file: FileId([n; 32]),
            len: 4096,
            trailer: [n ^ 0x55; 32],
        },
        segments: (0..n)
            .map(|i| ObjectRef {
                file: FileId([i; 32]),
                len: 100 + u64::from(i),
                trailer: [i; 32],
            })
            .collect(),
        versions: (n % 2 == 1).then_some(FileId([0xee; 32])),
        kept: n.is_multiple_of(3),
    }
}

fn signed_record(n: u8) -> Result<RootRecord> {
    RootRecord::sign(
        fixtures::identity(),
        u64::from(n),
        1_000 * u64::from(n),
        &body(n),
    )
    .map_err(err("root record"))
}

fn auth(id: &ShardId, len: u32) -> Auth {
    let identity = fixtures::identity();
    let nonce = [9; 16];
    let timestamp_ms = 1_700_000_000_000;
    let msg = auth_message(id, len, &identity.node_id(), timestamp_ms, &nonce);
    Auth {
        public_key: identity.public().to_bytes(),
        timestamp_ms,
        nonce,
        signature: identity.sign(SignDomain::StoreShard, &msg).0,
    }
}

fn requests(record: &RootRecord) -> Result<Vec<(&'static str, Request)>> {
    let data = Bytes::from(vec![0xab; 300]);
    let id = ShardId(*blake3::hash(&data).as_bytes());
    let crc = crc32fast::hash(&data);
    Ok(vec![
        (
            "store",
            Request::Store {
                id,
                auth: auth(&id, 300),
                crc,
                data: data.clone(),
            },
        ),
        ("fetch", Request::Fetch { id, range: None }),
        (
            "fetch_range",
            Request::Fetch {
                id,
                range: Some((17, 100)),
            },
        ),
        (
            "has",
            Request::Has {
                ids: vec![id, ShardId([1; 32]), ShardId([2; 32])],
            },
        ),
        (
            "delete",
            Request::Delete {
                id,
                auth: auth(&id, 0),
            },
        ),
        (
            "holders",
            Request::Holders {
                ask: 77,
                ids: vec![id],
            },
        ),
        ("info", Request::Info),
        (
            "put_root",
            Request::PutRoot {
                record: record.as_bytes().to_vec(),
            },
        ),
        (
            "get_root",
            Request::GetRoot {
                owner: fixtures::identity().node_id(),
            },
        ),
        (
            "put_share",
            Request::PutShare {
                record: vec![0x5a; 300],
            },
        ),
        (
            "list_shares",
            Request::ListShares {
                recipient: NodeId([6; 32]),
            },
        ),
        ("audit", Request::Audit { id, chunk: 0 }),
        ("pair", Request::Pair),
        (
            "heartbeat",
            Request::Heartbeat {
                primary_bytes: 1 << 30,
            },
        ),
        (
            "mirror",
            Request::Mirror {
                id,
                owners: vec![NodeId([4; 32]), NodeId([5; 32])],
                crc,
                data,
            },
        ),
    ])
}

fn responses(record: &RootRecord) -> Result<Vec<(&'static str, Response)>> {
    let shard: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    Ok(vec![
        ("stored", Response::Stored),
        ("data", Response::Data(vec![0x5a; 200])),
        ("data_empty", Response::Data(Vec::new())),
        ("has", Response::Has(vec![Some(300), None, Some(7)])),
        ("deleted", Response::Deleted),
        ("ack", Response::Ack),
        (
            "info",
            Response::Info(NodeInfo {
                storage: true,
                capacity: 1 << 40,
                used: 12345,
                shards: 42,
                zone: "eu-west".into(),
            }),
        ),
        ("root", Response::Root(record.as_bytes().to_vec())),
        (
            "shares",
            Response::Shares(vec![record.as_bytes()[..200].to_vec(), vec![3; 64]]),
        ),
        (
            "error",
            Response::error(ErrorCode::QuotaFull, "owner quota reached"),
        ),
        (
            "proof",
            Response::Proof(audit::prove(&shard, 1).map_err(err("proof"))?),
        ),
        ("beat", Response::Beat { mirrored_bytes: 99 }),
    ])
}

fn lookup_asks(o: &mut Out<'_>) -> Result<()> {
    let addrs = ["/ip4/127.0.0.1/tcp/4001", "/ip6/::1/udp/4001/quic-v1"]
        .iter()
        .map(|a| a.parse().map_err(err("address")))
        .collect::<Result<Vec<_>>>()?;
    for (name, ask) in [
        (
            "two_ids",
            Ask {
                ask: 1,
                ids: vec![ShardId([1; 32]), ShardId([2; 32])],
                addrs,
            },
        ),
        (
            "no_addrs",
            Ask {
                ask: u64::MAX,
                ids: vec![ShardId([3; 32])],
                addrs: Vec::new(),
            },
        ),
    ] {
        o.add(name, ask.encode().map_err(err("ask"))?);
    }
    Ok(())
}

fn audit_proofs(o: &mut Out<'_>) -> Result<()> {
    for (len, chunk) in [
        (1usize, 0u32),
        (1024, 0),
        (5000, 3),
        (9000, 8),
        (70_000, 33),
    ] {
        let shard: Vec<u8> = (0..len).map(|i| (i * 13 % 256) as u8).collect();
        let proof = audit::prove(&shard, chunk).map_err(err("proof"))?;
        let wire = frame(Response::Proof(proof).encode())?;
        let input = [
            &chunk.to_le_bytes()[..],
            &(len as u32).to_le_bytes(),
            &shard,
            &wire[4..],
        ];
        o.add(format!("shard{len}_chunk{chunk}"), input.concat());
    }
    Ok(())
}

fn control_messages(o: &mut Out<'_>) -> Result<()> {
    let requests = [
        ("id", ControlRequest::Id),
        ("status", ControlRequest::Status { json: true }),
        ("peers", ControlRequest::Peers { json: false }),
        (
            "put",
            ControlRequest::Put {
                path: "/home/u/file".into(),
                mode: "rs-size".into(),
                rs: Some((4, 2)),
            },
        ),
        (
            "get",
            ControlRequest::Get {
                file_id: "ab".repeat(32),
                out: "/tmp/out".into(),
                force: true,
            },
        ),
        (
            "sync",
            ControlRequest::Sync {
                path: Some("/a".into()),
            },
        ),
        (
            "repair",
            ControlRequest::Repair {
                files: vec!["cd".repeat(32), "ef".repeat(32)],
            },
        ),
        ("audit", ControlRequest::Audit),
    ];
    for (name, r) in requests {
        o.add(
            format!("request_{name}"),
            [vec![0], r.encode().map_err(err("control"))?].concat(),
        );
    }
    let replies = [
        ("progress", ControlReply::Progress { done: 5, total: 10 }),
        ("done", ControlReply::Done("stored".into())),
        ("failed", ControlReply::Failed("no peers".into())),
    ];
    for (name, r) in replies {
        o.add(
            format!("reply_{name}"),
            [vec![1], r.encode().map_err(err("control"))?].concat(),
        );
    }
    Ok(())
}

fn manifests(o: &mut Out<'_>) -> Result<()> {
    let (plain, _, _) = fixtures::encoded_file();
    let mut holders = plain.clone();
    for (i, s) in holders.segments.iter_mut().enumerate() {
        for sh in &mut s.shards {
            sh.holders = vec![NodeId([i as u8; 32]); i % 3];
        }
    }
    // A pack of three members (body v2).
    let mut packed = plain.clone();
    packed.pack = Some(vec![
        PackRange {
            offset: 0,
            len: 100,
        },
        PackRange {
            offset: 100,
            len: 250,
        },
        PackRange {
            offset: 400,
            len: 300,
        },
    ]);
    // Extents: the first segment stores two runs, the second is a hole (body v3).
    let mut sparse = plain.clone();
    let g = sparse.geometry;
    let seg = &mut sparse.segments[0];
    seg.extents = Some(vec![
        Extent { start: 2, len: 30 },
        Extent { start: 50, len: 20 },
    ]);
    seg.shard_len = g.shard_len(50);
    for sh in &mut seg.shards {
        sh.len = seg.shard_len + 16;
    }
    let seg = &mut sparse.segments[1];
    seg.extents = Some(Vec::new());
    seg.shard_len = 0;
    seg.shards.clear();
    let mut sparse_pack = sparse.clone();
    sparse_pack.pack = packed.pack.clone();
    let key = fixtures::file_key();
    let wrap = fixtures::wrap_key();
    for (name, m) in [
        ("v1", plain),
        ("v1_holders", &holders),
        ("v2_pack", &packed),
        ("v3_extents", &sparse),
        ("v3_pack", &sparse_pack),
    ] {
        o.add(format!("body_{name}"), m.encode_body().map_err(err(name))?);
        o.add(
            format!("sealed_{name}"),
            m.seal(&key, &wrap).map_err(err(name))?.bytes,
        );
    }
    let empty = Manifest {
        size: 0,
        segments: Vec::new(),
        pack: None,
        ..plain.clone()
    };
    o.add("body_empty", empty.encode_body().map_err(err("empty"))?);
    Ok(())
}

fn shards(o: &mut Out<'_>) {
    let (_, segments, _) = fixtures::encoded_file();
    for (s, seg) in segments.iter().enumerate().take(3) {
        for (i, shard) in seg.shards.iter().enumerate() {
            // Shard i as stored; a second seed leaves out another shard (rebuilt from parity).
            let other = (i + 1) % seg.shards.len();
            o.add(
                format!("seg{s}_shard{i}"),
                [&[s as u8, i as u8, 0][..], &shard.bytes].concat(),
            );
            o.add(
                format!("seg{s}_shard{i}_without{other}"),
                [&[s as u8, i as u8, 1 << other][..], &shard.bytes].concat(),
            );
        }
    }
}

fn pack_files(o: &mut Out<'_>) -> Result<()> {
    let dir = scratch::path("seed-shards");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(err("shard dir"))?;
    {
        let store = ShardStore::open(
            &dir,
            Quotas {
                capacity: 1 << 30,
                per_owner: 0,
            },
        )
        .map_err(err("shard store"))?;
        for n in [100usize, 5000, 9] {
            let bytes = vec![n as u8; n];
            let id = ShardId(*blake3::hash(&bytes).as_bytes());
            store.put(id, NodeId([1; 32]), &bytes).map_err(err("put"))?;
        }
    }
    let mut found = 0;
    for path in walk(&dir) {
        if path.extension().is_some_and(|e| e == "pack") {
            let bytes = std::fs::read(&path).map_err(err("pack"))?;
            o.add(format!("pack{found}"), bytes);
            found += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if found == 0 {
        return Err(SeedError("the shard store wrote no pack file".into()));
    }
    Ok(())
}

/// Every file under `dir` (iteratively).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn root_records(o: &mut Out<'_>) -> Result<()> {
    for n in [1u8, 2, 3] {
        let record = signed_record(n)?.into_bytes();
        let unsigned = &record[..record.len() - 64];
        o.add(format!("record{n}"), [&[0u8][..], &record].concat());
        o.add(
            format!("record{n}_to_sign"),
            [&[1u8][..], unsigned].concat(),
        );
        o.add(format!("body{n}"), body(n).encode().map_err(err("body"))?);
    }
    Ok(())
}

fn snapshots(v: &mut Vec<Seed>) -> Result<()> {
    let base = fixtures::base_snapshot().clone();
    let dir = scratch::path("seed-db");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(err("db dir"))?;
    let db = MetaDb::open_with(&dir, None).map_err(err("db"))?;
    fixtures::populate(&db, 0);
    let mut same = Vec::new();
    db.write_snapshot(&mut same).map_err(err("snapshot"))?;
    if same != base {
        return Err(SeedError(
            "the fixture namespace's snapshot is not reproducible".into(),
        ));
    }
    fixtures::populate(&db, 1);
    let mut next = Vec::new();
    db.write_snapshot(&mut next).map_err(err("snapshot"))?;
    let empty_dir = scratch::path("seed-db-empty");
    let _ = std::fs::remove_dir_all(&empty_dir);
    std::fs::create_dir_all(&empty_dir).map_err(err("db dir"))?;
    let mut empty = Vec::new();
    MetaDb::open_with(&empty_dir, None)
        .and_then(|db| db.write_snapshot(&mut empty))
        .map_err(err("empty snapshot"))?;
    let trailer = trailer_of(&base).ok_or(SeedError("base snapshot without trailer".into()))?;
    let head = SegmentHead {
        base: trailer,
        index: 1,
        prev: trailer,
        next_ino: 0,
    };
    let (segment, _) = diff(base.as_slice(), next.as_slice(), head).map_err(err("diff"))?;
    let (shrink, _) = diff(base.as_slice(), empty.as_slice(), head).map_err(err("diff"))?;
    let (nothing, _) = diff(base.as_slice(), base.as_slice(), head).map_err(err("diff"))?;
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty_dir);
    let mut o = Out(v, "snapshot");
    for (name, s) in [("base", base), ("grown", next), ("empty", empty)] {
        with_and_without_trailer(&mut o, name, &s);
    }
    let mut o = Out(v, "snapshot_segment");
    for (name, s) in [("grow", segment), ("shrink", shrink), ("nothing", nothing)] {
        with_and_without_trailer(&mut o, name, &s);
    }
    Ok(())
}

/// Seeds for a target that takes a stream as it is (first byte 0) or completes its trailer
/// (first byte 1).
fn with_and_without_trailer(o: &mut Out<'_>, name: &str, stream: &[u8]) {
    o.add(name, [&[0u8][..], stream].concat());
    let body = &stream[..stream.len().saturating_sub(32)];
    o.add(format!("{name}_to_hash"), [&[1u8][..], body].concat());
}

fn config_files(o: &mut Out<'_>) -> Result<()> {
    o.add(
        "default",
        mount_helper::config_file::default_toml().into_bytes(),
    );
    o.add(
        "difficulty",
        mount_helper::config_file::initial_toml(14).into_bytes(),
    );
    let mut c = defs_core::Config::default();
    c.node.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.node.mdns = false;
    o.add(
        "serde",
        toml::to_string(&c).map_err(err("config"))?.into_bytes(),
    );
    Ok(())
}

fn identity_files(o: &mut Out<'_>) -> Result<()> {
    let path = scratch::path("seed-identity.key");
    let _ = std::fs::remove_file(&path);
    fixtures::identity()
        .write_new(&path)
        .map_err(err("identity"))?;
    let bytes = std::fs::read(&path).map_err(err("identity"))?;
    let _ = std::fs::remove_file(&path);
    o.add("fixture", [&[0u8][..], &bytes].concat());
    o.add(
        "fixture_to_check",
        [&[1u8][..], &bytes[..bytes.len() - 4]].concat(),
    );
    Ok(())
}

fn key_shares(o: &mut Out<'_>) -> Result<()> {
    let identity = fixtures::identity();
    let shares = defs_core::identity::keyshare::split(identity, 3, 5).map_err(err("split"))?;
    let lines: Vec<String> = shares.iter().map(ToString::to_string).collect();
    o.add(
        "all_five",
        format!("# five shares\n{}\n", lines.join("\n")).into_bytes(),
    );
    o.add(
        "three",
        format!("{}\n\n{}\n{}\n", lines[0], lines[2], lines[4]).into_bytes(),
    );
    o.add("two", format!("{}\n{}\n", lines[1], lines[3]).into_bytes());
    let other = defs_core::identity::keyshare::split(identity, 2, 3).map_err(err("split"))?;
    o.add(
        "mixed",
        format!("{}\n{}\n", lines[0], other[1]).into_bytes(),
    );
    Ok(())
}

/// The files in `dir` (a target's `seeds/` or `regressions/` directory), sorted by name; none
/// when it does not exist.
pub fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}
