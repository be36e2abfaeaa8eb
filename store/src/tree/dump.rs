//! `export --path`: one entry of a snapshot's tree, a directory with everything below it, as
//! a tar made from the tree (restic's `dump`).

use std::collections::HashMap;
use std::io::Write;

use super::node::Kind;
use super::vfs::Tree;
use crate::error::Result;
use crate::oci::{Digest, Hashing};
use crate::tar::MemberWriter;

impl Tree<'_> {
    /// The entry at `path` and, for a directory, everything below it (depth first in name
    /// order), as a tar in the `--dir` dialect. Members are named from the snapshot's root
    /// (`./etc/apt/`), as `tar -C ROOT -cf - ./etc/apt` names them, so an extraction puts
    /// them where they were. The first name of a hard-link group (of files or of symlinks) in
    /// the dump is its file, the others links to it, wherever the group's other names are.
    /// Returns the tar's length and sha256.
    pub fn dump(&self, path: &[u8], out: &mut dyn Write) -> Result<(u64, Digest)> {
        let top = self.resolve(path)?;
        let rel = super::normalize_path(path);
        let rel = rel.strip_prefix(b"/").unwrap_or(&rel);
        let mut hashed = Hashing::new(out);
        {
            let mut tar = MemberWriter::new(&mut hashed);
            let mut first: HashMap<u64, Vec<u8>> = HashMap::new();
            let mut member = |p: &[u8], n: &super::Node| -> Result<bool> {
                // Hard links as the `--dir` dialect has them: of files and symlinks.
                if matches!(n.kind, Kind::File | Kind::Symlink) && n.ino != 0 {
                    if let Some(target) = first.get(&n.ino) {
                        tar.hardlink(p, n, target)?;
                        return Ok(true);
                    }
                    first.insert(n.ino, p.to_vec());
                }
                tar.node(p, n, &mut |o| self.write_data(n, o))?;
                Ok(true)
            };
            member(rel, &top)?;
            if top.is_dir() {
                self.walk(&top, rel, &mut member)?;
            }
            tar.finish()?;
        }
        let (_, digest, len) = hashed.finish();
        Ok((len, digest))
    }
}
