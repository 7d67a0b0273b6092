//! What a caller sees of a name's attributes, computed in one place from
//! three sources: what is held in memory for the inode ([`Overrides`]),
//! the entry of the name in its directory's metadata ([`MetaEntry`],
//! `fs/meta.rs`), and what the store says of the object ([`Stat`]), with
//! the mount's defaults last.
//!
//! Precedence, per attribute (the first source that has it wins):
//!
//! | attribute | 1. memory | 2. entry | 3. store / default |
//! |---|---|---|---|
//! | size | the buffer of a file written here | a link's target length | the object's size |
//! | mtime | `Overrides::mtime` | `mtime_ns` | the object's LastModified |
//! | atime | `Overrides::atime` | `atime_ns` | the mtime shown |
//! | ctime | the latest of the memory's, the entry's and the object's time | | |
//! | perm, uid, gid | `Overrides` | `mode`, `uid`, `gid` | `--file-mode`/`--dir-mode`, the mount's ids |
//! | nlink | 2 for a directory, 0 once unlinked, else 1 | | |
//! | rdev | | `rdev` | 0 |
//!
//! What memory holds, and when it lets go ([`Overrides`]' methods):
//! - attributes of a name nothing stores (the mount's root, a file
//!   unlinked while open) live there while the kernel holds the inode;
//! - a time set on a file being written stays there until the upload,
//!   whose ETag the entry then names with that time; a write clears it
//!   (POSIX: a write makes the file's time now);
//! - a directory's times when names in it change (persisting them would
//!   cost a metadata write per change of a name);
//! - ctime, at every change.
//!
//! An entry applies only to the object it was written for ([`described`]):
//! a file replaced by another client loses its entry's attributes.

use std::time::SystemTime;

use super::inode::{Ino, Kind, Stat};
use super::meta::{MetaEntry, Table};

/// Attributes of an inode, as the kernel will see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// 0 once a file's name was removed while it is open.
    pub nlink: u32,
    /// Device number of a character or block device.
    pub rdev: u32,
}

/// What setattr(2)-like calls change; `None` leaves it as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

impl SetAttr {
    /// Whether it changes anything the metadata holds.
    pub fn changes_meta(&self) -> bool {
        self.perm.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.atime.is_some()
            || self.mtime.is_some()
    }
}

/// The mount's defaults: what a name shows that nothing says otherwise of.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
}

impl Defaults {
    pub fn perm(&self, kind: Kind) -> u16 {
        match kind {
            Kind::Dir => self.dir_mode,
            Kind::Symlink => 0o777,
            _ => self.file_mode,
        }
    }
}

/// Attributes held in memory for an inode's life (see the module's notes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
    pub ctime: Option<SystemTime>,
}

impl Overrides {
    /// The file was written: its time is now again, whatever was set.
    pub fn written(&mut self) {
        self.mtime = None;
    }

    /// The file's content reached the bucket (or had nothing to upload):
    /// a time set since its last write goes to the entry, and is returned.
    pub fn saved(&mut self) -> Option<SystemTime> {
        self.mtime.take()
    }

    /// Names in this directory were added or removed at `now`.
    pub fn entries_changed(&mut self, now: SystemTime) {
        self.mtime = Some(now);
        self.ctime = Some(now);
    }

    /// The inode changed (renamed, truncated, its attributes set) at `now`.
    pub fn changed(&mut self, now: SystemTime) {
        self.ctime = Some(now);
    }

    /// `set` applied at `now`. `homeless`: no entry can hold attributes
    /// (the mount's root, an unlinked file); `mtime_here`: a time set is
    /// shown from memory (a file being written, until its upload; a
    /// directory, whose entry changes would otherwise date it).
    pub fn set(&mut self, set: &SetAttr, homeless: bool, mtime_here: bool, now: SystemTime) {
        if homeless {
            self.perm = set.perm.or(self.perm);
            self.uid = set.uid.or(self.uid);
            self.gid = set.gid.or(self.gid);
            self.atime = set.atime.or(self.atime);
        }
        if set.mtime.is_some() {
            // Otherwise the entry alone holds it (an older override would
            // hide it).
            self.mtime = if homeless || mtime_here {
                set.mtime
            } else {
                None
            };
        }
        if set.changes_meta() || set.size.is_some() {
            self.changed(now);
        }
    }
}

