//! The object layer against the in-memory shard client: round trips in every layout, range
//! reads that fetch only covering shards, rebuilds around lost and corrupt shards, manifests
//! found on the network when the local copy is gone.

use super::*;
use crate::pipeline::Mode;
use crate::remote::memory::MemoryClient;
use std::path::Path;

use MemorySource as Bytes;

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect()
}

fn layout(mode: Mode, k: u8, m: u8, shard_size: u32) -> LayoutConfig {
    LayoutConfig {
        mode,
        k,
        m,
        shard_size,
        slice_size: shard_size.max(1 << 20),
        small_file_max: 4096,
        ..LayoutConfig::default()
    }
}

fn make_objects(client: &Arc<MemoryClient>, layout: LayoutConfig, dir: Option<&Path>) -> Objects {
    let wrap = WrapKey::from_bytes([7; 32]);
    let store = dir.map(|d| ManifestStore::open(d).unwrap());
    Objects::new(client.clone(), wrap, layout, store)
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

async fn read(objects: &Objects, stored: &Stored, offset: u64, len: u64) -> Vec<u8> {
    let (start, bytes) = objects
        .read_covering(stored.file, &stored.manifest, &stored.key, offset, len)
        .await
        .unwrap();
    let end = (offset + len).min(stored.manifest.size);
    if offset >= end {
        assert!(bytes.is_empty());
        return Vec::new();
    }
    assert!(start <= offset, "covering read starts after the range");
    assert!(
        start + bytes.len() as u64 >= end,
        "covering read ends early"
    );
    let a = (offset - start) as usize;
    bytes[a..a + (end - offset) as usize].to_vec()
}

#[tokio::test]
async fn round_trips_in_every_mode_and_size() {
    for (mode, k, m) in [
        (Mode::Auto, 3, 2),
        (Mode::RsSize, 3, 2),
        (Mode::RsSize, 10, 4),
        (Mode::Slice, 1, 0),
        (Mode::File, 1, 0),
    ] {
        for len in [0usize, 1, 4095, 100_000, 1_300_001] {
            if mode == Mode::File && len > 2_000_000 {
                continue;
            }
            let client = Arc::new(MemoryClient::new(14));
            let objects = make_objects(&client, layout(mode, k, m, 16 * 1024), None);
            let bytes = data(len);
            let stored = put(&objects, &bytes).await;
            assert_eq!(stored.manifest.size, len as u64);
            assert_eq!(
                read(&objects, &stored, 0, len as u64).await,
                bytes,
                "{mode:?} {len}"
            );
        }
    }
}

#[tokio::test]
async fn a_small_read_fetches_only_the_covering_data_shard() {
    let client = Arc::new(MemoryClient::new(5));
    let objects = make_objects(&client, layout(Mode::RsSize, 3, 2, 64 * 1024), None);
    let bytes = data(4 << 20);
    let stored = put(&objects, &bytes).await;
    let (before, _) = client.fetch_counts();
    assert_eq!(
        read(&objects, &stored, 1_000_000, 4096).await,
        bytes[1_000_000..1_004_096]
    );
    let (after, fetched) = client.fetch_counts();
    assert_eq!(after - before, 1, "one data shard covers 4 KiB");
    assert!(
        fetched <= 64 * 1024 + 16,
        "fetched {fetched} bytes for 4 KiB"
    );
}

#[tokio::test]
async fn random_ranges_match_the_source() {
    let client = Arc::new(MemoryClient::new(6));
    let objects = make_objects(&client, layout(Mode::RsSize, 4, 2, 8 * 1024), None);
    let bytes = data(500_000);
    let stored = put(&objects, &bytes).await;
    let mut x = 12345u64;
    for _ in 0..200 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let off = (x >> 33) % 510_000;
        let len = (x >> 13) % 70_000;
        let end = (off + len).min(500_000) as usize;
        let want = if (off as usize) < end {
            &bytes[off as usize..end]
        } else {
            &[][..]
        };
        assert_eq!(read(&objects, &stored, off, len).await, want, "{off}+{len}");
    }
}

