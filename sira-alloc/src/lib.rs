//! sira's global allocator: mimalloc, asked for a plain block wherever its own alignment
//! is enough.
//!
//! The `mimalloc` crate hands every Rust allocation to `mi_malloc_aligned`, alignment 1 or
//! 8 included. For a block over 1 KiB whose size class is not a power of two (a read
//! buffer, a boxed future), mimalloc's aligned path cannot prove from the size alone that
//! the block will be aligned, so it takes its slow generic path and over-allocates by the
//! alignment: some 180 instructions where `mi_malloc` takes 20. sira made about ten such
//! allocations per request (callgrind, `bench/profile.sh a`).
//!
//! Every mimalloc block is a whole number of machine words and starts on a word boundary
//! (its size classes are multiples of 8 bytes, its pages start aligned), so an alignment
//! of 8 or less needs nothing more than `mi_malloc` (mimalloc's own `mi_realloc_aligned`
//! makes the same assumption). Larger alignments keep the aligned calls. Built with
//! mimalloc's guarded-page debugging (`MI_GUARDED` with precise guards), blocks may not be
//! word-aligned: that build is not used here.
#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment of every mimalloc block: one machine word.
const WORD: usize = core::mem::size_of::<usize>();

/// mimalloc as the global allocator (see the crate's documentation).
pub struct MiMalloc;

// SAFETY: every method forwards to mimalloc, which returns blocks of at least the size asked
// for, aligned as asked (plain calls only where a word's alignment is all that is asked),
// or null on failure, and frees or resizes any block it returned, whichever call made it.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: `mi_malloc` takes any size.
            unsafe { mi::mi_malloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: `Layout` guarantees a power-of-two alignment, as mimalloc requires.
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: as `alloc`.
            unsafe { mi::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            // SAFETY: as `alloc`.
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract), so from mimalloc.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: `ptr` came from mimalloc (the caller's contract); the new block keeps a
            // word's alignment, all that was asked.
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            // SAFETY: as above, with the alignment asked for.
            unsafe {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}
