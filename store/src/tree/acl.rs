//! POSIX ACLs written as text (`SCHILY.acl.access`, `SCHILY.acl.default`: what bsdtar writes by
//! default and GNU tar with `--acls`), kept as the extended attributes Linux holds them in
//! (`system.posix_acl_access`, `system.posix_acl_default`), so that a restore sets them, the
//! mount shows them and a synthesized layer carries them like any other xattr.
//!
//! The text is star's: entries `TAG:QUALIFIER:PERMS[:ID]` separated by `,` or newlines, TAG one
//! of `user`, `group`, `mask`, `other` (or their first letters), PERMS `r`, `w`, `x` and `-`,
//! and a `#` comment to the end of the entry (GNU tar's `#effective:` notes). A named entry
//! needs a number: the qualifier itself, or the ID libarchive appends. A name alone would need
//! the archived machine's user database, which is not here: such an ACL is left out whole
//! rather than set with entries missing.

/// The xattr value (Linux's `posix_acl_xattr` layout: version 2, then (tag, perm, id) entries
/// in tag-then-id order) for an ACL's text, or None when the text is not a valid ACL.
pub(super) fn acl_xattr(text: &[u8]) -> Option<Vec<u8>> {
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const UNDEFINED_ID: u32 = u32::MAX;

    let text = std::str::from_utf8(text).ok()?;
    let mut entries = Vec::new();
    for entry in text.split([',', '\n']) {
        let entry = entry.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let fields: Vec<&str> = entry.split(':').collect();
        let (tag, qualifier, perms, id) = match fields[..] {
            [tag, qualifier, perms] => (tag, qualifier, perms, None),
            [tag, qualifier, perms, id] => (tag, qualifier, perms, Some(id)),
            // `mask:rwx` and `other:r--`, without the empty qualifier.
            [tag, perms] => (tag, "", perms, None),
            _ => return None,
        };
        let named = !qualifier.is_empty();
        let tag = match (tag, named) {
            ("user" | "u", false) => USER_OBJ,
            ("user" | "u", true) => USER,
            ("group" | "g", false) => GROUP_OBJ,
            ("group" | "g", true) => GROUP,
            ("mask" | "m", false) => MASK,
            ("other" | "o", false) => OTHER,
            _ => return None,
        };
        let id = match named {
            false => UNDEFINED_ID,
            true => qualifier
                .parse::<u32>()
                .ok()
                .or_else(|| id?.parse().ok())
                .filter(|&id| id != UNDEFINED_ID)?,
        };
        let mut perm = 0u16;
        for c in perms.chars() {
            perm |= match c {
                'r' => 4,
                'w' => 2,
                'x' => 1,
                '-' => 0,
                _ => return None,
            };
        }
        entries.push((tag, id, perm));
    }
    entries.sort_unstable();
    entries.dedup_by_key(|e| (e.0, e.1));
    let has = |tag| entries.iter().any(|e| e.0 == tag);
    // What the kernel takes as valid: the three base entries, and a mask once any entry is
    // named.
    let named = has(USER) || has(GROUP);
    if !has(USER_OBJ) || !has(GROUP_OBJ) || !has(OTHER) || (named && !has(MASK)) {
        return None;
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, id, perm) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

/// What setting an access ACL (in the kernel's layout, as `acl_xattr` makes it) leaves of a
/// file's permission bits, as Linux sets them (`posix_acl_update_mode`): the owner's are the
/// `user::` entry's, the others' the `other::` entry's, the group's the mask's, or `group::`'s
/// where there is no mask. And whether the ACL is only those three entries, which the mode
/// says whole: the kernel then keeps no ACL (and GNU tar's extraction leaves no xattr).
pub(super) fn acl_mode(value: &[u8]) -> (u32, bool) {
    let (mut user, mut group, mut mask, mut other) = (0, 0, None, 0);
    let mut minimal = true;
    for e in value.get(4..).unwrap_or_default().chunks_exact(8) {
        let perm = u32::from(u16::from_le_bytes([e[2], e[3]]) & 7);
        match u16::from_le_bytes([e[0], e[1]]) {
            0x01 => user = perm,
            0x04 => group = perm,
            0x10 => mask = Some(perm),
            0x20 => other = perm,
            _ => {}
        }
        minimal &= matches!(u16::from_le_bytes([e[0], e[1]]), 0x01 | 0x04 | 0x20);
    }
    (user << 6 | mask.unwrap_or(group) << 3 | other, minimal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(value: &[u8]) -> Vec<(u16, u16, u32)> {
        assert_eq!(value[..4], 2u32.to_le_bytes());
        value[4..]
            .chunks(8)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                )
            })
            .collect()
    }

    #[test]
    fn star_text_becomes_the_kernels_layout() {
        let any = u32::MAX;
        // bsdtar's form: names with their ids, in its own order.
        let v = acl_xattr(b"user::rw-,group::r--,other::r--,user:bob:rwx:1234,mask::rwx").unwrap();
        assert_eq!(
            entries(&v),
            [
                (0x01, 6, any),
                (0x02, 7, 1234),
                (0x04, 4, any),
                (0x10, 7, any),
                (0x20, 4, any)
            ]
        );
        // GNU tar's: numbers as qualifiers, newlines, `#effective` notes, short tags.
        let gnu = acl_xattr(b"u::rwx\ng:1000:r-x\t#effective:r--\ng::r-x\nm::r--\no::---\n");
        assert_eq!(
            entries(&gnu.unwrap()),
            [
                (0x01, 7, any),
                (0x04, 5, any),
                (0x08, 5, 1000),
                (0x10, 4, any),
                (0x20, 0, any)
            ]
        );
        let base = acl_xattr(b"user::rw-,group::r--,other::r--").unwrap();
        assert_eq!(acl_mode(&base), (0o644, true));
        assert_eq!(
            acl_mode(&v),
            (0o674, false),
            "the group's bits are the mask's"
        );
        let open = acl_xattr(b"u::rwx,g::rwx,o::rwx").unwrap();
        assert_eq!(acl_mode(&open), (0o777, true));
    }

    #[test]
    fn what_cannot_be_set_whole_is_refused() {
        for bad in [
            &b"user::rw-,group::r--"[..],                              // no other
            b"user::rw-,group::r--,other::r--,user:1000:rwx",          // no mask
            b"user::rw-,group::r--,other::r--,user:bob:rwx,mask::rwx", // a name alone
            b"user::rw-,group::r--,other::r--,mask:x:rwx",             // a named mask
            b"user::rwz,group::r--,other::r--",                        // a bad perm
            b"user::rw-,group::r--,other::r--,user:4294967295:r--,mask::r", // no such id
            b"\xff",
        ] {
            assert_eq!(acl_xattr(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