#[tokio::test]
async fn lost_and_corrupt_shards_are_rebuilt_up_to_the_parity() {
    let client = Arc::new(MemoryClient::new(5));
    let objects = make_objects(&client, layout(Mode::RsSize, 3, 2, 16 * 1024), None);
    let bytes = data(200_000);
    let stored = put(&objects, &bytes).await;
    assert_eq!(stored.fault_tolerance, 2);
    // Corrupt a data shard of segment 0 and stop a node: still readable.
    let seg0 = &stored.manifest.segments[0];
    assert_eq!(client.corrupt(seg0.shards[0].id), 1);
    // The corrupt shard is read around and reported, once however often it is read around.
    assert_eq!(read(&objects, &stored, 0, 1000).await, bytes[..1000]);
    assert_eq!(read(&objects, &stored, 0, 1000).await, bytes[..1000]);
    let damaged = objects.damaged();
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    let d = &damaged[0];
    assert_eq!(
        (d.file, d.segment, d.index, d.shard, d.holder),
        (
            stored.file,
            0,
            0,
            seg0.shards[0].id,
            seg0.shards[0].holders.first().copied()
        )
    );
    assert!(d.reason.contains("do not hash"), "{}", d.reason);
    // Stop nodes other than the corrupt shard's holder (segments are placed in whatever order
    // their encodes finish, so which node that is varies from run to run). A stopped node's
    // shards are unavailable, not damaged: not reported.
    let corrupt_holder = (0..5)
        .find(|&i| seg0.shards[0].holders[0] == client.node(i))
        .unwrap();
    let down: Vec<usize> = (0..5).filter(|&i| i != corrupt_holder).take(2).collect();
    client.set_up(down[0], false);
    assert_eq!(read(&objects, &stored, 0, 200_000).await, bytes);
    assert!(
        objects
            .damaged()
            .iter()
            .all(|d| d.shard == seg0.shards[0].id)
    );
    // Three of segment 0's five shards gone (one corrupt, two down): a clear error.
    client.set_up(down[1], false);
    let err = objects
        .read_covering(stored.file, &stored.manifest, &stored.key, 0, 200_000)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooFewShards { .. }), "{err}");
}

#[tokio::test]
async fn a_moved_shard_is_found_beyond_its_recorded_holder() {
    let client = Arc::new(MemoryClient::new(5));
    let objects = make_objects(&client, layout(Mode::RsSize, 3, 2, 16 * 1024), None);
    let bytes = data(40_000);
    let stored = put(&objects, &bytes).await;
    let shard = &stored.manifest.segments[0].shards[0];
    let holder = (0..5)
        .find(|&i| shard.holders[0] == client.node(i))
        .unwrap();
    client.relocate(shard.id, (holder + 1) % 5);
    assert_eq!(read(&objects, &stored, 0, 40_000).await, bytes);
}

#[tokio::test]
async fn manifests_come_from_memory_the_local_store_or_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let client = Arc::new(MemoryClient::new(5));
    let bytes = data(70_000);
    let stored = {
        let objects = make_objects(
            &client,
            layout(Mode::Auto, 3, 2, 16 * 1024),
            Some(dir.path()),
        );
        put(&objects, &bytes).await
    };
    // A fresh Objects finds it in the local store.
    let fresh = make_objects(&client, LayoutConfig::default(), Some(dir.path()));
    let m = fresh.manifest(stored.file, &stored.key).await.unwrap();
    assert_eq!(*m, *stored.manifest);
    // Without the local copy, from the network; a damaged local copy is ignored.
    std::fs::write(dir.path().join(stored.file.to_string()), b"damaged").unwrap();
    let fresh = make_objects(&client, LayoutConfig::default(), Some(dir.path()));
    let m = fresh.manifest(stored.file, &stored.key).await.unwrap();
    assert_eq!(*m, *stored.manifest);
    let (start, got) = fresh
        .read_covering(stored.file, &m, &stored.key, 0, 70_000)
        .await
        .unwrap();
    assert_eq!((start, got), (0, bytes));
    // A wrong key is refused with a clear error.
    let wrong = FileKey::from_bytes([1; 32]);
    let fresh = make_objects(&client, LayoutConfig::default(), None);
    assert!(fresh.manifest(stored.file, &wrong).await.is_err());
}

