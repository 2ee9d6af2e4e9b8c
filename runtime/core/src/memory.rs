//! Large, short-lived buffers written front to back: a big report's rows
//! and findings.
//!
//! Writing 80 MB of fresh memory costs one page fault per 4 KiB page, and
//! at 100,000 users those faults take as long as the evaluation itself.
//! Where the kernel offers transparent huge pages only on request
//! (`/sys/kernel/mm/transparent_hugepage/enabled` set to `madvise`, the
//! default of many distributions), asking for them turns 512 faults into
//! one.
//!
//! Only buffers of [`LARGE`] and more are advised. The C library maps a
//! buffer that large on its own (glibc's threshold for that never grows
//! past 32 MiB; musl's is far lower), so the advice goes away with the
//! buffer. A smaller one may come from the heap, where the advice would
//! stay on the pages after the buffer is freed: in a daemon, later
//! allocations there could be made huge pages, and the kernel could fill
//! them in again after the allocator gave them back.

/// Buffers of this size and more are advised.
const LARGE: usize = 32 << 20;

/// An empty vector with room for `capacity` elements, its buffer advised
/// onto huge pages if it is [`LARGE`].
pub(crate) fn with_capacity<T>(capacity: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(capacity);
    advise_huge_pages(&mut v);
    v
}

/// Ask the kernel to back the buffer of `v` with huge pages, if it is
/// [`LARGE`]. Advice only: nothing changes if the kernel declines or does
/// not know it, and the contents are never touched.
fn advise_huge_pages<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        let bytes = v.capacity().saturating_mul(size_of::<T>());
        if bytes < LARGE {
            return;
        }
        // SAFETY: sysconf reads a constant of the system.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page).unwrap_or(0);
        let Some((begin, len)) = interior(v.as_mut_ptr() as usize, bytes, page) else {
            return;
        };
        // SAFETY: [begin, begin + len) is whole pages inside the allocation
        // `v` owns, and MADV_HUGEPAGE only marks those pages as eligible
        // for huge pages: it neither moves, frees nor changes memory. The
        // result is ignored: an older kernel or one without transparent
        // huge pages refuses, and the buffer works as before.
        unsafe {
            libc::madvise(begin as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// The whole pages inside `bytes` bytes at `start`, as their start and
/// length; `None` when there are none or `page` is not a page size.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn interior(start: usize, bytes: usize, page: usize) -> Option<(usize, usize)> {
    if !page.is_power_of_two() {
        return None;
    }
    let begin = start.checked_next_multiple_of(page)?;
    let end = start.checked_add(bytes)? & !(page - 1);
    (end > begin).then(|| (begin, end - begin))
}

#[cfg(test)]
mod tests {
    use super::{LARGE, advise_huge_pages, interior};

    #[test]
    fn advice_covers_the_whole_pages_inside_the_buffer() {
        // Aligned: every page.
        assert_eq!(interior(8192, 8192, 4096), Some((8192, 8192)));
        // Unaligned at both ends: the pages wholly inside.
        assert_eq!(interior(4096 + 16, 3 * 4096, 4096), Some((8192, 8192)));
        // No whole page inside.
        assert_eq!(interior(4096 + 16, 4096, 4096), None);
        assert_eq!(interior(4096, 100, 4096), None);
        assert_eq!(interior(4096, 0, 4096), None);
        // Not a page size (sysconf failed, or nonsense).
        assert_eq!(interior(4096, 8192, 0), None);
        assert_eq!(interior(4096, 8192, 3000), None);
        // At the top of the address space: no overflow, nothing.
        assert_eq!(interior(usize::MAX - 10, 100, 4096), None);
    }

    #[test]
    fn advice_leaves_buffers_as_they_were() {
        // A large buffer, with its first elements written before the
        // advice and the rest after; and a small one, left alone.
        let len = LARGE / 8 + 5;
        let mut large: Vec<u64> = Vec::with_capacity(len);
        large.extend(0..1000);
        advise_huge_pages(&mut large);
        large.extend(1000..len as u64);
        assert!(large.iter().enumerate().all(|(i, &v)| v == i as u64));
        let mut small = vec![7u8; 100];
        advise_huge_pages(&mut small);
        assert_eq!(small, [7u8; 100]);
        let mut empty: Vec<String> = Vec::new();
        advise_huge_pages(&mut empty);
        assert!(empty.is_empty());
    }
}
