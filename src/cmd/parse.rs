//! Argument parsers that refuse, at parse time, values no command can use (a batch of 0, a
//! learning rate of NaN), so clap names the flag in its error.

use std::str::FromStr;

/// A count of at least 1 (steps, batch sizes, workers, rows per commit).
pub fn count<T: FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let n: T = s.parse().map_err(|e: T::Err| e.to_string())?;
    if n < T::from(1) { Err("must be at least 1".into()) } else { Ok(n) }
}

/// A finite number above 0 (learning rates).
pub fn positive(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e: std::num::ParseFloatError| e.to_string())?;
    if x.is_finite() && x > 0.0 { Ok(x) } else { Err("must be a finite number above 0".into()) }
}

/// A percentage above 0 and at most 100 (data fractions).
pub fn percent(s: &str) -> Result<f64, String> {
    let x = positive(s)?;
    if x <= 100.0 { Ok(x) } else { Err("must be a percentage in (0, 100]".into()) }
}

/// A number in [0, 1] (thresholds, probabilities).
pub fn unit<T: FromStr + Into<f64> + Copy>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let x: T = s.parse().map_err(|e: T::Err| e.to_string())?;
    if (0.0..=1.0).contains(&x.into()) { Ok(x) } else { Err("must be in [0, 1]".into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_no_command_can_use_are_refused() {
        assert_eq!(count::<usize>("3"), Ok(3));
        assert!(count::<usize>("0").is_err() && count::<u32>("-1").is_err() && count::<u64>("x").is_err());
        assert_eq!(positive("1e-3"), Ok(1e-3));
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(percent("1"), Ok(1.0));
        assert!(percent("200").is_err() && percent("0").is_err());
        assert_eq!(unit::<f32>("0.5"), Ok(0.5));
        assert!(unit::<f32>("2").is_err() && unit::<f32>("NaN").is_err());
    }
}