#[tokio::test]
async fn durability_reports_placement_and_liveness_honestly() {
    let client = Arc::new(MemoryClient::new(5));
    let objects = make_objects(&client, layout(Mode::RsSize, 3, 2, 16 * 1024), None);
    let stored = put(&objects, &data(100_000)).await;
    let now = || async { client.liveness().await.unwrap() };
    let d = Durability::assess(&stored.manifest, &now().await);
    assert_eq!(d.shards, d.remote);
    assert_eq!(d.survives, Some(2));
    assert!(d.on_network());
    assert!(d.to_string().ends_with("survives 2 lost nodes"), "{d}");
    // Two holders go away: the figure drops at once, and rises when they come back.
    client.set_up(0, false);
    client.set_up(1, false);
    let d = Durability::assess(&stored.manifest, &now().await);
    assert_eq!(d.survives, Some(0));
    assert!(!d.on_network(), "{d}");
    client.set_up(0, true);
    client.set_up(1, true);
    assert!(Durability::assess(&stored.manifest, &now().await).on_network());
    // One node: everything on it, nothing survives its loss.
    let lone = Arc::new(MemoryClient::new(1));
    let lone_objects = make_objects(&lone, layout(Mode::Auto, 3, 2, 16 * 1024), None);
    let stored = put(&lone_objects, &data(100_000)).await;
    let d = Durability::assess(&stored.manifest, &lone.liveness().await.unwrap());
    assert_eq!(d.survives, Some(0));
    assert_eq!(stored.fault_tolerance, 0);
}

