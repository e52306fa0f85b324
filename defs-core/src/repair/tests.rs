//! Repair against the in-memory shard client: lost holders replaced before a segment is down to
//! `k`, the holder record kept and laid over the manifest after a restart, shards marked lost
//! by an audit re-created, segments below `k` reported lost, never faked.

use std::path::Path;

use super::*;
use crate::durability::Durability;
use crate::object::{ManifestStore, Source, Stored};
use crate::pipeline::{LayoutConfig, Mode, WrapKey};
use crate::remote::ShardClient;
use crate::remote::memory::MemoryClient;

struct Bytes(Vec<u8>);

impl Source for Bytes {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = offset as usize;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        Ok(())
    }
}

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32 ^ seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn objects(client: &Arc<MemoryClient>, dir: &Path) -> Arc<Objects> {
    let layout = LayoutConfig {
        mode: Mode::RsSize,
        k: 3,
        m: 2,
        shard_size: 64 << 10,
        ..LayoutConfig::default()
    };
    Arc::new(Objects::new(
        client.clone(),
        WrapKey::from_bytes([5; 32]),
        layout,
        Some(ManifestStore::open(dir).unwrap()),
    ))
}

async fn put(objects: &Objects, bytes: &[u8]) -> Stored {
    objects
        .put(
            Arc::new(Bytes(bytes.to_vec())),
            bytes.len() as u64,
            None,
            &|_| {},
        )
        .await
        .unwrap()
}

async fn read_all(objects: &Objects, stored: &Stored) -> Vec<u8> {
    let m = objects.manifest(stored.file, &stored.key).await.unwrap();
    let (start, bytes) = objects
        .read_covering(stored.file, &m, &stored.key, 0, m.size)
        .await
        .unwrap();
    assert_eq!(start, 0);
    bytes
}

async fn durability(objects: &Objects, stored: &Stored) -> Durability {
    let m = objects.manifest(stored.file, &stored.key).await.unwrap();
    Durability::assess(&m, &objects.client().liveness().await.unwrap())
}

