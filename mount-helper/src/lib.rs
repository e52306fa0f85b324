//! Code shared by the DeFS binaries (`defs`, later `defs-mount` and `mount.defs`): locating the
//! data dir, reading and writing `config.toml`, logging, and the commands that need no network
//! (`defs init`, `defs id`; `defs key` in `key_cmd`), the network commands and the storage node
//! start-up (`net_cmd`), and the mount's control requests (`mount_control`).
//!
//! Only this crate parses argv, reads config files, installs the tracing subscriber and picks
//! exit codes; errors are `anyhow` chains printed with `{:#}`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod config_file;
pub mod data_dir;
pub mod identity_cmd;
pub mod key_cmd;
pub mod logging;
pub mod mount_control;
pub mod net_cmd;
