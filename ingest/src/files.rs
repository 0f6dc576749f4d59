//! Reading files a user names: only regular files, and never more than a cap. A FIFO would block
//! a reader forever; a device such as /dev/zero would fill memory.

use std::io::Read;
use std::path::Path;

/// Largest file read whole (a 100-megapixel image or any metadata CSV is far below it).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Checks that `path` is a regular file of at most `max` bytes (symbolic links followed).
pub fn check_regular(path: &Path, max: u64) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("{} bytes, over the limit of {max}", meta.len()),
        ));
    }
    Ok(())
}

/// Reads a file checked by [`check_regular`] (at most `max` bytes, should it grow meanwhile).
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    check_regular(path, max)?;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.csv");
        std::fs::write(&file, b"x,y\n").expect("write");
        assert_eq!(read_regular(&file, 100).expect("read"), b"x,y\n");
        assert_eq!(read_regular(&file, 2).expect_err("over the cap").kind(), std::io::ErrorKind::FileTooLarge);
        assert_eq!(read_regular(dir.path(), 100).expect_err("a folder").kind(), std::io::ErrorKind::InvalidInput);
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            assert_eq!(read_regular(zero, 100).expect_err("a device").kind(), std::io::ErrorKind::InvalidInput);
        }
        assert_eq!(
            read_regular(&dir.path().join("none"), 100).expect_err("missing").kind(),
            std::io::ErrorKind::NotFound
        );
    }
}
