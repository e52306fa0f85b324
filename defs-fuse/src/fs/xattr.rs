//! Extended attributes on the core: stored as opaque bytes in the metadata DB, except a minimal
//! access ACL (applied to the mode bits, as ext4 and XFS do) and the read-only virtual
//! [`STATE_XATTR`] that tells a file's upload state.

use super::*;

/// The POSIX access ACL's extended attribute.
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";

/// The permission bits (0o777) an access ACL in the kernel's xattr form (version 2, then
/// 8-byte entries: tag u16, perm u16, id u32, little-endian) gives the mode, as the kernel's
/// `posix_acl_update_mode` computes them for a local filesystem: the owner entry, the mask
/// entry (the group entry when there is no mask), the other entry. The bool says whether the
/// ACL is equivalent to that mode (exactly the owner, group and other entries). `None` for a
/// value that is not such an ACL (it is stored as it is and changes no mode).
fn acl_mode(value: &[u8]) -> Option<(u16, bool)> {
    const VERSION: u32 = 2;
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    let (version, entries) = value.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != VERSION || entries.len() % 8 != 0 {
        return None;
    }
    let (mut user, mut group, mut mask, mut other) = (None, None, None, None);
    for entry in entries.chunks_exact(8) {
        let perm = u16::from_le_bytes([entry[2], entry[3]]);
        if perm > 7 {
            return None;
        }
        let slot = match u16::from_le_bytes([entry[0], entry[1]]) {
            USER_OBJ => &mut user,
            GROUP_OBJ => &mut group,
            MASK => &mut mask,
            OTHER => &mut other,
            USER | GROUP => continue,
            _ => return None,
        };
        if slot.replace(perm).is_some() {
            return None;
        }
    }
    let mode = user? << 6 | mask.or(group)? << 3 | other?;
    Some((mode, entries.len() == 3 * 8))
}

impl Fs {
    /// Sets an extended attribute. `flags` are setxattr(2)'s (XATTR_CREATE, XATTR_REPLACE).
    /// Any name is stored as opaque bytes, `system.posix_acl_*` included. An access ACL set
    /// without flags also sets the mode's permission bits, like ext4 and XFS (owner entry,
    /// mask or else group entry, other entry: `rsync -A` relies on it for the mode), and one
    /// that says no more than the mode (owner, group and other entries only) is not stored
    /// (`cp -a` sets one on every file it copies). Like a chmod, that needs the file's owner or
    /// root (`caller`), and clears the setgid bit when the caller is not in the file's group
    /// (its primary group: FUSE does not pass the supplementary ones).
    ///
    /// # Errors
    /// NotFound, AlreadyExists (CREATE), NoXattr (REPLACE), XattrTooLarge, ReadOnly.
    ///
    /// # Cancel safety
    /// Safe: one DB transaction.
    pub async fn setxattr(
        &self,
        ino: InodeNo,
        name: &[u8],
        value: &[u8],
        flags: i32,
        caller: Owner,
    ) -> Result<()> {
        self.check_writable()?;
        Self::check_live(ino)?;
        self.refuse_state_xattr(name)?;
        if name == ACL_ACCESS
            && flags == 0
            && let Some((bits, minimal)) = acl_mode(value)
        {
            self.set_mode_from_acl(ino, bits, caller, minimal).await?;
            if minimal {
                return Ok(());
            }
        }
        let mode = match flags {
            0 => XattrMode::Any,
            libc::XATTR_CREATE => XattrMode::Create,
            libc::XATTR_REPLACE => XattrMode::Replace,
            _ => {
                return Err(Error::Invalid {
                    what: "setxattr flags",
                });
            }
        };
        self.inner
            .db
            .set_xattr(ino, name, value, mode, Timestamp::now())?;
        Ok(())
    }

