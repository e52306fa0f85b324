//! `mount.defs` (a symlink to `defs-mount`): the helper mount(8) runs for `/etc/fstab` lines of
//! type `defs`:
//!
//! ```text
//! # <source>       <mountpoint>  <type>  <options>                 <dump> <pass>
//! /var/lib/defs    /mnt/defs     defs    defaults,_netdev,nofail   0      0
//! ```
//!
//! mount(8) calls `mount.defs SOURCE MOUNTPOINT [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]`.
//! SOURCE is the data directory (`defs` or `none` means the default one). This translates the
//! call into `defs-mount MOUNTPOINT [--data-dir SOURCE] -o OPTIONS`, which returns once the
//! mount is ready. The mount's source is SOURCE and its type `fuse.defs`, so `findmnt` and
//! `mount -a` match it to its fstab line (and `mount -a` leaves it alone once mounted).
//!
//! Exit codes: as defs-mount's; 2 for a call mount(8) would not make.

use std::ffi::OsString;

/// What to do with a mount(8)-style command line.
pub(crate) enum Call {
    /// Run defs-mount with these arguments (argv[0] included).
    Mount(Vec<OsString>),
    /// `-f` (fake): succeed without mounting.
    Fake,
    /// Bad usage: the message.
    Usage(String),
    /// `--help` / `-h`: print [`HELP`].
    Help,
    /// `--version` / `-V`.
    Version,
}

/// What `mount.defs --help` prints.
pub(crate) const HELP: &str = "\
mount.defs: the mount(8) helper of DeFS (a link to defs-mount), for /etc/fstab lines such as

  # <data dir>    <mountpoint>  <type>  <options>                          <dump> <pass>
  /var/lib/defs   /mnt/defs     defs    defaults,_netdev,nofail,no_mdns     0      0

usage: mount.defs SOURCE MOUNTPOINT [-sfnv] [-N NAMESPACE] [-o OPTIONS]
       (mount(8) runs it; by hand: mount -t defs SOURCE MOUNTPOINT -o OPTIONS)

SOURCE is the data dir (identity, config.toml, cache); `defs` or `none` means the default one.
OPTIONS, comma separated:
  ro, rw                  read-only or read-write (default rw)
  allow_other             let other users into the mount
  sync=local|network      what fsync waits for (default local: the local disk)
  fsname=NAME             the source shown by mount and df (default: SOURCE)
  threads=N               FUSE session threads, 1 to 64 (default 2)
  bootstrap=MULTIADDR     a peer to join through, ending in /p2p/PEER_ID (repeatable)
  listen=MULTIADDR        where the mount's node listens (repeatable; default: config.toml)
  no_mdns                 no peer discovery on the local network
  data_dir=DIR            the data dir, when SOURCE is `defs`
  defaults, auto, noauto, user, nofail, _netdev, x-*, ...   fstab options, ignored
The mount shows as type fuse.defs; logs go to DIR/logs/defs-mount.log.
Install: sudo defs install-helper (links /sbin/mount.defs to defs-mount).";

/// The usage line printed after a usage error.
pub(crate) const USAGE: &str = "usage: mount.defs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]";

fn usage(msg: &str) -> Call {
    Call::Usage(msg.to_string())
}

/// Translates mount(8)'s call (without argv[0]) into defs-mount's arguments.
pub(crate) fn translate(args: impl IntoIterator<Item = OsString>) -> Call {
    let mut args = args.into_iter();
    let mut positional: Vec<OsString> = Vec::new();
    let mut options: Vec<OsString> = Vec::new();
    let mut fake = false;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--help" | "-h") => return Call::Help,
            Some("--version" | "-V") => return Call::Version,
            Some("-o") => match args.next() {
                Some(o) => options.push(o),
                None => return usage("-o needs a value"),
            },
            // -t TYPE and -N NAMESPACE take a value mount(8) already acted on.
            Some("-t" | "-N") => {
                let _ = args.next();
            }
            Some(flags) if flags.starts_with('-') && flags.len() > 1 => {
                for c in flags.chars().skip(1) {
                    match c {
                        // -f: "fake" (mount -f): do everything but the mount itself.
                        'f' => fake = true,
                        // -s sloppy, -n no mtab, -v verbose: nothing to do.
                        's' | 'n' | 'v' => {}
                        _ => return usage(&format!("unknown flag -{c}")),
                    }
                }
            }
            _ => positional.push(arg),
        }
    }
    let [source, mountpoint] = match <[OsString; 2]>::try_from(positional) {
        Ok(p) => p,
        Err(_) => return usage("expected SOURCE and MOUNTPOINT"),
    };
    if fake {
        return Call::Fake;
    }
    let mut out: Vec<OsString> = vec!["defs-mount".into(), mountpoint];
    let default_dir = source == "defs" || source == "none" || source.is_empty();
    let named = options.iter().any(|o| {
        o.to_string_lossy()
            .split(',')
            .any(|o| o.starts_with("fsname="))
    });
    if !default_dir {
        // defs-mount shows the data dir, canonical, as the source: what mount(8) compares
        // with the line's (canonicalized) first field.
        out.push("--data-dir".into());
        out.push(source);
    } else if !named {
        // The source as written, so `mount -a` matches the line to the mount.
        let mut o = OsString::from("fsname=");
        o.push(if source.is_empty() {
            OsString::from("defs")
        } else {
            source
        });
        out.push("-o".into());
        out.push(o);
    }
    for o in options {
        out.push("-o".into());
        out.push(o);
    }
    Call::Mount(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> Call {
        translate(args.iter().map(OsString::from))
    }

    #[test]
    fn help_and_version_answer_instead_of_unknown_flag() {
        assert!(matches!(call(&["--help"]), Call::Help));
        assert!(matches!(call(&["-h"]), Call::Help));
        assert!(matches!(call(&["--version"]), Call::Version));
        assert!(HELP.contains("bootstrap=MULTIADDR") && HELP.contains("no_mdns"));
    }

    #[test]
    fn mount_8_calls_become_defs_mount_calls() {
        let Call::Mount(args) = call(&[
            "/var/lib/defs",
            "/mnt/defs",
            "-o",
            "rw,no_mdns",
            "-t",
            "defs",
        ]) else {
            panic!("not a mount");
        };
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "defs-mount",
                "/mnt/defs",
                "--data-dir",
                "/var/lib/defs",
                "-o",
                "rw,no_mdns"
            ]
        );
        // The default data dir keeps its fstab name as the mount's source.
        let Call::Mount(args) = call(&["defs", "/mnt/defs"]) else {
            panic!("not a mount");
        };
        assert_eq!(args, ["defs-mount", "/mnt/defs", "-o", "fsname=defs"]);
        assert!(matches!(call(&["defs", "/mnt", "-f"]), Call::Fake));
        assert!(matches!(call(&["/mnt"]), Call::Usage(_)));
        assert!(matches!(call(&["a", "b", "-x"]), Call::Usage(_)));
    }
}
