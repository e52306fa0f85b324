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
//! mount is ready.
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
}

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
    if source != "defs" && source != "none" && !source.is_empty() {
        out.push("--data-dir".into());
        out.push(source);
    }
    for o in options {
        out.push("-o".into());
        out.push(o);
    }
    Call::Mount(out)
}
