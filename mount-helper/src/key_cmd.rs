//! `defs key split` and `defs key combine`: back up the identity as Shamir shares on paper and
//! rebuild `identity.key` from them. The share format and the arithmetic are defs-core's
//! (`identity::keyshare`); this module owns where shares come from and go to: stdout, files
//! (mode 0600), arguments and stdin.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use defs_core::Identity;
use defs_core::identity::keyshare::{self, KeyShare};

use crate::{data_dir, identity_cmd};

/// The most bytes read from one share file or from stdin: a share is about 107 characters, a
/// file `defs key split` writes under 1 KiB; anything this large is not a share file.
const MAX_INPUT_BYTES: u64 = 1 << 20;

/// `defs key split`: splits the data dir's identity into `total` shares, any `threshold` of
/// which rebuild it, and prints them (with a header saying what they are and how to recover) or
/// writes one file per share into `out_dir`.
///
/// # Errors
/// When there is no usable identity, the split parameters are out of range, or a share file
/// cannot be written (files this call created are removed again).
pub fn split(dir: &Path, threshold: u8, total: u8, out_dir: Option<&Path>) -> anyhow::Result<()> {
    let identity = identity_cmd::load(dir)?;
    let shares = keyshare::split(&identity, threshold, total).context("cannot split the key")?;
    let Some(first) = shares.first() else {
        bail!("the split made no shares");
    };
    let header = header(first, &identity, dir);
    match out_dir {
        None => {
            if std::io::stdout().is_terminal() {
                eprintln!(
                    "defs: the shares are printed on this terminal; clear its scrollback once they \
                     are copied, or use --out-dir"
                );
            }
            let mut out = std::io::stdout().lock();
            let mut text = header;
            for share in &shares {
                text.push_str(&format!("{share}\n"));
            }
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("cannot write the shares to stdout")?;
        }
        Some(out_dir) => {
            let written = write_share_files(out_dir, &header, &shares)?;
            println!(
                "wrote {} shares of identity {} (split {}) to {}, mode 0600; any {} rebuild it:",
                shares.len(),
                first.identity_tag(),
                first.split_code(),
                out_dir.display(),
                threshold
            );
            for path in written {
                println!("  {}", path.display());
            }
        }
    }
    Ok(())
}

/// The comment lines above the shares: what they are, how many rebuild the key, how to rebuild
/// it and what the key does and does not restore today.
fn header(first: &KeyShare, identity: &Identity, dir: &Path) -> String {
    let t = first.threshold();
    let n = first.total();
    let mut h = String::new();
    h.push_str(&format!(
        "# DeFS identity key shares: identity {} (node id {}), split {}.\n",
        first.identity_tag(),
        identity.node_id(),
        first.split_code()
    ));
    h.push_str(&format!(
        "# Any {t} of these {n} shares rebuild {}; {} or fewer reveal nothing about it.\n",
        dir.join(data_dir::IDENTITY_FILE).display(),
        t - 1
    ));
    h.push_str(
        "# Keep each share in a different place (print it or write it down, exactly, one line).\n\
         # Rebuild with: defs key combine SHARE... --data-dir DIR\n\
         #   (each SHARE is a share's text or a file holding shares; none or - reads stdin;\n\
         #   lines starting with # are ignored)\n\
         # The key restores this identity, not yet the files you stored: see the README,\n\
         # \"Back up your key\".\n",
    );
    h
}

