//! End-to-end tests of DeFS: the real binaries, real nodes on 127.0.0.1, real FUSE mounts.

mod cli;
mod network;
