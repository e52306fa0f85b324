//! Reed-Solomon coding (systematic, GF(2^8), `reed-solomon-erasure`), the CPU check that guards
//! its AVX2 kernels, and a cache of codecs per (k, m).
//!
//! With the `simd` feature the crate's C kernels are compiled with `-march=haswell`; on a CPU
//! without AVX2 they would die on SIGILL, so every entry point here first calls [`check_cpu`].

use std::collections::HashMap;
use std::sync::OnceLock;

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::error::{Error, Result};
use crate::sync::{Arc, Mutex};

/// Fails with [`Error::CpuWithoutAvx2`] when this build's Reed-Solomon kernels cannot run here.
/// The answer is computed once per process.
pub fn check_cpu() -> Result<()> {
    #[cfg(all(feature = "simd", target_arch = "x86_64"))]
    {
        static HAS_AVX2: OnceLock<bool> = OnceLock::new();
        if !*HAS_AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2")) {
            return Err(Error::CpuWithoutAvx2);
        }
    }
    Ok(())
}

type Codecs = Mutex<HashMap<(u8, u8), Arc<ReedSolomon>>>;

/// The codec for `k` data and `m ≥ 1` parity shards, built once and shared (building inverts
/// matrices; the codec also caches decode matrices per loss pattern).
fn codec(k: u8, m: u8) -> Result<Arc<ReedSolomon>> {
    check_cpu()?;
    static CODECS: OnceLock<Codecs> = OnceLock::new();
    let codecs = CODECS.get_or_init(Default::default);
    let mut map = codecs.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.get(&(k, m)) {
        return Ok(Arc::clone(c));
    }
    let c = Arc::new(
        ReedSolomon::new(usize::from(k), usize::from(m)).map_err(|e| Error::InvalidLayout {
            reason: format!("Reed-Solomon {k}+{m}: {e:?}"),
        })?,
    );
    map.insert((k, m), Arc::clone(&c));
    Ok(c)
}

/// Computes the `parity` shards from the `data` shards (all the same length).
pub(crate) fn encode<T: AsRef<[u8]>>(data: &[T], parity: &mut [Vec<u8>]) -> Result<()> {
    if parity.is_empty() {
        check_cpu()?;
        return Ok(());
    }
    let (k, m) = counts(data.len(), parity.len())?;
    codec(k, m)?
        .encode_sep(data, parity)
        .map_err(|e| Error::InvalidLayout {
            reason: format!("Reed-Solomon encode: {e:?}"),
        })
}

/// Rebuilds the missing data shards (`None`) from any `k` present shards; parity shards stay as
/// they are. `shards` holds all k + m slots, present shards all the same length.
pub(crate) fn reconstruct_data(k: u8, shards: &mut [Option<Vec<u8>>]) -> Result<()> {
    let m = shards.len().saturating_sub(usize::from(k));
    if m == 0 {
        check_cpu()?;
        return if shards.iter().all(Option::is_some) {
            Ok(())
        } else {
            Err(Error::InvalidLayout {
                reason: "no parity to rebuild from".into(),
            })
        };
    }
    let (k, m) = counts(usize::from(k), m)?;
    codec(k, m)?
        .reconstruct_data(shards)
        .map_err(|e| Error::InvalidLayout {
            reason: format!("Reed-Solomon reconstruct: {e:?}"),
        })
}

fn counts(k: usize, m: usize) -> Result<(u8, u8)> {
    match (u8::try_from(k), u8::try_from(m)) {
        (Ok(k), Ok(m)) => Ok((k, m)),
        _ => Err(Error::InvalidLayout {
            reason: format!("{k}+{m} shards: at most 255 each"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilds_lost_data_shards() {
        let data: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i * 3 + 1; 100]).collect();
        let mut parity = vec![vec![0u8; 100]; 2];
        encode(&data, &mut parity).unwrap();
        let mut shards: Vec<Option<Vec<u8>>> = data
            .iter()
            .chain(parity.iter())
            .cloned()
            .map(Some)
            .collect();
        shards[0] = None;
        shards[3] = None;
        reconstruct_data(4, &mut shards).unwrap();
        assert_eq!(shards[0].as_deref(), Some(&data[0][..]));
        assert_eq!(shards[3].as_deref(), Some(&data[3][..]));
    }

    #[test]
    fn cpu_check_is_cached_and_passes_here() {
        // CI machines have AVX2; the check must agree with the CPU flags.
        #[cfg(all(feature = "simd", target_arch = "x86_64"))]
        assert_eq!(
            check_cpu().is_ok(),
            std::arch::is_x86_feature_detected!("avx2")
        );
        #[cfg(not(all(feature = "simd", target_arch = "x86_64")))]
        assert!(check_cpu().is_ok());
    }
}
