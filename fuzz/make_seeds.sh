#!/bin/bash
# Small tar seeds for the ingest_tar fuzz target, from GNU tar, bsdtar and busybox tar, in every
# format and sparse layout they write, plus gzip and zstd wrappers. Usage: make_seeds.sh OUTDIR
set -u
out=${1:?outdir}
mkdir -p "$out"; out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mk_tree() {  # a tiny tree with every kind of member
  local t=$1
  mkdir -p "$t/d/sub"
  printf 'hello\n' > "$t/d/a.txt"
  : > "$t/empty"
  head -c 3000 /dev/urandom > "$t/d/sub/bin"   # not aligned to 512
  printf 'x%.0s' $(seq 1 1024) > "$t/exact1k"     # exactly two blocks
  ln -s d/a.txt "$t/link"
  ln -s "$(printf 'L%.0s' $(seq 1 150))" "$t/longlink"   # symlink target > 100 chars
  ln "$t/d/a.txt" "$t/hard"
  local long; long=$(printf 'n%.0s' $(seq 1 120))
  printf 'long\n' > "$t/d/$long"
  mkdir -p "$t/$(printf 'p%.0s' $(seq 1 60))/$(printf 'q%.0s' $(seq 1 60))"
  printf 'deep\n' > "$t/$(printf 'p%.0s' $(seq 1 60))/$(printf 'q%.0s' $(seq 1 60))/f"
  printf 'utf8\n' > "$t/d/héllo wörld ☃.txt"
  mkfifo "$t/fifo"
  touch -d '2001-02-03 04:05:06.789' "$t/d/a.txt"
  setfattr -n user.k -v v "$t/empty" 2>/dev/null || true
}
mk_tree "$work/t"
# a sparse file, for GNU/pax sparse formats
mkdir -p "$work/sp"
truncate -s 1M "$work/sp/s"
printf 'data' | dd of="$work/sp/s" bs=1 seek=200000 conv=notrunc 2>/dev/null
printf 'tail' | dd of="$work/sp/s" bs=1 seek=900000 conv=notrunc 2>/dev/null
printf 'one\n' > "$work/single"

cd "$work/t"
for fmt in gnu oldgnu ustar pax v7 posix; do
  tar --format=$fmt -b1 -cf "$out/gnutar-$fmt.tar" . 2>/dev/null || rm -f "$out/gnutar-$fmt.tar"
done
tar --format=pax -b1 --xattrs -cf "$out/gnutar-pax-xattrs.tar" . 2>/dev/null
tar --format=pax -b1 --pax-option=exthdr.name=%d/PaxHeaders/%f,atime:=0 -cf "$out/gnutar-pax-opts.tar" .
tar --format=pax -b1 --pax-option=globexthdr.name=g,comment=hi,uname=someone -cf "$out/gnutar-pax-global.tar" d
tar --format=gnu -b1 -cf "$out/gnutar-gnu-b1.tar" d/a.txt empty link hard
for fmt in ustar pax gnutar; do
  bsdtar --format=$fmt -b 1 -cf "$out/bsdtar-$fmt.tar" . 2>/dev/null || rm -f "$out/bsdtar-$fmt.tar"
done
bsdtar --format=pax -b1 --xattrs -cf "$out/bsdtar-pax-xattrs.tar" . 2>/dev/null
busybox tar -cf "$out/busybox.tar" . 2>/dev/null
cd "$work/sp"
for fmt in gnu pax; do tar --format=$fmt -b1 -S -cf "$out/sparse-$fmt.tar" s; done
tar --format=pax -b1 -S --sparse-version=0.0 -cf "$out/sparse-pax00.tar" s
tar --format=pax -b1 -S --sparse-version=0.1 -cf "$out/sparse-pax01.tar" s
tar --format=pax -b1 -S --sparse-version=1.0 -cf "$out/sparse-pax10.tar" s
bsdtar --format=pax -cf "$out/sparse-bsdtar.tar" s 2>/dev/null
cd "$work/t"
# formats that cannot hold every member of the tree: a subset
for fmt in v7 ustar; do
  tar --format=$fmt -b1 -cf "$out/gnutar-$fmt-subset.tar" d/a.txt empty link hard exact1k d/sub 2>/dev/null
done
cd "$work"
tar --format=ustar -cf "$out/single-ustar.tar" single
tar --format=gnu -cf "$out/single-gnu.tar" single
# an empty archive and a bare trailer
tar -cf "$out/empty.tar" -T /dev/null
head -c 1024 /dev/zero > "$out/trailer-only.tar"
# payloads big enough for several chunks (min 4 KiB) and for cut hints (16 KiB and up)
mkdir -p "$work/big" && cd "$work/big"
head -c 20000 /dev/urandom > r20k
{ head -c 9000 /dev/urandom; head -c 9000 r20k; head -c 9000 /dev/urandom; } > mixed27k
printf 'small\n' > s
tar --format=gnu -b1 -cf "$out/big-gnu.tar" r20k mixed27k s
tar --format=pax -b1 -cf "$out/big-pax.tar" s r20k
cd "$work"
# compressed wrappers (the engine detects gzip and zstd by magic)
gzip -9 -n -c "$out/single-ustar.tar" > "$out/single-ustar.tar.gz"
zstd -q -19 -c "$out/single-gnu.tar" > "$out/single-gnu.tar.zst"
gzip -n -c "$out/gnutar-pax.tar" > "$out/gnutar-pax.tar.gz"
zstd -q -c "$out/bsdtar-ustar.tar" > "$out/bsdtar-ustar.tar.zst"
ls -l "$out" >&2