/// Writes one file per share into `out_dir` (created mode 0700 when missing), each mode 0600
/// from creation and never replacing a file. On failure, removes what it wrote.
fn write_share_files(
    out_dir: &Path,
    header: &str,
    shares: &[KeyShare],
) -> anyhow::Result<Vec<PathBuf>> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut written = Vec::with_capacity(shares.len());
    let result = (|| {
        for share in shares {
            let name = format!(
                "defs-key-share-{}-{}-{}of{}.txt",
                share.identity_tag(),
                share.split_code(),
                share.index(),
                share.total()
            );
            let path = out_dir.join(name);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            written.push(path.clone());
            let text = format!(
                "{header}# This file holds share {} of {}.\n{share}\n",
                share.index(),
                share.total()
            );
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        File::open(out_dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", out_dir.display()))
    })();
    if let Err(e) = result {
        for path in &written {
            let _ = fs::remove_file(path);
        }
        return Err(e);
    }
    Ok(written)
}

/// `defs key combine`: reads shares from `inputs` (share texts, files holding shares, `-` for
/// stdin; stdin when empty), rebuilds the identity, checks it against the identity the shares
/// name, and writes `identity.key` (mode 0600) into `dir`, creating the dir (mode 0700) if
/// needed. An existing `identity.key` is never replaced; when it already holds this identity
/// the command says so and succeeds.
///
/// # Errors
/// When an input cannot be read, a share does not parse or fails its checksum, the shares are
/// too few, mixed or duplicated, they do not rebuild the identity they name, or a different or
/// unreadable `identity.key` exists.
pub fn combine(dir: &Path, inputs: &[String]) -> anyhow::Result<()> {
    let stdin_only = [String::from("-")];
    let inputs = if inputs.is_empty() {
        &stdin_only[..]
    } else {
        inputs
    };
    let mut shares = Vec::new();
    for (n, input) in inputs.iter().enumerate() {
        read_input(input, n + 1, &mut shares)?;
    }
    if shares.is_empty() {
        bail!("no shares given: pass share texts or files holding them, or type them on stdin");
    }
    let identity = keyshare::combine(&shares).context("cannot rebuild the identity")?;
    let key = dir.join(data_dir::IDENTITY_FILE);
    if key.symlink_metadata().is_ok() {
        let existing = Identity::load(&key).with_context(|| {
            format!(
                "{} exists and cannot be read; refusing to replace it (move it aside first)",
                key.display()
            )
        })?;
        if *existing.secret_bytes() == *identity.secret_bytes() {
            println!(
                "{} already holds this identity (node id {}); nothing written",
                key.display(),
                identity.node_id()
            );
            return Ok(());
        }
        bail!(
            "{} holds another identity (node id {}); refusing to replace it with {} \
             (use another --data-dir, or move that key aside first)",
            key.display(),
            existing.node_id(),
            identity.node_id()
        );
    }
    data_dir::create(dir)?;
    identity
        .write_new(&key)
        .with_context(|| format!("cannot write {}", key.display()))?;
    println!(
        "rebuilt {} from {} shares, mode 0600",
        key.display(),
        shares.len()
    );
    println!("node id    {}", identity.node_id());
    println!(
        "This restores the identity only: files are not yet recovered from the network by the \
         key alone (see the README, \"Back up your key\")."
    );
    Ok(())
}

/// Reads the shares of one `combine` argument into `shares`: `-` is stdin, an existing path a
/// file, anything else a share's text.
fn read_input(input: &str, position: usize, shares: &mut Vec<KeyShare>) -> anyhow::Result<()> {
    if input == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprintln!("Type or paste the shares, one per line; end with Ctrl-D.");
        }
        let text = read_limited(stdin.lock(), "stdin")?;
        return read_lines(&text, "stdin", shares);
    }
    let path = Path::new(input);
    if path.exists() {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let name = path.display().to_string();
        let text = read_limited(file, &name)?;
        return read_lines(&text, &name, shares);
    }
    let share = KeyShare::parse(input).with_context(|| {
        if keyshare::looks_like_share(input) {
            format!("argument {position}")
        } else {
            format!("argument {position} (not a share, and no file of that name exists)")
        }
    })?;
    shares.push(share);
    Ok(())
}

/// Reads at most [`MAX_INPUT_BYTES`] of UTF-8 text.
fn read_limited(reader: impl Read, name: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {name} (is it text?)"))?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        bail!("{name} is larger than {MAX_INPUT_BYTES} bytes: not a share file");
    }
    Ok(text)
}

/// Every line of `text` that is neither blank nor a `#` comment is one share.
fn read_lines(text: &str, name: &str, shares: &mut Vec<KeyShare>) -> anyhow::Result<()> {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let share = KeyShare::parse(line).with_context(|| format!("{name}, line {}", n + 1))?;
        shares.push(share);
    }
    Ok(())
}