/// What an inode's attributes are computed from.
pub struct Sources<'a> {
    pub stat: &'a Stat,
    /// The entry that applies to it ([`described`]), if any.
    pub meta: Option<&'a MetaEntry>,
    pub overrides: &'a Overrides,
    pub unlinked: bool,
    /// The size of its buffer, when the file is being written here.
    pub written_size: Option<u64>,
}

/// The attributes of inode `ino` of `kind`, by the precedence above.
pub fn shown(ino: Ino, kind: Kind, src: &Sources<'_>, d: &Defaults) -> Attr {
    let size = match (kind, src.meta.and_then(|m| m.target.as_ref())) {
        (Kind::Symlink, Some(target)) => target.len() as u64,
        _ => src.written_size.unwrap_or(src.stat.size),
    };
    let m = src.meta.cloned().unwrap_or_default();
    let ov = src.overrides;
    let mtime = ov.mtime.or(m.mtime()).unwrap_or(src.stat.mtime);
    // Every change to the object or its attributes, whichever came last
    // (an upload after a chmod, or a chmod after it).
    let ctime = [ov.ctime, m.ctime()]
        .into_iter()
        .flatten()
        .fold(src.stat.mtime, SystemTime::max);
    Attr {
        ino,
        kind,
        size,
        atime: ov.atime.or(m.atime()).unwrap_or(mtime),
        mtime,
        ctime,
        perm: ov.perm.or(m.mode).unwrap_or(d.perm(kind)),
        uid: ov.uid.or(m.uid).unwrap_or(d.uid),
        gid: ov.gid.or(m.gid).unwrap_or(d.gid),
        nlink: match kind {
            Kind::Dir => 2,
            _ if src.unlinked => 0,
            _ => 1,
        },
        rdev: m.rdev.unwrap_or(0),
    }
}

/// A directory with nothing but defaults (`.`, `..`, a bucket).
pub fn plain_dir(ino: Ino, stat: &Stat, d: &Defaults) -> Attr {
    let none = Overrides::default();
    let src = Sources {
        stat,
        meta: None,
        overrides: &none,
        unlinked: false,
        written_size: None,
    };
    shown(ino, Kind::Dir, &src, d)
}

/// An entry of history: read-only (no write bits), the version's time.
pub fn history(ino: Ino, kind: Kind, stat: &Stat, d: &Defaults) -> Attr {
    Attr {
        ino,
        kind,
        size: stat.size,
        atime: stat.mtime,
        mtime: stat.mtime,
        ctime: stat.mtime,
        perm: d.perm(kind) & !0o222,
        uid: d.uid,
        gid: d.gid,
        nlink: if kind == Kind::Dir { 2 } else { 1 },
        rdev: 0,
    }
}

/// The entry of `name` in `table` if it describes what the store holds
/// there (`kind`: file or directory; `etag`: the object's; `writing`: the
/// file is being written here, so its entry is this mount's own).
pub fn described<'a>(
    table: &'a Table,
    name: &str,
    kind: Kind,
    etag: Option<&str>,
    writing: bool,
) -> Option<&'a MetaEntry> {
    table.get(name).filter(|m| m.applies(kind, etag, writing))
}

