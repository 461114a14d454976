//! How the process's heap treats the memory it frees while a snapshot is
//! read with its unchanged records left out.
//!
//! Such a read makes and frees blocks of the same few sizes chunk after
//! chunk: each chunk's text, its parsed columns, the hashes it notes. By
//! default glibc hands a freed block of 128 KB or more back to the kernel
//! (and trims the top of its heap past 128 KB), so the next chunk's block
//! is fresh memory the kernel clears page by page as it is first touched.
//! While the file is read, freed memory is kept instead and the next chunk
//! reuses its pages; once the read is done, what the heap holds free goes
//! back, before DuckDB diffs and applies, so a daemon holds no more between
//! files than it did. The setting is the process's: of two files read at
//! once, the first done hands back what both had freed, which costs the
//! other only the reuse.

/// Blocks up to this size come from the heap, and are kept when freed;
/// larger ones (whole-file tables) are mapped and unmapped on their own.
/// It stays so once the read is done: setting either threshold stops glibc
/// adjusting both, and 32 MB is where its own adjustment ends up as soon
/// as a chunk-sized mapped block is freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const KEPT_BLOCK: libc::c_int = 32 << 20;

/// Free memory at the top of the heap kept while a file is read.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const KEPT_WHILE_READING: libc::c_int = 1 << 30;

/// glibc's own threshold for trimming the top of the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const DEFAULT_TRIM: libc::c_int = 128 << 10;

/// Freed memory is kept for the next allocations while this lives; when it
/// is dropped, what the heap holds free goes back to the kernel.
#[must_use = "memory is kept only while the guard lives"]
pub struct KeptWhileReading(());

/// Keeps freed memory for the next allocations until the guard is dropped.
pub fn keep_while_reading() -> KeptWhileReading {
    set_thresholds(true);
    KeptWhileReading(())
}

impl Drop for KeptWhileReading {
    fn drop(&mut self) {
        set_thresholds(false);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory, under the heap's
        // own locks.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

fn set_thresholds(keep: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt changes two of the allocator's thresholds, under its
    // own lock; they are plain sizes other threads only compare against.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, KEPT_BLOCK);
        libc::mallopt(
            libc::M_TRIM_THRESHOLD,
            if keep {
                KEPT_WHILE_READING
            } else {
                DEFAULT_TRIM
            },
        );
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = keep;
}
