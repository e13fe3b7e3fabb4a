//! File permissions, as far as the server checks them.

use std::path::Path;

/// Whether users other than the owner may read the file (its mode has the "other" read
/// bit). False when that cannot be told.
#[cfg(unix)]
pub(crate) fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o004 != 0)
}

/// Whether users other than the owner may read the file: not known here.
#[cfg(not(unix))]
pub(crate) fn readable_by_others(_path: &Path) -> bool {
    false
}
