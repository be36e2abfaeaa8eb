#!/usr/bin/env bash
# Benchmark (not a test): mount time, first `ls`, `find` over the whole tree and a full
# `tar -c` read through `cellar mount`, beside `borg mount` of the same tree.
#
#   benches/mount.sh [TREE]        TREE defaults to /usr (a root-filesystem-sized tree)
#
# Installs borgbackup and fuse3 with apt-get when missing. Prints one line per step with the
# seconds each tool took and the ratio borg/cellar (higher is better for cellar).
set -euo pipefail
tree=${1:-/usr}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/cellar-mount-bench.XXXXXX)
cellar_mnt=$work/cellar-mnt borg_mnt=$work/borg-mnt
mkdir -p "$cellar_mnt" "$borg_mnt"
cleanup() {
    umount -l "$cellar_mnt" 2>/dev/null || true
    umount -l "$borg_mnt" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

need=()
command -v borg >/dev/null || need+=(borgbackup)
command -v fusermount3 >/dev/null || need+=(fuse3)
if ((${#need[@]})); then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
(cd "$here" && cargo build --release -q)
cellar=$here/target/release/cellar
export CELLAR_STORE=$work/store BORG_REPO=$work/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes

echo "ingesting $tree into cellar and borg..." >&2
tar --create --file=- --directory="$tree" . 2>/dev/null | "$cellar" snapshot --name bench - >/dev/null
borg init -e none >/dev/null 2>&1
(cd "$tree" && borg create --compression zstd,3 ::bench . >/dev/null 2>&1)

secs() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; awk "BEGIN{print $(date +%s.%N) - $s}"; }
row() { printf '%-22s %10.3f %10.3f %8.1fx\n' "$1" "$2" "$3" "$(awk "BEGIN{print $3 / ($2 + 1e-9)}")"; }
# GNU tar skips reading file data when its archive is /dev/null, so pipe it.
read_all() { tar -cf - -C "$1" . | cat >/dev/null; }

printf '%-22s %10s %10s %9s\n' step cellar borg ratio
c_mount=$(secs "$cellar" mount --daemon "$cellar_mnt" bench)
b_mount=$(secs borg mount ::bench "$borg_mnt")
row "mount" "$c_mount" "$b_mount"
row "first ls" "$(secs ls "$cellar_mnt")" "$(secs ls "$borg_mnt")"
row "find (all entries)" "$(secs find "$cellar_mnt")" "$(secs find "$borg_mnt")"
row "tar -c (full read)" "$(secs read_all "$cellar_mnt")" "$(secs read_all "$borg_mnt")"
