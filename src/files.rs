//! Private files and folders: everything under the data folder holds secrets (the local token
//! secret, Janus credentials, room pins and Janus room secrets in the database), so the folder is
//! created `0700` and the files in it `0600`, whatever the process umask.
//!
//! - [`create_private_dir`]: the data folder and the folders in it.
//! - [`prepare_private_file`]: a file another library creates or writes (SQLite), made private
//!   before that library opens it, together with its companion files (`-wal`, `-shm`).

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// Mode of the data folder and the folders in it.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every file holding secrets or data.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with mode `0700`. Idempotent. A folder that already
/// exists keeps its mode (it may be a folder the operator chose and shares on purpose); a warning
/// says so when others can read it.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{mode:o}"),
                    "the data folder can be read by other users; chmod 700 it"
                );
            }
            Ok(())
        }
        Ok(_) => Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is not a folder", dir.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR_MODE).create(dir)
        }
        Err(e) => Err(e),
    }
}

/// Makes `path` a private file before another library opens it: its folder is created with
/// [`create_private_dir`], the file is created empty with mode `0600` when missing, and an
/// existing file and its `companions` (suffixes such as `-wal`, `-shm`) are set to `0600`.
/// SQLite creates its `-wal` and `-shm` files with the database file's mode, so this keeps all
/// three private. Idempotent.
pub fn prepare_private_file(path: &Path, companions: &[&str]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    fs::OpenOptions::new().write(true).create(true).truncate(false).mode(PRIVATE_FILE_MODE).open(path)?;
    for file in std::iter::once(path.to_path_buf()).chain(companions.iter().map(|c| with_suffix(path, c))) {
        match fs::set_permissions(&file, fs::Permissions::from_mode(PRIVATE_FILE_MODE)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name (SQLite's companions: `-wal`, `-shm`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_are_created_private_and_files_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        let file = dir.join("db");
        fs::create_dir_all(root.path().join("x")).unwrap();
        prepare_private_file(&file, &["-wal"]).unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);

        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(with_suffix(&file, "-wal"), b"").unwrap();
        fs::set_permissions(with_suffix(&file, "-wal"), fs::Permissions::from_mode(0o644)).unwrap();
        prepare_private_file(&file, &["-wal", "-shm"]).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&with_suffix(&file, "-wal")), 0o600);
    }
}
