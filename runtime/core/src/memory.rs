//! Large, short-lived buffers written front to back: a report's rows and
//! the findings of a big account.
//!
//! Writing 80 MB of fresh memory costs one page fault per 4 KiB page, and
//! at 100,000 users those faults take as long as the evaluation itself.
//! Where the kernel offers transparent huge pages only on request
//! (`/sys/kernel/mm/transparent_hugepage/enabled` set to `madvise`, the
//! default of many distributions), asking for them turns 512 faults into
//! one. Small buffers are left alone: a huge page would make a 2,000-user
//! account's few hundred KB resident as 2 MB.

/// Below this, a buffer is left to ordinary pages (two huge pages).
const LARGE: usize = 4 << 20;

/// Ask the kernel to back the spare room of `v` with huge pages, if it is
/// large. Advice only: nothing changes if the kernel declines or does not
/// know it, and the contents are never touched.
pub(crate) fn advise_huge_pages<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        let bytes = v.capacity().saturating_mul(size_of::<T>());
        if bytes < LARGE {
            return;
        }
        // SAFETY: sysconf reads a constant of the system.
        let page = match usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) {
            Ok(p) if p.is_power_of_two() => p,
            _ => return,
        };
        let start = v.as_mut_ptr() as usize;
        let begin = start.next_multiple_of(page);
        let end = (start + bytes) & !(page - 1);
        if end <= begin {
            return;
        }
        // SAFETY: [begin, end) lies inside the allocation `v` owns (whole
        // pages of it), and MADV_HUGEPAGE only marks those pages as
        // eligible for huge pages: it neither moves, frees nor changes
        // memory. The result is ignored: an older kernel or one without
        // transparent huge pages refuses, and the buffer works as before.
        unsafe {
            libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

#[cfg(test)]
mod tests {
    use super::{LARGE, advise_huge_pages};

    #[test]
    fn advice_leaves_buffers_as_they_were() {
        // A large buffer, with its first elements written before the
        // advice and the rest after; and a small one, left alone.
        let mut large: Vec<u64> = Vec::with_capacity(LARGE / 8 * 3 + 5);
        large.extend(0..1000);
        advise_huge_pages(&mut large);
        large.extend(1000..(LARGE as u64 / 8 * 3 + 5));
        assert!(large.iter().enumerate().all(|(i, &v)| v == i as u64));
        let mut small = vec![7u8; 100];
        advise_huge_pages(&mut small);
        assert_eq!(small, [7u8; 100]);
        let mut empty: Vec<String> = Vec::new();
        advise_huge_pages(&mut empty);
        assert!(empty.is_empty());
    }
}
