//! The global allocator for the binaries that run the encoder.
//!
//! Tensors are allocated and freed by the thousand per step, many of them tens of megabytes.
//! glibc's malloc churns on that (measured here: ~25 % of inference time) and mimalloc, left at
//! its defaults, hands freed memory back to the OS after 10 ms and then takes page faults to
//! get it again (29 % of training time in the kernel zeroing pages). Keeping it makes peak RSS
//! the working set, which the stages already bound.

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's option enum (the same index in v2 and v3; the crate
/// builds v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Call first thing in `main`: freed memory stays with the process for reuse.
pub fn keep_freed_memory() {
    // SAFETY: setting an option is thread-safe and valid at any time; -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
