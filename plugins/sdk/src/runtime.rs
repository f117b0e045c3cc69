//! What `std` would otherwise give a `wasm32` guest: a global allocator,
//! the canonical ABI's `cabi_realloc`, a panic handler, and the C library's
//! memory functions.
//!
//! Plugins are `#![no_std]` so that their components import nothing but the
//! `merchant-rules` world (see the crate docs); this module is compiled only
//! for `wasm32`, where nothing else provides these items. Native builds
//! (unit tests) use `std`'s and need no `cabi_realloc`.

use alloc::alloc::{GlobalAlloc, Layout, alloc, handle_alloc_error, realloc};
use core::cell::{Cell, UnsafeCell};
use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::ptr;

use dlmalloc::Dlmalloc;

use crate::LogLevel;
use crate::bindings::wasmpay::plugin::host as imports;

// On wasm32-wasip2, `compiler_builtins` leaves `memcpy`, `memmove`,
// `memset` and `memcmp` to the C library, which `std` links. wasi-libc (in
// the target's `self-contained` directory) implements them as plain code
// with no imports, and the linker takes only the functions used from its
// archive, so linking it adds no WASI import; `tests/imports.rs` in
// `host/plugin-artifacts` checks that.
#[allow(unsafe_code)]
#[link(name = "c")]
unsafe extern "C" {}

// dlmalloc rather than a bump allocator: a call gets a fresh instance, but a
// plugin that builds and drops strings in a loop would otherwise grow until
// it hits the host's memory limit. Beyond its first segment (below) its
// memory comes from `memory.grow`, so the host's memory limit bounds it.
#[global_allocator]
static ALLOCATOR: Global = Global(UnsafeCell::new(Dlmalloc::new_with_allocator(Heap {
    first_segment_taken: Cell::new(false),
})));

/// The size of the heap's first segment, a static block in the module's
/// zero-initialised data.
///
/// It is part of the instance's initial memory, so a call that allocates
/// less than this (a payment decision takes a few KiB) never grows its
/// memory. Growing is what costs: before the next call on the same slot
/// the host must make the grown pages inaccessible again (an `mprotect`,
/// and with it an interrupt to every core the host's threads run on; see
/// `BENCHMARKS.md`). A call that needs more grows memory as before.
const FIRST_SEGMENT_BYTES: usize = 128 * 1024;

/// WebAssembly's page: the unit of `memory.grow`.
const WASM_PAGE_BYTES: usize = 64 * 1024;

#[repr(C, align(16))]
struct FirstSegment(UnsafeCell<[u8; FIRST_SEGMENT_BYTES]>);

// SAFETY: a component instance runs one call on one thread; nothing else
// can reach the block.
#[allow(unsafe_code)]
unsafe impl Sync for FirstSegment {}

static FIRST_SEGMENT: FirstSegment = FirstSegment(UnsafeCell::new([0; FIRST_SEGMENT_BYTES]));

/// Where dlmalloc gets its segments: [`FIRST_SEGMENT`] once, then
/// `memory.grow`. Nothing is ever given back: the instance ends with the
/// call.
struct Heap {
    first_segment_taken: Cell<bool>,
}

// SAFETY: the segments handed out are memory no one else uses (the static
// block, once; fresh pages from `memory.grow`), at least `size` bytes, and
// zeroed: the block is zero when the instance starts and handed out before
// anything writes it, and grown pages are zero.
#[allow(unsafe_code)]
unsafe impl dlmalloc::Allocator for Heap {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        if !self.first_segment_taken.get() && size <= FIRST_SEGMENT_BYTES {
            self.first_segment_taken.set(true);
            return (FIRST_SEGMENT.0.get().cast(), FIRST_SEGMENT_BYTES, 0);
        }
        let pages = size.div_ceil(WASM_PAGE_BYTES);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return (ptr::null_mut(), 0, 0);
        }
        (
            (previous * WASM_PAGE_BYTES) as *mut u8,
            pages * WASM_PAGE_BYTES,
            0,
        )
    }

    fn remap(&self, _ptr: *mut u8, _old: usize, _new: usize, _can_move: bool) -> *mut u8 {
        ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _old: usize, _new: usize) -> bool {
        false
    }

    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        true
    }

    fn page_size(&self) -> usize {
        WASM_PAGE_BYTES
    }
}

