//! What the binaries share for talking to their user: [`UsageError`] (exit code 2),
//! [`error_text`] (the one-line text of an error chain), and the checks of a command's local
//! paths that run before any network work ([`check_put_source`], [`check_get_output`]).

use std::path::Path;

/// Bad usage found after parsing (a path that does not exist, an address without a peer id):
/// the binaries exit with code 2 for it.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A usage error as an `anyhow` error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Whether `e` is bad usage (exit code 2) rather than a failure (exit code 1).
pub fn is_usage(e: &anyhow::Error) -> bool {
    e.downcast_ref::<UsageError>().is_some()
}

/// The whole chain of `e` on one line, `outer: inner: …`, leaving out a cause whose text the
/// line already carries: many library errors print their source in their own message, and
/// `{:#}` would then say it twice ("…: Database already open. Cannot acquire lock.: Database
/// already open. Cannot acquire lock.").
pub fn error_text(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Checks the file `defs put` is to store, before anything starts: it must exist, be a regular
/// file (or lead to one) and be readable.
///
/// # Errors
/// A [`UsageError`] saying what is wrong with `file` and that nothing was stored.
pub fn check_put_source(file: &Path) -> anyhow::Result<()> {
    let shown = file.display();
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(usage(format!(
                "{shown}: no such file; nothing was stored (check the path)"
            )));
        }
        Err(e) => return Err(usage(format!("{shown}: {e}; nothing was stored"))),
    };
    if meta.is_dir() {
        return Err(usage(format!(
            "{shown} is a directory; defs put stores one file (to back up a tree, mount DeFS \
             with defs-mount and copy it in)"
        )));
    }
    if !meta.is_file() {
        return Err(usage(format!(
            "{shown} is not a regular file; nothing was stored"
        )));
    }
    if let Err(e) = std::fs::File::open(file) {
        return Err(usage(format!(
            "cannot read {shown}: {e}; nothing was stored"
        )));
    }
    Ok(())
}

/// Checks where `defs get` is to write, before anything is fetched: its directory must exist,
/// and a file already there is replaced only with `force`.
///
/// # Errors
/// A [`UsageError`] naming `out` and saying what to do.
pub fn check_get_output(out: &Path, force: bool) -> anyhow::Result<()> {
    let shown = out.display();
    if let Ok(meta) = out.symlink_metadata() {
        if meta.is_dir() {
            return Err(usage(format!(
                "{shown} is a directory; give the path of the file to write (e.g. {}/NAME)",
                shown
            )));
        }
        if !force {
            return Err(usage(format!(
                "{shown} already exists; nothing was fetched (pass --force to replace it)"
            )));
        }
        return Ok(());
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(usage(format!(
            "cannot write {shown}: {} is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(usage(format!(
            "cannot write {shown}: its directory {} does not exist (create it first)",
            dir.display()
        ))),
        Err(e) => Err(usage(format!(
            "cannot write {shown}: {}: {e}",
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source in its own message, as many `thiserror` enums do.
    #[derive(Debug)]
    struct Wrapping {
        source: std::io::Error,
    }

    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "store index /x: {}", self.source)
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let inner = std::io::Error::other("Database already open. Cannot acquire lock.");
        let e = anyhow::Error::new(Wrapping { source: inner }).context("cannot open the store");
        assert_eq!(
            error_text(&e),
            "cannot open the store: store index /x: Database already open. Cannot acquire lock."
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&plain), "outer: inner");
    }

    #[test]
    fn put_and_get_paths_are_checked_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        check_put_source(&file).unwrap();
        let msg = check_put_source(&dir.path().join("nosuch.jpg"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("nosuch.jpg: no such file"), "{msg}");
        assert!(
            check_put_source(dir.path())
                .unwrap_err()
                .to_string()
                .contains("is a directory")
        );

        check_get_output(&dir.path().join("new"), false).unwrap();
        let e = check_get_output(&file, false).unwrap_err();
        assert!(is_usage(&e) && e.to_string().contains("--force"), "{e}");
        check_get_output(&file, true).unwrap();
        let msg = check_get_output(&dir.path().join("no/dir/out"), false)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("does not exist") && msg.contains("no/dir"),
            "{msg}"
        );
    }

    #[test]
    fn usage_errors_are_told_apart() {
        assert!(is_usage(&usage("bad").context("while parsing")));
        assert!(!is_usage(&anyhow::anyhow!("failed")));
    }
}