#[tokio::test]
async fn a_source_that_shrinks_fails_the_put() {
    let client = Arc::new(MemoryClient::new(5));
    let objects = make_objects(&client, layout(Mode::RsSize, 3, 2, 16 * 1024), None);
    let err = objects
        .put(Arc::new(Bytes(data(1000))), 100_000, None, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[tokio::test]
async fn the_damaged_list_is_bounded_and_a_clean_read_adds_nothing() {
    let client = Arc::new(MemoryClient::new(5));
    let objects = make_objects(&client, layout(Mode::RsSize, 3, 2, 4096), None);
    let bytes = data(3 * 4096 * (DAMAGED_MAX + 8));
    let stored = put(&objects, &bytes).await;
    assert_eq!(read(&objects, &stored, 0, bytes.len() as u64).await, bytes);
    assert!(objects.damaged().is_empty());
    for seg in &stored.manifest.segments {
        assert_eq!(client.corrupt(seg.shards[1].id), 1);
    }
    assert_eq!(read(&objects, &stored, 0, bytes.len() as u64).await, bytes);
    let damaged = objects.damaged();
    assert_eq!(damaged.len(), DAMAGED_MAX);
    // Found again, a shard moves to the end (newest) instead of being listed twice.
    let first = damaged[0].shard;
    let segment = damaged[0].segment;
    let seg_size = stored.manifest.geometry.segment_size();
    read(&objects, &stored, segment * seg_size + 4096, 10).await;
    let again = objects.damaged();
    assert_eq!(again.len(), DAMAGED_MAX);
    assert_eq!(again.last().map(|d| d.shard), Some(first));
    assert_eq!(again.iter().filter(|d| d.shard == first).count(), 1);
}

/// Issue 24: a sparse source (islands of data in zeros, some not block-aligned) is stored as
/// extents and holes, reads back exactly in every range, and reads of holes fetch nothing.
#[tokio::test]
async fn holes_are_stored_as_extents_and_read_back_without_fetching() {
    let client = Arc::new(MemoryClient::new(5));
    // 3+2 × 64 KiB: 192 KiB segments.
    let objects = make_objects(&client, layout(Mode::RsSize, 3, 2, 64 * 1024), None);
    let seg = 192 * 1024;
    let mut bytes = vec![0u8; 10 * seg + 5000];
    let islands = [
        (100usize, 3000usize),
        (seg + 50_000, 70_000),
        (7 * seg - 10, 20),
        (10 * seg + 4000, 1000),
    ];
    for (at, n) in islands {
        bytes[at..at + n].copy_from_slice(&data(n));
    }
    let stored = put(&objects, &bytes).await;
    let m = &stored.manifest;
    assert!(m.has_holes());
    assert!(
        m.segments[2].is_hole(),
        "an untouched segment has no shards"
    );
    assert!(m.segments[2].shards.is_empty());
    let stored_bytes: u64 = m.segments.iter().map(|s| u64::from(s.stored_len())).sum();
    // Each island is stored in whole 4 KiB blocks: at most 2 blocks more per island.
    assert!(
        stored_bytes <= 3000 + 70_000 + 20 + 1000 + 4 * 2 * 4096,
        "{stored_bytes}"
    );
    // Allocation counts whole blocks; only the file's last, partial block differs.
    let allocated = m.allocated(0, m.size);
    assert!(
        (stored_bytes..=stored_bytes + 4096).contains(&allocated),
        "{allocated}"
    );
    // The data runs are what was written, widened to 4 KiB blocks.
    let runs = m.data_runs(0, m.size);
    // The island across a segment boundary is one run.
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(m.next_data(4096, m.size), Some(runs[1].start));
    assert_eq!(m.next_hole(runs[1].start, m.size), runs[1].end);
    // Every range reads back, holes as zeros.
    let mut x = 99u64;
    for _ in 0..200 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let off = (x >> 33) % bytes.len() as u64;
        let len = (x >> 13) % (3 * seg as u64);
        let end = (off + len).min(bytes.len() as u64) as usize;
        assert_eq!(
            read(&objects, &stored, off, len).await,
            bytes[off as usize..end]
        );
    }
    assert_eq!(read(&objects, &stored, 0, bytes.len() as u64).await, bytes);
    let (before, _) = client.fetch_counts();
    assert_eq!(
        read(&objects, &stored, 3 * seg as u64, 3 * seg as u64).await,
        vec![0; 3 * seg]
    );
    assert_eq!(
        client.fetch_counts().0,
        before,
        "a read of holes fetched shards"
    );
    // The manifest with its holes survives sealing and the network.
    let again = make_objects(&client, layout(Mode::RsSize, 3, 2, 64 * 1024), None);
    let m2 = again.manifest(stored.file, &stored.key).await.unwrap();
    assert_eq!(*m2, **m);
}

/// An all-zero source stores no shard at all.
#[tokio::test]
async fn an_all_zero_file_stores_no_shard() {
    let client = Arc::new(MemoryClient::new(5));
    let objects = make_objects(&client, layout(Mode::RsSize, 3, 2, 64 * 1024), None);
    let bytes = vec![0u8; 1 << 20];
    let stored = put(&objects, &bytes).await;
    assert!(stored.manifest.segments.iter().all(|s| s.is_hole()));
    // Only the manifest's copies.
    assert!(
        client.stored() <= MANIFEST_COPIES,
        "shards stored for zeros"
    );
    assert_eq!(read(&objects, &stored, 0, 1 << 20).await, bytes);
}

#[tokio::test]
async fn a_pack_is_reed_solomon_coded_whatever_its_size_and_a_member_read_fetches_its_shards_only()
{
    let client = Arc::new(MemoryClient::new(5));
    let objects = make_objects(&client, layout(Mode::Auto, 3, 2, 1 << 20), None);
    // 300 members of 100..=2,000 bytes: about 300 KiB, far below small_file_max's whole-file
    // replication threshold of a single file of this size (4 KiB here).
    let mut bytes = Vec::new();
    let mut members = Vec::new();
    for i in 0..300u64 {
        let len = 100 + (i * 7919) % 1901;
        members.push(PackRange {
            offset: bytes.len() as u64,
            len,
        });
        bytes.extend(data(len as usize + i as usize).into_iter().skip(i as usize));
    }
    let stored = objects
        .put_pack(Arc::new(Bytes(bytes.clone())), members.clone(), &|_| {})
        .await
        .unwrap();
    let g = stored.manifest.geometry;
    assert_eq!(
        g.redundancy,
        crate::pipeline::Redundancy::ReedSolomon { k: 3, m: 2 }
    );
    assert_eq!(g.shard_size, crate::pipeline::PACK_SHARD_SIZE);
    assert_eq!(stored.manifest.pack.as_deref(), Some(&members[..]));
    // Shard bytes stored ÷ data bytes: 5/3 plus the last segment's padding and the tags.
    let stored_bytes: u64 = stored
        .manifest
        .segments
        .iter()
        .flat_map(|s| &s.shards)
        .map(|s| u64::from(s.len))
        .sum();
    let ratio = stored_bytes as f64 / bytes.len() as f64;
    assert!((5.0 / 3.0..1.75).contains(&ratio), "ratio {ratio}");
    // The sealed manifest, fetched from the network by a fresh object layer, keeps the
    // directory and checks ranges against it.
    let fresh = make_objects(&client, layout(Mode::Auto, 3, 2, 1 << 20), None);
    let again = fresh.manifest(stored.file, &stored.key).await.unwrap();
    assert_eq!(again.pack.as_deref(), Some(&members[..]));
    again
        .check_range(members[7].offset, members[7].len)
        .unwrap();
    assert!(
        again
            .check_range(members[7].offset, members[7].len + 1)
            .is_err()
    );
    // One member's bytes come from the one or two data shards under it.
    for i in [0usize, 150, 299] {
        let m = members[i];
        let before = client.fetch_counts().0;
        let got = read(&objects, &stored, m.offset, m.len).await;
        assert_eq!(got, bytes[m.offset as usize..(m.offset + m.len) as usize]);
        let fetched = client.fetch_counts().0 - before;
        assert!((1..=2).contains(&fetched), "member {i}: {fetched} fetches");
    }
}
