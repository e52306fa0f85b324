//! The allocation check of every target: a global allocator that passes everything to the
//! system allocator and records the largest single allocation (or reallocation) since
//! [`largest_during`] started. A decoder that trusts a length field shows up here as one
//! allocation far larger than its input, long before it would exhaust memory.
//!
//! Binaries and tests that run targets install it with [`track_allocations!`](crate::track_allocations);
//! [`installed`] tells whether it is (the replay tests assert it, so the check is never vacuous).
#![allow(unsafe_code)] // A `GlobalAlloc` impl is unsafe by definition; it only forwards to `System`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest allocation seen since the last reset, in bytes. One counter for the process:
/// targets run one input at a time, and a background thread's allocations only make the bound
/// stricter.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, recording the largest request.
#[derive(Debug)]
pub struct Tracking;

fn note(size: usize) {
    LARGEST.fetch_max(size, Ordering::Relaxed);
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; recording a size has no effect on the memory handed out.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Installs [`Tracking`] as the global allocator of the binary it is invoked in.
#[macro_export]
macro_rules! track_allocations {
    () => {
        #[global_allocator]
        static DEFS_FUZZ_ALLOCATOR: $crate::alloc::Tracking = $crate::alloc::Tracking;
    };
}

/// Runs `f` and returns its result with the largest single allocation made while it ran.
pub fn largest_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    let out = f();
    (out, LARGEST.load(Ordering::Relaxed))
}

/// True when [`Tracking`] is this process's allocator (without it every bound holds vacuously).
pub fn installed() -> bool {
    let (_, largest) = largest_during(|| std::hint::black_box(vec![1u8; 1 << 16]));
    largest >= 1 << 16
}

/// Panics when `f`'s largest allocation exceeds `per_byte` bytes per input byte plus `slack`:
/// what a decoder may allocate for `input_len` bytes of input (its in-memory form is larger
/// than the wire form, but never by more than a constant factor).
///
/// # Panics
/// When the bound is broken: that is the finding.
pub fn bounded<T>(
    what: &str,
    input_len: usize,
    per_byte: usize,
    slack: usize,
    f: impl FnOnce() -> T,
) -> T {
    let (out, largest) = largest_during(f);
    let limit = input_len.saturating_mul(per_byte).saturating_add(slack);
    assert!(
        largest <= limit,
        "{what}: one allocation of {largest} bytes for {input_len} bytes of input (bound {limit})"
    );
    out
}
