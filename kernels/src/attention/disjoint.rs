//! Lets pool tasks write disjoint parts of one output slice.

use std::marker::PhantomData;

/// A mutable slice that several threads may carve into non-overlapping pieces.
pub(crate) struct DisjointMut<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: `piece` hands out raw views whose disjointness its callers guarantee; f32 is Send.
unsafe impl Sync for DisjointMut<'_> {}

impl<'a> DisjointMut<'a> {
    pub(crate) fn new(slice: &'a mut [f32]) -> Self {
        Self {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: PhantomData,
        }
    }

    /// `len` elements from `offset`.
    ///
    /// # Safety
    /// No two pieces alive at the same time may overlap.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn piece(&self, offset: usize, len: usize) -> &mut [f32] {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "piece out of bounds"
        );
        // SAFETY: in bounds of the borrowed slice (checked above), and the caller keeps
        // live pieces disjoint, so this is the only reference to these elements.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) }
    }
}