/// dlmalloc over [`Heap`] as the global allocator.
struct Global(UnsafeCell<Dlmalloc<Heap>>);

// SAFETY: one thread per instance (the component model's guests are
// single-threaded here), so no two calls into the allocator overlap.
#[allow(unsafe_code)]
unsafe impl Sync for Global {}

// SAFETY: each method forwards to dlmalloc with the layout Rust gave, as
// `dlmalloc::GlobalDlmalloc` does, without its lock (one thread).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Global {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).malloc(layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).calloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { (*self.0.get()).free(ptr, layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { (*self.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

/// The host calls this export to allocate guest memory for the arguments it
/// passes in (the request's strings and lists).
///
/// `wit-bindgen` provides it for `wasm32-wasip1`, and on `wasm32-wasip2`
/// leaves it to wasi-libc, which comes with `std`; a `no_std` guest must
/// export its own, or `wasm-component-ld` refuses to build the component.
///
/// # Safety
/// The caller (the host's canonical ABI lowering) passes either
/// `old_len == 0`, or a block it got from this function with that length and
/// `align`.
// The export is the one unsafe interface between the host and the
// allocator; the canonical ABI defines its signature.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    // An empty block needs no memory, only a well-aligned non-null address.
    if new_len == 0 {
        return align as *mut u8;
    }
    // A host that asks for an impossible layout is broken: trap rather than
    // hand out memory that violates it.
    let Ok(layout) = Layout::from_size_align(new_len, align) else {
        core::arch::wasm32::unreachable()
    };
    let ptr = if old_len == 0 {
        // SAFETY: `layout` has a non-zero size.
        unsafe { alloc(layout) }
    } else {
        // SAFETY: the caller passes a block from this allocator with the
        // same alignment and length `old_len`; `new_len` is non-zero.
        unsafe {
            realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if ptr.is_null() {
        // Panics through the handler below, which logs the size.
        handle_alloc_error(layout);
    }
    ptr
}

/// The most bytes of a panic message sent to the host's log. The message is
/// formatted on the stack because the panic may be an allocation failure.
const PANIC_MESSAGE_BYTES_MAX: usize = 512;

/// Logs the panic through `host.log` at error level, then traps so that the
/// host declines the payment as a plugin failure. `panic = "abort"` means
/// nothing unwinds; the trap is the whole answer.
#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut line = StackLine {
        bytes: [0; PANIC_MESSAGE_BYTES_MAX],
        len: 0,
    };
    // A full buffer ends the formatting early; what fits is still sent.
    let _ = write!(line, "plugin panicked: {}", info.message());
    if let Some(location) = info.location() {
        let _ = write!(line, " at {}:{}", location.file(), location.line());
    }
    imports::log(LogLevel::Error, line.as_str());
    core::arch::wasm32::unreachable()
}

/// A fixed buffer that keeps the first bytes written and drops the rest,
/// cutting only at character boundaries.
struct StackLine {
    bytes: [u8; PANIC_MESSAGE_BYTES_MAX],
    len: usize,
}

impl StackLine {
    fn as_str(&self) -> &str {
        // Only whole `&str` prefixes are ever copied in, so the bytes are
        // UTF-8; the fallback is unreachable but costs nothing to keep.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("plugin panicked")
    }
}

impl Write for StackLine {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = PANIC_MESSAGE_BYTES_MAX - self.len;
        let fitting = crate::quote::truncate_utf8(text, room);
        self.bytes[self.len..self.len + fitting.len()].copy_from_slice(fitting.as_bytes());
        self.len += fitting.len();
        if fitting.len() < text.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}
