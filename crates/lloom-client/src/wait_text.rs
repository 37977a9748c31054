//! How a wait reads in messages: "350 ms" below a second, "2 s" or "1.5 s" above.

use std::time::Duration;

/// A wait as people read it: milliseconds below a second, else seconds (one decimal when
/// not whole).
pub(crate) fn wait_text(wait: Duration) -> String {
    let millis = wait.as_millis();
    if millis < 1_000 {
        format!("{millis} ms")
    } else if millis.is_multiple_of(1_000) {
        format!("{} s", millis / 1_000)
    } else {
        format!("{:.1} s", wait.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_in_the_unit_that_fits() {
        assert_eq!(wait_text(Duration::from_millis(0)), "0 ms");
        assert_eq!(wait_text(Duration::from_millis(350)), "350 ms");
        assert_eq!(wait_text(Duration::from_secs(2)), "2 s");
        assert_eq!(wait_text(Duration::from_millis(1_500)), "1.5 s");
        assert_eq!(wait_text(Duration::from_millis(61_250)), "61.2 s");
    }
}
