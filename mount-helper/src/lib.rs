//! Code shared by the DeFS binaries (`defs`, `defs-mount` and its link `mount.defs`): locating
//! the data dir, reading and writing `config.toml`, logging, and the commands that need no
//! network (`defs init`, `defs id`, `defs install-helper`; `defs key` in `key_cmd`), the network
//! commands and the storage node start-up (`net_cmd`), bootstrap addresses (`bootstrap`), the
//! mount's control requests (`mount_control`), what a dead mount leaves behind (`mount_state`),
//! and the mount's namespace on the network: recovery and publishing (`namespace`).
//!
//! Only this crate parses argv, reads config files, installs the tracing subscriber and picks
//! exit codes; errors are `anyhow` chains printed on one line by `cli::error_text`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod audits;
pub mod bootstrap;
pub mod cli;
pub mod config_file;
pub mod data_dir;
pub mod gc;
pub mod identity_cmd;
pub mod install;
pub mod key_cmd;
pub mod logging;
pub mod mount_control;
pub mod mount_state;
pub mod namespace;
pub mod net_cmd;
