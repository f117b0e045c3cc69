//! SQLite's own page cache, with one key moved out of its way, so that a
//! commit no longer walks every cached page.
//!
//! At the end of each write transaction SQLite truncates the connection's
//! page cache to the file's size (`pcache1Truncate`). That is cheap when the
//! cache's highest key ever seen is near the file's size: it visits only the
//! hash slots above it. But a B-tree page split that puts its new pages in
//! file order (`balance_nonroot`) swaps two page numbers through a temporary
//! one, the lock page's number: 262 145 with 4 KiB pages. That raises the
//! cache's high-water mark far above any file under 1 GiB, and the next
//! truncate walks the whole hash table: every cached page (some 16 000 in
//! the writer's 64 MiB cache), about a millisecond, on most commits of a
//! ledger whose indexes take keys in no order (idempotency keys, payment
//! ids). Profiled at half of peak load, that walk was 28% of the writer
//! thread's time.
//!
//! The fix here wraps SQLite's default cache (`pcache1`, obtained from
//! SQLite itself) and maps one key in each direction: the lock page's
//! number to 0, and 0 back. Neither is ever a real page: page numbers start
//! at 1, and SQLite never reads or writes the lock page (it reports a file
//! that points at it as corrupt). So the swap goes through key 0, which
//! never raises the high-water mark, and everything else reaches `pcache1`
//! unchanged. The wrapper holds no pages and makes no decisions of its own.
//!
//! The cache is process-wide and SQLite takes it only before its first
//! connection: [`configure`] is called by every ledger open, and the first
//! call wins. A process that opens SQLite connections of its own before a
//! ledger keeps SQLite's cache as is (it works the same, only slower); the
//! daemon configures it first thing in `main`.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_uint};
use std::mem::MaybeUninit;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::ffi;

/// Which page cache SQLite uses, process-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PageCache {
    /// SQLite's own cache with the lock page's key remapped (see the module
    /// documentation): the default.
    #[default]
    LockPageRemapped,
    /// SQLite's own cache, as it comes (for comparison).
    Sqlite,
}

/// SQLite's byte offset of the lock page (`PENDING_BYTE`); changing it is
/// a test-only SQLite control that no build of ours uses.
const PENDING_BYTE: c_uint = 0x4000_0000;

/// SQLite's default cache methods, which every method here forwards to.
struct Inner(ffi::sqlite3_pcache_methods2);

// SAFETY: a table of C function pointers and `pArg`, which SQLite's default
// cache ignores; it is written once, before any use, and only read after.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

static INNER: OnceLock<Inner> = OnceLock::new();
static CHOSEN: OnceLock<PageCache> = OnceLock::new();
static LOCK_PAGE_SWAPS: AtomicU64 = AtomicU64::new(0);

/// One connection's cache: the default cache's handle and the key that
/// goes to 0 in it.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    lock_page: c_uint,
}

/// Makes `choice` SQLite's page cache for this process, unless one was
/// chosen before; returns the cache in effect. Falls back to
/// [`PageCache::Sqlite`] (with a warning) when SQLite was already
/// initialised by a connection opened outside the ledger.
pub fn configure(choice: PageCache) -> PageCache {
    *CHOSEN.get_or_init(|| match choice {
        PageCache::Sqlite => PageCache::Sqlite,
        PageCache::LockPageRemapped => match install() {
            Ok(()) => PageCache::LockPageRemapped,
            Err(code) => {
                tracing::warn!(
                    code,
                    "SQLite was initialised before the ledger: its page cache stays as is, \
                     and commits walk the whole cache after some page splits"
                );
                PageCache::Sqlite
            }
        },
    })
}

/// How many page swaps went through the lock page's key (and so through
/// key 0 instead) since the process started.
pub fn lock_page_swaps() -> u64 {
    LOCK_PAGE_SWAPS.load(Ordering::Relaxed)
}

fn install() -> Result<(), c_int> {
    let mut default = MaybeUninit::<ffi::sqlite3_pcache_methods2>::zeroed();
    // SAFETY: `sqlite3_config` before SQLite's initialisation, which it
    // checks (SQLITE_MISUSE otherwise); GETPCACHE2 fills in the struct.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, default.as_mut_ptr()) };
    if rc != ffi::SQLITE_OK {
        return Err(rc);
    }
    // SAFETY: filled in by SQLite above (and zeroed before).
    let default = unsafe { default.assume_init() };
    let _ = INNER.set(Inner(default));
    let methods = ffi::sqlite3_pcache_methods2 {
        iVersion: default.iVersion,
        pArg: default.pArg,
        xInit: default.xInit,
        xShutdown: default.xShutdown,
        xCreate: Some(create),
        xCachesize: Some(cachesize),
        xPagecount: Some(pagecount),
        xFetch: Some(fetch),
        xUnpin: Some(unpin),
        xRekey: Some(rekey),
        xTruncate: Some(truncate),
        xDestroy: Some(destroy),
        xShrink: Some(shrink),
    };
    // SAFETY: as above; SQLite copies the struct.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &methods) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}

fn inner() -> &'static ffi::sqlite3_pcache_methods2 {
    // Set before SQLite can call any method below.
    &INNER.get().expect("page cache installed").0
}

/// The default cache's method, which SQLite's own table always has.
macro_rules! method {
    ($name:ident) => {
        inner()
            .$name
            .expect(concat!("SQLite's page cache has ", stringify!($name)))
    };
}

/// The key the default cache sees for SQLite's `key`.
fn map(cache: &Cache, key: c_uint) -> c_uint {
    if key == cache.lock_page {
        0
    } else if key == 0 {
        cache.lock_page
    } else {
        key
    }
}

/// # Safety
/// `p` is a handle [`create`] returned and [`destroy`] has not freed.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a Cache {
    // SAFETY: the caller's contract.
    unsafe { &*p.cast::<Cache>() }
}

unsafe extern "C" fn create(
    page_bytes: c_int,
    extra_bytes: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    // SAFETY: SQLite's own arguments, forwarded.
    let inner = unsafe { method!(xCreate)(page_bytes, extra_bytes, purgeable) };
    if inner.is_null() {
        return inner;
    }
    let lock_page = PENDING_BYTE / c_uint::try_from(page_bytes.max(1)).unwrap_or(1) + 1;
    Box::into_raw(Box::new(Cache { inner, lock_page })).cast()
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    // SAFETY: `p` is ours (SQLite's contract); the rest is forwarded.
    unsafe { method!(xCachesize)(cache(p).inner, pages) }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: as in `cachesize`.
    unsafe { method!(xPagecount)(cache(p).inner) }
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: as in `cachesize`.
    unsafe {
        let cache = cache(p);
        method!(xFetch)(cache.inner, map(cache, key), create)
    }
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    // SAFETY: as in `cachesize`.
    unsafe { method!(xUnpin)(cache(p).inner, page, discard) }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    // SAFETY: as in `cachesize`.
    unsafe {
        let cache = cache(p);
        if new == cache.lock_page {
            LOCK_PAGE_SWAPS.fetch_add(1, Ordering::Relaxed);
        }
        method!(xRekey)(cache.inner, page, map(cache, old), map(cache, new))
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    // SAFETY: as in `cachesize`. Key 0 holds a page only within one page
    // split, never across a truncate.
    unsafe { method!(xTruncate)(cache(p).inner, limit) }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` came from `Box::into_raw` in `create`, and SQLite calls
    // this once, last.
    unsafe {
        let cache = Box::from_raw(p.cast::<Cache>());
        method!(xDestroy)(cache.inner);
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: as in `cachesize`.
    unsafe { method!(xShrink)(cache(p).inner) }
}
