//! The writer's log writes, gathered into a few large writes per commit.
//!
//! SQLite appends a commit to the write-ahead log frame by frame, two
//! `pwrite` calls per page (the 24-byte frame header, then the page), and
//! syncs the log once at the end. A commit of a batch of payments writes
//! about 900 frames, so the writer made some 1 800 system calls per commit:
//! `pagerWalFrames` was 28% of the writer thread's time in the profile of
//! the closed loop (`BENCHMARKS.md`).
//!
//! [`VFS_NAME`] is SQLite's default file layer with the log files wrapped:
//! writes that continue where the last one ended are gathered in memory,
//! and reach the file (in writes of up to 64 KiB) before anything else
//! touches it: a sync, a read, a size, a truncate, a lock, a close. Every
//! other file, and every other call, goes to SQLite's own layer unchanged.
//!
//! Why this keeps every guarantee:
//!
//! - With `synchronous = FULL`, SQLite syncs the log at every commit before
//!   it publishes the commit's frames to other connections (the log index
//!   header in shared memory). The sync writes the gathered frames first,
//!   so a reader, the checkpointer and the disk see exactly what they saw
//!   before, at the same moments.
//! - With `synchronous = NORMAL` there is no sync per commit, and frames
//!   would be published while still gathered here: the ledger opens the
//!   writer with this layer only under FULL (`schema::open_writer`).
//! - Writes reach the file in the order SQLite made them: a write that
//!   does not continue the gathered run first writes the run out.
//! - A failed write is reported by the call that wrote it out (the sync at
//!   commit, usually), as SQLite's own write error would have been.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::{align_of, size_of};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::ffi;

/// The name connections open with to gather their log writes.
pub(crate) const VFS_NAME: &CStr = c"wasmpay-gathered-wal";

/// Gathered bytes that are written out at once even before a sync, so that
/// a huge transaction does not hold its whole log in memory.
const GATHERED_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The most bytes passed to the default layer's write at once: its unix
/// write keeps only the low 17 bits of a length (`seekAndWriteFd`), since
/// SQLite itself never writes more than a 64 KiB page at a time.
const WRITE_BYTES_MAX: usize = 64 * 1024;

/// Writes gathered into another one, for tests and the benchmark.
static GATHERED: AtomicU64 = AtomicU64::new(0);

/// Log writes that were gathered into an earlier one instead of going to
/// the file on their own, since the process started.
pub fn gathered_writes() -> u64 {
    GATHERED.load(Ordering::Relaxed)
}

/// SQLite's default file layer, which everything here forwards to.
struct Base(*mut ffi::sqlite3_vfs);

// SAFETY: a pointer to SQLite's registered default VFS, which lives for the
// whole process and is only read.
unsafe impl Send for Base {}
unsafe impl Sync for Base {}

static REGISTERED: OnceLock<Result<Base, c_int>> = OnceLock::new();

