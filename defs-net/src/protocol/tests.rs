use super::encoding::*;
use super::*;

fn auth() -> Auth {
    Auth {
        public_key: [2; 33],
        timestamp_ms: 7,
        nonce: [3; 16],
        signature: [4; 64],
    }
}

fn requests() -> Vec<Request> {
    vec![
        Request::Store {
            id: ShardId([1; 32]),
            auth: auth(),
            crc: 5,
            data: vec![9; 1000].into(),
        },
        Request::Store {
            id: ShardId([1; 32]),
            auth: auth(),
            crc: 0,
            data: Bytes::new(),
        },
        Request::Fetch {
            id: ShardId([5; 32]),
            range: None,
        },
        Request::Fetch {
            id: ShardId([5; 32]),
            range: Some((10, 20)),
        },
        Request::Has {
            ids: vec![ShardId([1; 32]), ShardId([2; 32])],
        },
        Request::Delete {
            id: ShardId([6; 32]),
            auth: auth(),
        },
        Request::Holders {
            ask: 99,
            ids: vec![ShardId([7; 32])],
        },
        Request::Info,
        Request::OwnerUsage,
        Request::PutRoot {
            record: vec![5; 300],
        },
        Request::GetRoot {
            owner: NodeId([4; 32]),
        },
        Request::PutShare {
            record: vec![8; 400],
        },
        Request::ListShares {
            recipient: NodeId([9; 32]),
        },
        Request::Audit {
            id: ShardId([3; 32]),
            chunk: 17,
        },
        Request::Pair,
        Request::Heartbeat { primary_bytes: 77 },
        Request::Mirror {
            id: ShardId([4; 32]),
            owners: vec![NodeId([5; 32]), NodeId([6; 32])],
            crc: 9,
            data: vec![1; 300].into(),
        },
    ]
}

fn responses() -> Vec<Response> {
    vec![
        Response::Stored,
        Response::Data(vec![1, 2, 3]),
        Response::Has(vec![None, Some(5)]),
        Response::Deleted,
        Response::Ack,
        Response::Info(NodeInfo {
            storage: true,
            capacity: 10,
            used: 3,
            shards: 2,
            zone: "rack-1".into(),
        }),
        Response::OwnerUsage(OwnerUsage {
            used: 1500,
            quota: 2000,
            capacity: 1 << 30,
            node_used: 7,
        }),
        Response::error(ErrorCode::QuotaFull, "full"),
        Response::error(ErrorCode::Rollback, "seq 3 below 4"),
        Response::Root(vec![7; 200]),
        Response::Shares(vec![]),
        Response::Shares(vec![vec![1; 300], vec![2; 4096]]),
        Response::error(ErrorCode::ShareRevoked, "revoked"),
        Response::error(ErrorCode::BadShareRecord, "forged"),
        Response::Proof(crate::audit::Proof {
            chunk: vec![7; 1024],
            siblings: vec![[1; 32], [2; 32]],
        }),
        Response::Proof(crate::audit::Proof {
            chunk: vec![],
            siblings: vec![],
        }),
        Response::Beat { mirrored_bytes: 5 },
        Response::error(ErrorCode::NotPaired, "who are you"),
    ]
}

