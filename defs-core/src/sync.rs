//! Locks and channels used by defs-core, imported from one place so that tests can swap in a
//! model checker's versions.

pub use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
