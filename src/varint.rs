//! LEB128 varints and zigzag, as Tally's own binary encodings write numbers
//! (sketches, flattened series, call chunks).

/// Appends `value` in LEB128: 7 bits a byte, low bits first.
pub fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a LEB128 varint from the front of `input`, advancing it: None when
/// it ends early, runs past 10 bytes or holds bits beyond 64.
pub fn take(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A signed number as an unsigned one small when the number is near zero.
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub fn unzigzag(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_bad_input_is_refused() {
        let values = [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX];
        let mut out = Vec::new();
        for &v in &values {
            put(&mut out, v);
        }
        let mut input = out.as_slice();
        for &v in &values {
            assert_eq!(take(&mut input), Some(v));
        }
        assert!(input.is_empty());
        assert_eq!(take(&mut &[0x80u8][..]), None, "ends early");
        assert_eq!(take(&mut &[0xffu8; 10][..]), None, "bits past 64");
        for v in [0, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!((zigzag(0), zigzag(-1), zigzag(1)), (0, 1, 2));
    }
}