#[test]
fn messages_round_trip_and_truncations_are_refused() {
    for req in requests() {
        let frame = req.encode().unwrap().to_frame().unwrap();
        let body = frame[4..].to_vec();
        assert_eq!(Request::decode(body.clone()).unwrap(), req);
        for cut in 0..body.len() {
            assert!(Request::decode(body[..cut].to_vec()).is_err());
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(Request::decode(longer).is_err());
    }
    for resp in responses() {
        let frame = resp.encode().unwrap().to_frame().unwrap();
        let body = frame[4..].to_vec();
        assert_eq!(Response::decode(body.clone()).unwrap(), resp);
        for cut in 0..body.len() {
            assert!(Response::decode(body[..cut].to_vec()).is_err());
        }
    }
}

#[test]
fn perturbed_bytes_never_panic() {
    for req in requests() {
        let body = req.encode().unwrap().to_frame().unwrap()[4..].to_vec();
        for i in 0..body.len().min(200) {
            for x in [0x01u8, 0x80, 0xff] {
                let mut b = body.clone();
                b[i] ^= x;
                let _ = Request::decode(b);
            }
        }
    }
}

#[test]
fn oversized_counts_are_refused_before_allocating() {
    // A Has with a count of 2^32-1 ids and no bytes behind it.
    let mut body = vec![WIRE_VERSION, TAG_HAS];
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Request::decode(body), Err(Error::TooLarge { .. })));
    // A store claiming a 4 GiB shard.
    let mut body = vec![WIRE_VERSION, TAG_STORE];
    body.extend_from_slice(&[0; 32 + 33 + 8 + 16 + 64 + 4]);
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Request::decode(body), Err(Error::TooLarge { .. })));
    // Encoding refuses too.
    let too_many = Request::Has {
        ids: vec![ShardId::default(); MAX_IDS + 1],
    };
    assert!(matches!(too_many.encode(), Err(Error::TooLarge { .. })));
    // Root records over 16 KiB, both ways.
    let mut body = vec![WIRE_VERSION, TAG_PUT_ROOT];
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(Request::decode(body), Err(Error::TooLarge { .. })));
    let mut body = vec![WIRE_VERSION, TAG_ROOT];
    body.extend_from_slice(&((MAX_ROOT_LEN + 1) as u32).to_le_bytes());
    body.resize(body.len() + MAX_ROOT_LEN + 1, 0);
    assert!(matches!(
        Response::decode(body),
        Err(Error::TooLarge { .. })
    ));
    let huge = Request::PutRoot {
        record: vec![0; MAX_ROOT_LEN + 1],
    };
    assert!(matches!(huge.encode(), Err(Error::TooLarge { .. })));
    // Share records over 4 KiB and answers over 64 records, both ways; an unknown operation.
    let mut body = vec![WIRE_VERSION, TAG_SHARE, SHARE_PUT];
    body.extend_from_slice(&((MAX_SHARE_LEN + 1) as u32).to_le_bytes());
    body.resize(body.len() + MAX_SHARE_LEN + 1, 0);
    assert!(matches!(Request::decode(body), Err(Error::TooLarge { .. })));
    let huge = Request::PutShare {
        record: vec![0; MAX_SHARE_LEN + 1],
    };
    assert!(matches!(huge.encode(), Err(Error::TooLarge { .. })));
    let mut body = vec![WIRE_VERSION, TAG_SHARES];
    body.extend_from_slice(&u16::MAX.to_le_bytes());
    assert!(matches!(
        Response::decode(body),
        Err(Error::TooLarge { .. })
    ));
    let many = Response::Shares(vec![vec![1]; MAX_SHARES + 1]);
    assert!(matches!(many.encode(), Err(Error::TooLarge { .. })));
    let body = vec![WIRE_VERSION, TAG_SHARE, 3];
    assert!(Request::decode(body).is_err());
}

#[test]
fn asks_round_trip() {
    let ask = Ask {
        ask: 42,
        ids: vec![ShardId([8; 32]); 3],
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
    };
    let b = ask.encode().unwrap();
    assert_eq!(Ask::decode(&b).unwrap(), ask);
    for cut in 0..b.len() {
        assert!(Ask::decode(&b[..cut]).is_err());
    }
}

#[test]
fn an_owners_room_is_the_nodes_free_space_capped_by_what_is_left_of_its_quota() {
    let u = OwnerUsage {
        used: 1500,
        quota: 2000,
        capacity: 10_000,
        node_used: 4000,
    };
    assert_eq!(u.room(), 500);
    // No quota: the node's free space.
    assert_eq!(OwnerUsage { quota: 0, ..u }.room(), 6000);
    // A nearly full node caps a roomy quota.
    assert_eq!(
        OwnerUsage {
            node_used: 9900,
            ..u
        }
        .room(),
        100
    );
    // Over its quota (the quota was lowered since): nothing, never an underflow.
    assert_eq!(OwnerUsage { used: 2500, ..u }.room(), 0);
}
