//! Targets for files users write or keep: `config.toml`, `identity.key`, key share texts.

use defs_core::Identity;
use defs_core::identity::keyshare::{self, KeyShare};
use mount_helper::config_file;

use super::{PER_BYTE, SLACK, must, sealed_or_raw, verdict};
use crate::alloc::bounded;
use crate::{Verdict, scratch};

/// `DIR/config.toml` as `defs` and `defs-mount` read it. An accepted config, written back as
/// TOML, reads as the same config.
pub fn config_file(data: &[u8]) -> Verdict {
    // The file is read as UTF-8 text; other bytes fail before the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return Verdict::Refused;
    };
    let r = bounded("config", data.len(), PER_BYTE, SLACK, || {
        config_file::parse(text)
    });
    if let Ok(config) = &r {
        let written = must(
            "an accepted config does not serialise",
            toml::to_string(config),
        );
        match config_file::parse(&written) {
            Ok(back) => assert_eq!(&back, config, "config round trip changed it"),
            Err(e) => panic!("an accepted config, written back, is refused: {e:#}\n{written}"),
        }
    }
    verdict(&r)
}

/// `DIR/identity.key` loaded from a file (mode 0600); the first byte chooses whether the file
/// is taken as it is or given its true CRC32 first. An accepted file is written back byte for
/// byte by the identity it holds.
pub fn identity_file(data: &[u8]) -> Verdict {
    let Some(data) = sealed_or_raw(data, |rest| crc32fast::hash(rest).to_le_bytes().to_vec())
    else {
        return Verdict::Refused;
    };
    let data = data.as_slice();
    let path = scratch::write("identity.key", data);
    let r = bounded("identity file", data.len(), PER_BYTE, SLACK, || {
        Identity::load(&path)
    });
    if let Ok(id) = &r {
        let again = scratch::path("identity.again");
        let _ = std::fs::remove_file(&again);
        must("a loaded identity cannot be written", id.write_new(&again));
        let bytes = must("cannot read back the key file", std::fs::read(&again));
        assert_eq!(bytes, data, "identity file round trip changed the bytes");
    }
    verdict(&r)
}

/// Key share text as `defs key combine` reads a file or stdin: one share per line, blank lines
/// and `#` comments skipped. Every share that parses prints as text that parses to the same
/// share, and combining whatever parsed gives an identity or an error, never a panic. Accepted
/// when every line is a share.
pub fn key_share(data: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(data) else {
        return Verdict::Refused;
    };
    let mut shares = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let r = bounded("key share", line.len(), PER_BYTE, SLACK, || {
            KeyShare::parse(line)
        });
        match r {
            Ok(share) => {
                let printed = share.to_string();
                match KeyShare::parse(&printed) {
                    Ok(back) => assert!(back == share, "key share round trip changed it"),
                    Err(e) => panic!("a printed share does not parse: {e}: {printed}"),
                }
                shares.push(share);
            }
            Err(_) => return Verdict::Refused,
        }
    }
    if shares.is_empty() {
        return Verdict::Refused;
    }
    // Too few, mixed or duplicated shares are refused; the text itself was accepted.
    let _ = bounded("combine", data.len(), PER_BYTE, SLACK, || {
        keyshare::combine(&shares)
    });
    Verdict::Accepted
}
