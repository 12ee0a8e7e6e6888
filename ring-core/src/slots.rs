//! A ring's slot array: cache-line aligned, and resident only where written.
//!
//! A ring is sized for its worst case (4 MiB by default in the server) but
//! most topics hold far less. Memory from the allocator's zeroed path is
//! fresh `mmap` pages for large blocks, which the OS backs only when a page
//! is first written, so a ring costs what it has actually held. Building
//! the array slot by slot (`Slot::new()` in a loop) would write, and so pin,
//! every page up front: 300 idle-ish 4 MiB topics were 1.2 GB of RSS.
//!
//! Why this needs `unsafe`: std zeroes an allocation aligned to more than
//! 16 bytes with an explicit `memset` (touching every page), and slots are
//! 64-byte aligned. So the array is allocated 16-byte aligned (the calloc
//! path), with one slot of slack, and the first 64-byte boundary inside it
//! is used. This is the crate's only `unsafe`; the ring protocol itself
//! needs none.
//!
//! Under loom the atomics are loom's own objects, not plain words, so the
//! array is a `Box<[Slot]>` built slot by slot (loom rings are tiny).

#[cfg(loom)]
pub(crate) type Slots = Box<[crate::slot::Slot]>;

/// `len` never-written slots (every stamp 0), or `None` if the allocator
/// refuses.
#[cfg(loom)]
pub(crate) fn zeroed(len: usize) -> Option<Slots> {
    Some((0..len).map(|_| crate::slot::Slot::new()).collect())
}

#[cfg(not(loom))]
pub(crate) use zeroed::Slots;

/// `len` never-written slots (every stamp 0), or `None` if the allocator
/// refuses (or the size overflows).
#[cfg(not(loom))]
pub(crate) fn zeroed(len: usize) -> Option<Slots> {
    Slots::zeroed(len)
}

#[cfg(not(loom))]
#[allow(unsafe_code)]
mod zeroed {
    use std::alloc::Layout;
    use std::ptr::NonNull;

    use crate::slot::{Slot, SLOT_BYTES};

    /// Alignment of the underlying allocation: at most the allocator's
    /// minimum, so that `alloc_zeroed` takes the lazy calloc path.
    const RAW_ALIGN: usize = 16;

    /// `len` slots, every byte zero (every stamp 0: never written).
    pub(crate) struct Slots {
        /// Start of the allocation (for `dealloc`).
        raw: NonNull<u8>,
        layout: Layout,
        /// First 64-byte aligned slot inside the allocation.
        first: NonNull<Slot>,
        len: usize,
    }

    // SAFETY: `Slots` owns its allocation exclusively, like a `Box<[Slot]>`,
    // and `Slot` (atomics only) is `Send + Sync`.
    unsafe impl Send for Slots {}
    // SAFETY: shared access only hands out `&[Slot]`; see `Send` above.
    unsafe impl Sync for Slots {}

    impl Slots {
        /// See [`super::zeroed`].
        pub(crate) fn zeroed(len: usize) -> Option<Slots> {
            if len == 0 {
                return Some(Slots {
                    raw: NonNull::dangling(),
                    layout: Layout::new::<()>(),
                    first: NonNull::dangling(),
                    len: 0,
                });
            }
            let bytes = len.checked_mul(SLOT_BYTES)?.checked_add(SLOT_BYTES)?;
            let layout = Layout::from_size_align(bytes, RAW_ALIGN).ok()?;
            // SAFETY: `layout` has a non-zero size.
            let raw = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
            let offset = raw.as_ptr().align_offset(std::mem::align_of::<Slot>());
            debug_assert!(offset < SLOT_BYTES);
            // SAFETY: `offset < SLOT_BYTES` (the allocation is 16-byte
            // aligned), so `offset + len * SLOT_BYTES <= bytes`: the aligned
            // start plus `len` slots stays inside the allocation.
            let first = unsafe { raw.add(offset) }.cast::<Slot>();
            Some(Slots {
                raw,
                layout,
                first,
                len,
            })
        }
    }

    impl std::ops::Deref for Slots {
        type Target = [Slot];
        fn deref(&self) -> &[Slot] {
            // SAFETY: `first` is 64-byte aligned and `len` slots from it lie
            // inside our live allocation (see `zeroed`); all-zero bytes are
            // a valid `Slot` (`repr(C)`, only `AtomicU64`s, which have the
            // representation of `u64`); every later write goes through the
            // atomics, so shared references are sound. For `len == 0`,
            // a dangling aligned pointer is valid for an empty slice.
            unsafe { std::slice::from_raw_parts(self.first.as_ptr(), self.len) }
        }
    }

    impl Drop for Slots {
        fn drop(&mut self) {
            if self.len > 0 {
                // SAFETY: `raw` came from `alloc_zeroed(self.layout)` and is
                // freed exactly once, here.
                unsafe { std::alloc::dealloc(self.raw.as_ptr(), self.layout) }
            }
        }
    }
}
