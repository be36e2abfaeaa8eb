#!/usr/bin/env bash
# Benchmark (not a test): cellar beside rustic on one large real stream, and every read path
# checked against the tree the stream was made from.
#
#   benches/scale.sh [TREE] [WORKDIR]     TREE defaults to /usr, WORKDIR to /var/tmp/cellar-scale
#
# TREE is tarred once (GNU tar, `--directory=/ TREE`) into WORKDIR/stream.tar; the series of
# compare.sh is 116 to 145 MiB, this is as large as TREE is (/usr here: 5 GiB, 134,000 entries).
# Then, each tool into its own fresh repository:
#   ingest cold, and the same stream again (an unchanged machine frozen again)
#   rustic: `backup --force -`, as in compare.sh (skipped when rustic is not installed)
# and, for cellar:
#   export, compared byte for byte with the stream (`cmp`)
#   restore into WORKDIR/restored, compared with TREE (`diff -r`, and `find -printf` of type,
#     mode, owner, size, whole-second mtime and link target, directory sizes left out: tar
#     keeps neither sub-second times here nor directory sizes)
#   mount, `find` and a full read (`tar -c`), then `diff -r` against TREE (and the metadata as
#     for restore), then the mount's RSS: it holds what the kernel still caches of the tree
#     (FUSE inodes), plus its caches of frames and directory records
# Printed: wall, CPU (user + system) and peak RSS (GNU time %M) of each step, store sizes.
# Needs root (FUSE), GNU time and fuse3.
set -euo pipefail
tree=${1:-/usr}
work=${2:-/var/tmp/cellar-scale}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
work=$(cd "$work" && pwd)
mnt=$work/mnt
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
cleanup() { umount -l "$mnt" 2>/dev/null || true; }
trap cleanup EXIT

log "building cellar (release)"
(cd "$here" && cargo build --release -q)
cellar=${CARGO_TARGET_DIR:-$here/target}/release/cellar
rustic=$(command -v rustic || true)
if [[ -z $rustic && -x $HOME/.cargo/bin/rustic ]]; then rustic=$HOME/.cargo/bin/rustic; fi

stream=$work/stream.tar
rel=${tree#/}
log "tar of $tree"
tar --create --file="$stream" --directory=/ "$rel"
bytes=$(stat -c %s "$stream")

export CELLAR_STORE=$work/cellar RUSTIC_PASSWORD=cellar-bench XDG_CACHE_HOME=$work/cache
rm -rf "$work/cellar" "$work/rustic" "$work/cache" "$work/restored"
mkdir -p "$mnt"

# timed LABEL CMD...: one row, wall / CPU seconds / peak RSS MiB. The command's output goes to
# WORKDIR/step.log, shown if it fails.
timed() {
    local label=$1
    shift
    sync
    /usr/bin/time -f '%e %U %S %M' -o "$work/time.out" "$@" >"$work/step.log" 2>&1 ||
        { cat "$work/step.log" >&2; echo "$label failed" >&2; exit 1; }
    read -r e u k m <"$work/time.out"
    printf '%-34s %8.2f s %8.2f s %8d MiB\n' "$label" "$e" "$(awk "BEGIN{print $u + $k}")" $((m / 1024))
}
size() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.1f MiB", s / 1048576}'; }
meta() { (cd "$1" && find . -printf '%y\t%m\t%U\t%G\t%s\t%T@\t%p\t%l\n') |
    awk -F'\t' -v OFS='\t' '{ sub(/\.[0-9]*$/, "", $6); if ($1 == "d") $5 = 0; print }' | sort; }

printf '%s: %d bytes, %d entries\n\n' "$tree" "$bytes" "$(find "$tree" | wc -l)"
printf '%-34s %10s %10s %12s\n' step wall CPU 'peak RSS'
timed "cellar ingest, cold" "$cellar" snapshot --name scale "$stream"
timed "cellar ingest, same stream again" "$cellar" snapshot --name scale "$stream"
if [[ -n $rustic ]]; then
    "$rustic" -r "$work/rustic" init >/dev/null 2>&1
    timed "rustic ingest, cold" "$rustic" -r "$work/rustic" backup --force --stdin-filename root.tar - \
        <"$stream"
    timed "rustic ingest, same stream again" "$rustic" -r "$work/rustic" backup --force \
        --stdin-filename root.tar - <"$stream"
fi
timed "cellar export (cmp with the stream)" bash -c '"$0" export scale | cmp - "$1"' "$cellar" "$stream"
timed "cellar restore" "$cellar" restore scale "$work/restored"
"$cellar" mount --daemon "$mnt" scale >/dev/null 2>&1
timed "find through the mount" find "$mnt" -printf ''
timed "full read through the mount (tar -c)" bash -c 'tar -cf - -C "$0" . | cat >/dev/null' "$mnt"
diff -r --no-dereference "$tree" "$mnt/$rel" >/dev/null || { echo "mount: contents differ from $tree" >&2; exit 1; }
mount_rss=$(ps -o rss= -C cellar | sort -n | tail -1)
mount_meta=$(meta "$mnt/$rel")
umount "$mnt"

echo
echo "store after two snapshots: cellar $(size "$work/cellar")${rustic:+, rustic $(size "$work/rustic")}"
echo "mount RSS after the full read: $((mount_rss / 1024)) MiB"
echo "export: the stream, byte for byte"
tree_meta=$(meta "$tree")
[[ $mount_meta == "$tree_meta" ]] && echo "mount: the same metadata and contents as $tree" ||
    { echo "mount: metadata differs from $tree" >&2; exit 1; }
[[ $(meta "$work/restored/$rel") == "$tree_meta" ]] && echo "restore: the same metadata as $tree" ||
    { echo "restore: metadata differs from $tree" >&2; exit 1; }
diff -r --no-dereference "$tree" "$work/restored/$rel" >/dev/null && echo "restore: the same contents" ||
    { echo "restore: contents differ from $tree" >&2; exit 1; }