/// Node indices of `client` holding shards of `stored` per its manifest, most loaded first.
fn holders_of(client: &MemoryClient, stored: &Stored) -> Vec<usize> {
    let mut load: Vec<(usize, usize)> = (0..12)
        .map(|i| {
            let id = client.node(i);
            let n = stored
                .manifest
                .segments
                .iter()
                .flat_map(|s| &s.shards)
                .filter(|sh| sh.holders.contains(&id))
                .count();
            (i, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    load.sort_by_key(|l| std::cmp::Reverse(l.1));
    load.into_iter().map(|l| l.0).collect()
}

#[tokio::test]
async fn lost_holders_are_replaced_and_the_file_survives_losses_beyond_its_parity() {
    // Nine nodes, and three that join later.
    let client = Arc::new(MemoryClient::new(12));
    for fresh in 9..12 {
        client.set_up(fresh, false);
    }
    let dir = tempfile::tempdir().unwrap();
    let objects = objects(&client, dir.path());
    let bytes = data(1_000_000, 1);
    let stored = put(&objects, &bytes).await;
    let repairer = Repairer::new(objects.clone(), RepairConfig::default());
    let key = Some(stored.key.clone());

    // Waves of two original holders going and one fresh node joining, repair in between.
    let originals = holders_of(&client, &stored);
    let mut down = Vec::new();
    for wave in 0..3 {
        for &i in originals.iter().skip(wave * 2).take(2) {
            client.set_up(i, false);
            down.push(i);
        }
        client.set_up(9 + wave, true);
        assert!(!durability(&objects, &stored).await.on_network());
        let r = repairer
            .repair_file(stored.file, key.as_ref())
            .await
            .unwrap();
        assert!(r.repaired > 0, "wave {wave}: {r:?}");
        assert_eq!(r.lost, 0, "{r:?}");
        assert_eq!(r.healthy, r.segments, "{r:?}");
        let d = durability(&objects, &stored).await;
        assert!(d.on_network(), "wave {wave}: {d}");
        // A second check finds nothing to do.
        let again = repairer
            .repair_file(stored.file, key.as_ref())
            .await
            .unwrap();
        assert_eq!((again.repaired, again.healthy), (0, again.segments));
    }
    // Six of the nine original nodes down, more than the parity of any segment: the file reads
    // back, bit-exact.
    assert_eq!(down.len(), 6);
    assert_eq!(read_all(&objects, &stored).await, bytes);

    // The holder record outlives the process: a new object layer over the same dir sees it.
    let reopened = self::objects(&client, dir.path());
    assert!(durability(&reopened, &stored).await.on_network());
    let status = repairer.status();
    assert!(status.shards_restored > 0 && status.bytes_restored > 0);
}

#[tokio::test]
async fn a_shard_marked_lost_by_an_audit_is_re_created_elsewhere() {
    let client = Arc::new(MemoryClient::new(9));
    let dir = tempfile::tempdir().unwrap();
    let objects = objects(&client, dir.path());
    let bytes = data(300_000, 2);
    let stored = put(&objects, &bytes).await;
    let repairer = Repairer::new(objects.clone(), RepairConfig::default());
    let shard = &stored.manifest.segments[0].shards[1];
    let bad_node = shard.holders[0];
    assert_eq!(client.corrupt(shard.id), 1);
    repairer.mark_lost(shard.id, bad_node);
    let r = repairer
        .repair_file(stored.file, Some(&stored.key))
        .await
        .unwrap();
    assert_eq!((r.repaired, r.shards_restored), (1, 1), "{r:?}");
    let m = objects.manifest(stored.file, &stored.key).await.unwrap();
    let now = &m.segments[0].shards[1].holders;
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], bad_node);
    // The re-created shard is the original one, byte for byte (its id is its hash).
    let b = client.fetch(shard.id, now.clone()).await.unwrap();
    assert_eq!(blake3::hash(&b).as_bytes(), &shard.id.0);
    assert_eq!(read_all(&objects, &stored).await, bytes);
}

#[tokio::test]
async fn a_segment_below_k_is_reported_lost_and_nothing_is_faked() {
    let client = Arc::new(MemoryClient::new(5));
    let dir = tempfile::tempdir().unwrap();
    let objects = objects(&client, dir.path());
    let stored = put(&objects, &data(100_000, 3)).await;
    for i in 0..3 {
        client.set_up(i, false);
    }
    let repairer = Repairer::new(objects.clone(), RepairConfig::default());
    let r = repairer
        .repair_file(stored.file, Some(&stored.key))
        .await
        .unwrap();
    assert_eq!(r.repaired, 0);
    assert_eq!(r.lost, r.segments, "{r:?}");
    assert!(!r.errors.is_empty());
    let status = repairer
        .run_pass(vec![(stored.file, Some(stored.key.clone()))], &|_, _| {})
        .await;
    assert_eq!(status.lost, r.segments);
    assert_eq!(status.shards_restored, 0);
}

#[tokio::test]
async fn a_file_known_only_by_its_id_is_opened_with_the_owners_key_and_repaired() {
    let client = Arc::new(MemoryClient::new(9));
    let dir = tempfile::tempdir().unwrap();
    let objects = objects(&client, dir.path());
    let bytes = data(400_000, 4);
    let stored = put(&objects, &bytes).await;
    let gone = holders_of(&client, &stored)[0];
    client.set_up(gone, false);
    // Another machine of the same owner: no local manifest copy, only the file id.
    let other = tempfile::tempdir().unwrap();
    let fresh = self::objects(&client, other.path());
    let repairer = Repairer::new(fresh.clone(), RepairConfig::default());
    let status = repairer
        .run_pass(vec![(stored.file, None)], &|_, _| {})
        .await;
    assert!(status.shards_restored > 0, "{status:?}");
    assert_eq!(status.backlog, 0);
    assert!(durability(&fresh, &stored).await.on_network());
}