/// What a name shows as, given the entry that applies to it: a directory
/// is one whatever its entry says; an object is what its entry makes it.
pub fn shown_kind(stored: Kind, meta: &MetaEntry) -> Kind {
    if stored == Kind::Dir {
        Kind::Dir
    } else {
        meta.kind.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::meta::EntryType;
    use std::time::Duration;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    const D: Defaults = Defaults {
        uid: 1000,
        gid: 100,
        file_mode: 0o644,
        dir_mode: 0o755,
    };

    fn stat() -> Stat {
        Stat {
            size: 10,
            mtime: at(100),
            etag: Some("\"e\"".to_string()),
        }
    }

    fn attr(meta: Option<&MetaEntry>, ov: &Overrides, written: Option<u64>) -> Attr {
        let s = stat();
        let src = Sources {
            stat: &s,
            meta,
            overrides: ov,
            unlinked: false,
            written_size: written,
        };
        shown(7, Kind::File, &src, &D)
    }

    #[test]
    fn the_store_and_the_defaults_come_last() {
        let a = attr(None, &Overrides::default(), None);
        assert_eq!(
            (a.size, a.mtime, a.atime, a.ctime),
            (10, at(100), at(100), at(100))
        );
        assert_eq!(
            (a.perm, a.uid, a.gid, a.nlink, a.rdev),
            (0o644, 1000, 100, 1, 0)
        );
        assert_eq!(D.perm(Kind::Dir), 0o755);
        assert_eq!(D.perm(Kind::Symlink), 0o777);
    }

    #[test]
    fn the_entry_wins_over_the_store_and_memory_over_the_entry() {
        let entry = MetaEntry {
            mode: Some(0o600),
            uid: Some(5),
            mtime_ns: Some(meta_ns(200)),
            atime_ns: Some(meta_ns(150)),
            ..Default::default()
        };
        let a = attr(Some(&entry), &Overrides::default(), None);
        assert_eq!((a.perm, a.uid, a.gid), (0o600, 5, 100));
        assert_eq!((a.mtime, a.atime), (at(200), at(150)));
        let ov = Overrides {
            perm: Some(0o400),
            mtime: Some(at(300)),
            ..Default::default()
        };
        let a = attr(Some(&entry), &ov, None);
        assert_eq!(
            (a.perm, a.uid, a.mtime, a.atime),
            (0o400, 5, at(300), at(150))
        );
    }

    fn meta_ns(s: u64) -> i64 {
        crate::fs::meta::to_ns(at(s))
    }

    #[test]
    fn ctime_is_the_latest_change_of_any_source() {
        let entry = MetaEntry {
            ctime_ns: Some(meta_ns(50)),
            ..Default::default()
        };
        assert_eq!(
            attr(Some(&entry), &Overrides::default(), None).ctime,
            at(100)
        );
        let entry = MetaEntry {
            ctime_ns: Some(meta_ns(400)),
            ..Default::default()
        };
        let ov = Overrides {
            ctime: Some(at(300)),
            ..Default::default()
        };
        assert_eq!(attr(Some(&entry), &ov, None).ctime, at(400));
    }

    #[test]
    fn size_is_the_buffers_then_a_links_target_then_the_objects() {
        assert_eq!(attr(None, &Overrides::default(), Some(99)).size, 99);
        let link = MetaEntry {
            kind: EntryType::of(Kind::Symlink),
            target: Some("abc".to_string()),
            ..Default::default()
        };
        let s = stat();
        let src = Sources {
            stat: &s,
            meta: Some(&link),
            overrides: &Overrides::default(),
            unlinked: true,
            written_size: Some(99),
        };
        let a = shown(7, Kind::Symlink, &src, &D);
        assert_eq!((a.size, a.nlink), (3, 0));
        assert_eq!(plain_dir(1, &s, &D).nlink, 2);
    }

    #[test]
    fn history_has_no_write_bits() {
        let a = history(3, Kind::File, &stat(), &D);
        assert_eq!(a.perm, 0o444);
        assert_eq!(history(3, Kind::Dir, &stat(), &D).perm, 0o555);
    }

    #[test]
    fn memory_holds_what_nothing_else_can_and_lets_go_at_the_upload() {
        let now = at(500);
        let set = SetAttr {
            perm: Some(0o700),
            mtime: Some(at(10)),
            ..Default::default()
        };
        // A name with an entry, not being written: the entry holds it all.
        let mut ov = Overrides::default();
        ov.set(&set, false, false, now);
        assert_eq!((ov.perm, ov.mtime, ov.ctime), (None, None, Some(now)));
        // Being written: the time waits in memory for the upload.
        let mut ov = Overrides::default();
        ov.set(&set, false, true, now);
        assert_eq!(ov.mtime, Some(at(10)));
        assert_eq!(ov.saved(), Some(at(10)));
        assert_eq!(ov.mtime, None);
        // A write after it makes the time now again.
        ov.set(&set, false, true, now);
        ov.written();
        assert_eq!(ov.saved(), None);
        // Homeless (root, unlinked): memory holds everything.
        let mut ov = Overrides::default();
        ov.set(&set, true, false, now);
        assert_eq!((ov.perm, ov.mtime), (Some(0o700), Some(at(10))));
        let mut dir = Overrides::default();
        dir.entries_changed(now);
        assert_eq!((dir.mtime, dir.ctime), (Some(now), Some(now)));
    }
}
