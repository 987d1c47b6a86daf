//! Buffers whose first element sits on a cache line. A 64-byte vector load from them
//! never straddles two lines, and threads that write neighbouring line-sized pieces (one
//! head's 64 columns of a row, say) never share a line: with the 16-byte offset that large
//! heap blocks get, both happen on every access.

use std::ops::{Deref, DerefMut};

/// Bytes in a cache line.
const CACHE_LINE: usize = 64;

/// A zero-initialised buffer of `f32` (or of the narrower values the reduced-precision
/// GEMMs pack) whose first element sits on a cache line.
pub struct AlignedVec<T = f32> {
    storage: Vec<T>,
    start: usize,
    len: usize,
}

impl<T> Default for AlignedVec<T> {
    fn default() -> Self {
        Self {
            storage: Vec::new(),
            start: 0,
            len: 0,
        }
    }
}

impl<T: Copy + Default> AlignedVec<T> {
    /// Elements in a cache line.
    const LINE: usize = CACHE_LINE / std::mem::size_of::<T>();

    pub fn zeroed(len: usize) -> Self {
        let storage = vec![T::default(); len + Self::LINE - 1];
        // `align_offset` may in principle decline; the buffer then works unaligned.
        let start = storage
            .as_ptr()
            .align_offset(CACHE_LINE)
            .min(Self::LINE - 1);
        Self {
            storage,
            start,
            len,
        }
    }

    /// Sets the length to `len`, keeping the values before it and zeroing new ones; the
    /// storage is reallocated only when it is too small.
    pub fn resize(&mut self, len: usize) {
        if self.start + len <= self.storage.len() {
            if len > self.len {
                self.storage[self.start + self.len..self.start + len].fill(T::default());
            }
            self.len = len;
        } else {
            let mut grown = Self::zeroed(len);
            grown[..self.len].copy_from_slice(self);
            *self = grown;
        }
    }

    /// Grows the buffer to at least `len` values.
    pub fn reserve_len(&mut self, len: usize) {
        if self.len < len {
            self.resize(len);
        }
    }
}

impl<T> Deref for AlignedVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.storage[self.start..][..self.len]
    }
}

impl<T> DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.storage[self.start..][..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_cache_line_and_keeps_values_when_it_grows() {
        let mut v = AlignedVec::<f32>::default();
        for len in [0, 1, 17, 5, 1000, 3] {
            let kept = v.len().min(len);
            let before = v[..kept].to_vec();
            v.resize(len);
            assert_eq!(v.len(), len);
            assert_eq!(&v[..kept], &before[..]);
            assert!(v[kept..].iter().all(|&x| x == 0.0));
            if len > 0 {
                assert_eq!(v.as_ptr() as usize % CACHE_LINE, 0);
            }
            v.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = i as f32 + 1.0);
        }
    }
}
