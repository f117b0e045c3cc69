//! What `std` would otherwise give a `wasm32` guest: a global allocator,
//! the canonical ABI's `cabi_realloc`, a panic handler, and the C library's
//! memory functions.
//!
//! Plugins are `#![no_std]` so that their components import nothing but the
//! `merchant-rules` world (see the crate docs); this module is compiled only
//! for `wasm32`, where nothing else provides these items. Native builds
//! (unit tests) use `std`'s and need no `cabi_realloc`.

use alloc::alloc::{Layout, alloc, handle_alloc_error, realloc};
use core::fmt::{self, Write};
use core::panic::PanicInfo;

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
// it hits the host's memory limit. Its memory comes from `memory.grow`, so
// the host's memory limit bounds it.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

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
