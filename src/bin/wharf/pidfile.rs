//! `--pidfile PATH`: the server's process id in a file, for scripts and service managers
//! (`kill -USR1 $(cat PATH)`), instead of `pgrep`, which also matches wharf-bench and the
//! workers of a `--workers` parent.
//!
//! The file is written once the server serves, to a temporary file beside it and renamed
//! over it, so a reader never sees it half written; it is removed when the server exits, if
//! it still names this process (a second server started with the same path owns it then).
//! A `--workers` parent writes its own pid; workers write none.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The pid file of this process; removed when dropped.
#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    contents: String,
}

impl Pidfile {
    /// Writes this process's id to `path`, atomically.
    pub fn create(path: &Path) -> io::Result<Pidfile> {
        let contents = format!("{}\n", std::process::id());
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the pid file needs a file name",
            )
        })?;
        let mut temporary = path.to_path_buf();
        temporary.set_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let written = fs::File::create(&temporary).and_then(|mut file| {
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        });
        if let Err(error) = written.and_then(|()| fs::rename(&temporary, path)) {
            let _ = fs::remove_file(&temporary);
            return Err(error);
        }
        Ok(Pidfile {
            path: path.to_path_buf(),
            contents,
        })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Only our own: a server started since with the same path has replaced it.
        if fs::read_to_string(&self.path).is_ok_and(|text| text == self.contents) {
            if let Err(error) = fs::remove_file(&self.path) {
                log::warn!(
                    "cannot remove the pid file {}: {error}",
                    self.path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_is_written_whole_and_removed_only_while_ours() {
        let dir = std::env::temp_dir().join(format!("wharf-pidfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wharf.pid");
        let pidfile = Pidfile::create(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(pidfile);
        assert!(!path.exists(), "removed on exit");

        let pidfile = Pidfile::create(&path).unwrap();
        fs::write(&path, "12345\n").unwrap(); // another server took the path since
        drop(pidfile);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "12345\n",
            "not ours: kept"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