/// Registers [`VFS_NAME`] (once per process; later calls return the first
/// result). Not the default: only connections that name it use it.
pub(crate) fn register() -> Result<(), c_int> {
    let registered = REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find` initialises SQLite and returns the
        // default VFS, which is never unregistered. The copy is leaked: a
        // registered VFS must outlive every connection that uses it.
        unsafe {
            let base = ffi::sqlite3_vfs_find(std::ptr::null());
            if base.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let mut vfs = *base;
            vfs.szOsFile = c_int::try_from(INNER_OFFSET)
                .ok()
                .and_then(|offset| offset.checked_add((*base).szOsFile))
                .ok_or(ffi::SQLITE_ERROR)?;
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = VFS_NAME.as_ptr();
            vfs.xOpen = Some(x_open);
            let rc = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0);
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
            Ok(Base(base))
        }
    });
    registered.as_ref().map(|_| ()).map_err(|rc| *rc)
}

fn base() -> *mut ffi::sqlite3_vfs {
    match REGISTERED.get() {
        Some(Ok(base)) => base.0,
        // `x_open` is reachable only through the registered VFS.
        _ => unreachable!("the gathering VFS is used before it was registered"),
    }
}

/// A log file opened through [`VFS_NAME`]: SQLite's file object, followed
/// (at [`INNER_OFFSET`]) by the default layer's own.
#[repr(C)]
struct LogFile {
    base: ffi::sqlite3_file,
    gathered: *mut Gathered,
}

/// The run of bytes written but not yet passed on, starting at `offset`.
struct Gathered {
    offset: i64,
    bytes: Vec<u8>,
}

/// Where the default layer's file object starts inside a [`LogFile`]'s
/// allocation (SQLite allocates `szOsFile` bytes, 8-aligned).
const INNER_OFFSET: usize = size_of::<LogFile>().next_multiple_of(align_of::<u64>());

/// The default layer's file object inside `file`.
///
/// # Safety
/// `file` is a [`LogFile`] allocation of the registered `szOsFile`.
unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    unsafe { file.cast::<u8>().add(INNER_OFFSET).cast() }
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base = base();
    // SAFETY: SQLite hands a zeroed allocation of our `szOsFile` bytes,
    // which is larger than the default layer's; the default layer's xOpen
    // is called with its own VFS object, as it expects.
    unsafe {
        let Some(open) = (*base).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // Not a log: the default layer's file object, at the start.
            return open(base, name, file, flags, out_flags);
        }
        let rc = open(base, name, inner(file), flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite closes nothing whose methods are null.
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        let log = file.cast::<LogFile>();
        (*log).gathered = Box::into_raw(Box::new(Gathered {
            offset: 0,
            bytes: Vec::new(),
        }));
        (*log).base.pMethods = &LOG_METHODS;
        ffi::SQLITE_OK
    }
}

/// Writes the gathered run out, if any.
///
/// # Safety
/// `file` is an open [`LogFile`].
unsafe fn write_out(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let gathered = &mut *(*file.cast::<LogFile>()).gathered;
        if gathered.bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let inner = inner(file);
        let Some(write) = (*(*inner).pMethods).xWrite else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let mut rc = ffi::SQLITE_OK;
        let mut offset = gathered.offset;
        for chunk in gathered.bytes.chunks(WRITE_BYTES_MAX) {
            // At most WRITE_BYTES_MAX: the length fits.
            rc = write(inner, chunk.as_ptr().cast(), chunk.len() as c_int, offset);
            if rc != ffi::SQLITE_OK {
                break;
            }
            offset += chunk.len() as i64;
        }
        gathered.bytes.clear();
        rc
    }
}

/// The default layer's method `$method` of `file`'s inner object, called
/// with `$args` after the gathered run is written out.
macro_rules! after_write_out {
    ($file:ident, $method:ident, $missing:expr $(, $arg:expr)*) => {
        unsafe {
            let rc = write_out($file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            let inner = inner($file);
            match (*(*inner).pMethods).$method {
                Some(method) => method(inner $(, $arg)*),
                None => $missing,
            }
        }
    };
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes an open file of ours and `amount` readable bytes.
    unsafe {
        let gathered = &mut *(*file.cast::<LogFile>()).gathered;
        let Ok(len) = usize::try_from(amount) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let end = gathered.offset + gathered.bytes.len() as i64;
        if gathered.bytes.is_empty() {
            gathered.offset = offset;
        } else if offset == end {
            GATHERED.fetch_add(1, Ordering::Relaxed);
        } else {
            let rc = write_out(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            gathered.offset = offset;
        }
        gathered
            .bytes
            .extend_from_slice(std::slice::from_raw_parts(buf.cast::<u8>(), len));
        if gathered.bytes.len() >= GATHERED_BYTES_MAX {
            return write_out(file);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes an open file of ours once; the gathered run is
    // freed here and nowhere else.
    unsafe {
        let written = write_out(file);
        let inner = inner(file);
        let closed = match (*(*inner).pMethods).xClose {
            Some(close) => close(inner),
            None => ffi::SQLITE_OK,
        };
        let log = file.cast::<LogFile>();
        drop(Box::from_raw((*log).gathered));
        (*log).gathered = std::ptr::null_mut();
        if written != ffi::SQLITE_OK {
            written
        } else {
            closed
        }
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    after_write_out!(file, xRead, ffi::SQLITE_IOERR_READ, buf, amount, offset)
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    after_write_out!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size)
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    after_write_out!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    after_write_out!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, size)
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    after_write_out!(file, xLock, ffi::SQLITE_IOERR_LOCK, level)
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    after_write_out!(file, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level)
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    after_write_out!(
        file,
        xCheckReservedLock,
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        out
    )
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    after_write_out!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: asks the inner object; nothing is written.
    unsafe {
        let inner = inner(file);
        (*(*inner).pMethods).xSectorSize.map_or(4096, |m| m(inner))
    }
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: asks the inner object; nothing is written.
    unsafe {
        let inner = inner(file);
        (*(*inner).pMethods)
            .xDeviceCharacteristics
            .map_or(0, |m| m(inner))
    }
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    page_size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    after_write_out!(
        file,
        xShmMap,
        ffi::SQLITE_IOERR_SHMMAP,
        page,
        page_size,
        extend,
        out
    )
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    after_write_out!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags)
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: the barrier cannot report an error; a failed write-out is
    // reported by the next call that writes out (the commit's sync).
    unsafe {
        let _ = write_out(file);
        let inner = inner(file);
        if let Some(barrier) = (*(*inner).pMethods).xShmBarrier {
            barrier(inner);
        }
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    after_write_out!(file, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: a fetch maps the file's bytes, so the run goes out first;
    // without the inner method, no mapping (SQLite then reads).
    unsafe {
        let rc = write_out(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let inner = inner(file);
        match (*(*inner).pMethods).xFetch {
            Some(fetch) => fetch(inner, offset, amount, out),
            None => {
                *out = std::ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

unsafe extern "C" fn x_unfetch(file: *mut ffi::sqlite3_file, offset: i64, p: *mut c_void) -> c_int {
    after_write_out!(file, xUnfetch, ffi::SQLITE_OK, offset, p)
}

static LOG_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};
