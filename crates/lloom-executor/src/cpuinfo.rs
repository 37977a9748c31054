//! Reading `/proc/cpuinfo`: what the CPU is and which instructions it has (an empty text where
//! there is no such file, so callers describe what they can).

/// The text of `/proc/cpuinfo`, or an empty one.
pub(crate) fn read() -> String {
    std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()
}

/// The first value of the field `name` (`model name`, `flags`, ...) in `cpuinfo`.
pub(crate) fn field<'a>(cpuinfo: &'a str, name: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_their_whole_name() {
        let text = "processor\t: 0\nflagsx\t: no\nflags\t\t: fpu avx2 \nmodel name\t: Xeon\n";
        assert_eq!(field(text, "flags"), Some("fpu avx2"));
        assert_eq!(field(text, "model name"), Some("Xeon"));
        assert_eq!(field(text, "bogomips"), None);
        assert_eq!(field("", "flags"), None);
    }
}