    /// An access ACL's mode applied: the permission bits become `bits` (setuid and sticky
    /// stay; setgid too unless `caller` is outside the file's group) and, for a `minimal` ACL,
    /// an access ACL stored before is removed, as `posix_acl_update_mode` does for a local
    /// filesystem. Only the owner or root may (EPERM): kernels before 6.2 leave that check to
    /// the filesystem.
    async fn set_mode_from_acl(
        &self,
        ino: InodeNo,
        bits: u16,
        caller: Owner,
        minimal: bool,
    ) -> Result<()> {
        let attr = self.getattr(ino).await?;
        let root = caller.uid == 0;
        if !root && caller.uid != attr.uid {
            return Err(defs_core::Error::NotPermitted {
                what: "setting an ACL on a file of another user".into(),
            }
            .into());
        }
        let mut perm = attr.perm & !0o777 | bits;
        if !root && caller.gid != attr.gid {
            perm &= !0o2000;
        }
        if minimal {
            // Read first: the remove is a write transaction, and there is rarely anything to
            // remove.
            match self.inner.db.get_xattr(ino, ACL_ACCESS) {
                Ok(_) => self
                    .inner
                    .db
                    .remove_xattr(ino, ACL_ACCESS, Timestamp::now())?,
                Err(defs_core::Error::NoXattr { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let set = SetAttr {
            perm: Some(perm),
            ..Default::default()
        };
        self.setattr(ino, None, set).await.map(drop)
    }

    /// An extended attribute's value.
    ///
    /// # Errors
    /// NotFound, NoXattr (ENODATA).
    ///
    /// # Cancel safety
    /// Safe (read only).
    pub async fn getxattr(&self, ino: InodeNo, name: &[u8]) -> Result<Vec<u8>> {
        if snapshots::is_version(ino) {
            return self.snapshots(ino)?.get_xattr(ino, name).await;
        }
        if name == STATE_XATTR {
            return Ok(self.state_xattr(ino).await?.into_bytes());
        }
        if let Some(value) = self.status_xattr(ino, name).await? {
            return Ok(value);
        }
        Ok(self.inner.db.get_xattr(ino, name)?)
    }

    /// The upload state of `ino`, as [`STATE_XATTR`] shows it.
    ///
    /// # Errors
    /// NotFound; the journal could not be read.
    pub fn upload_state(&self, ino: InodeNo) -> Result<String> {
        let record = self.inner.db.dirty_record(ino)?;
        Ok(match record {
            None => "clean".into(),
            Some(r) if r.uploading.is_some() => "uploading".into(),
            Some(r) => match (&r.last_error, self.inner.flusher.has_uploader()) {
                (Some(e), _) => format!("dirty ({} failed uploads, last: {e})", r.failures),
                (None, false) => "dirty (no network configured: kept in the local cache)".into(),
                (None, true) => "dirty".into(),
            },
        })
    }

    fn refuse_state_xattr(&self, name: &[u8]) -> Result<()> {
        if Self::is_status_xattr(name) {
            return Err(defs_core::Error::NotPermitted {
                what: format!("{} is read-only", String::from_utf8_lossy(name)),
            }
            .into());
        }
        Ok(())
    }

    /// The names of the extended attributes, each followed by a NUL (listxattr(2)'s format).
    ///
    /// # Errors
    /// NotFound.
    ///
    /// # Cancel safety
    /// Safe (read only).
    pub async fn listxattr(&self, ino: InodeNo) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let names = if snapshots::is_version(ino) {
            self.snapshots(ino)?.list_xattr(ino).await?
        } else {
            self.inner.db.list_xattr(ino)?
        };
        for name in names {
            out.extend_from_slice(&name);
            out.push(0);
        }
        Ok(out)
    }

    /// Removes an extended attribute.
    ///
    /// # Errors
    /// NotFound, NoXattr (ENODATA), ReadOnly.
    ///
    /// # Cancel safety
    /// Safe: one DB transaction.
    pub async fn removexattr(&self, ino: InodeNo, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        Self::check_live(ino)?;
        self.refuse_state_xattr(name)?;
        self.inner.db.remove_xattr(ino, name, Timestamp::now())?;
        Ok(())
    }
}
