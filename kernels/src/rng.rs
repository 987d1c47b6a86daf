//! The one pseudo-random generator of the project: test data, property-test inputs and the
//! random weights of named architectures. xorshift64*, so a seed gives the same values on
//! every platform and in every run; not for anything that needs unpredictability.

/// An xorshift64* stream.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A stream for `seed`; nearby seeds give unrelated streams.
    pub fn new(seed: u64) -> Self {
        // One round of splitmix64's finaliser, so that seeds 0, 1, 2 differ in every bit;
        // the state must not be zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[-spread, spread)`, from 24 random bits.
    pub fn symmetric(&mut self, spread: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (unit * 2.0 - 1.0) * spread
    }

    /// `len` values uniform in `[-spread, spread)`.
    pub fn values(seed: u64, len: usize, spread: f32) -> Vec<f32> {
        let mut rng = Self::new(seed);
        (0..len).map(|_| rng.symmetric(spread)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_reproducible_and_cover_the_range() {
        let a = Rng::values(7, 10_000, 0.5);
        assert_eq!(a, Rng::values(7, 10_000, 0.5));
        assert_ne!(a, Rng::values(8, 10_000, 0.5));
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!(a.iter().any(|&v| v < -0.45) && a.iter().any(|&v| v > 0.45));
    }
}
