#!/usr/bin/env bash
# Benchmark (not a test): from a root filesystem's tar stream to an image pulled by a client,
# with cellar (`snapshot`, then `serve` and skopeo pulling from it) beside the conventional
# path (`umoci raw add-layer` into a layout, `skopeo copy` to a registry, skopeo pulling it).
#
#   benches/image.sh [--pulled-parent] [--compression gzip|zstd] [TREE|FILE.tar] [PARENT.tar]
#
# TREE defaults to /usr; a tar file is used as the stream. With PARENT, cellar's store holds
# PARENT's snapshot first (untimed), so the timed snapshot is the incremental one of a machine
# frozen again; the conventional path has no such notion and is timed as before.
#
# --pulled-parent (with PARENT): the client pulled PARENT's image before, on both paths
# (untimed: the conventional path builds, pushes and pulls it as it does the timed one), and
# pulls the new image into the same layout. cellar serves it with `--layers incremental`, so
# the layers the client has are not sent again; the conventional path sends its one new layer.
#
# --compression CODEC: cellar serves the layers compressed (`serve --compression`), as a
# registry across a network would; the pull of a fresh image then waits for the layer to be
# made, and moves a third of the bytes. The conventional path is unchanged (umoci gzips).
#
# Installs skopeo, umoci and docker-registry with apt-get when missing. Prints seconds per
# path and the ratio conventional/cellar (higher is better for cellar). Both pulls land in an
# OCI layout on the same disk, so the pull itself costs both sides the same.
set -euo pipefail
pulled_parent=
compression=none
while [[ ${1:-} == --* ]]; do
    case $1 in
    --pulled-parent) pulled_parent=1 && shift ;;
    --compression) compression=$2 && shift 2 ;;
    *) echo "unknown option $1" >&2 && exit 2 ;;
    esac
done
tree=${1:-/usr}
parent=${2:-}
if [[ -n $pulled_parent && -z $parent ]]; then echo "--pulled-parent needs PARENT" >&2; exit 2; fi
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/cellar-image-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

need=()
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
if ((${#need[@]})); then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
(cd "$here" && cargo build --release -q)
cellar=$here/target/release/cellar
export CELLAR_STORE=$work/store

if [ -f "$tree" ]; then
    ln -s "$(realpath "$tree")" "$work/stream.tar"
else
    echo "writing the stream of $tree..." >&2
    tar --create --file="$work/stream.tar" --directory="$tree" . 2>/dev/null || true
fi
size=$(stat -L -c %s "$work/stream.tar")
# Both paths read the streams from the page cache; the first reader would otherwise also time
# the disk.
cat "$work/stream.tar" ${parent:+"$parent"} >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -sf "http://$1/v2/" >/dev/null 2>&1 && return; sleep 0.1; done; echo "no server at $1" >&2; exit 1; }
now() { date +%s.%N; }
# Layers land as they are served: skopeo would otherwise gzip an uncompressed layer on its way
# into the layout, which times skopeo's compressor, not the path.
pull() { skopeo --insecure-policy copy -q --src-tls-verify=false --dest-oci-accept-uncompressed-layers "docker://$1" "oci:$2:t"; }

# cellar: ingest, then pull from `serve`. The server runs before the clock starts, as the
# registry of the conventional path does; it needs a store, so a fresh one gets an empty
# snapshot under another name first.
port=$(free_port)
if [ -n "$parent" ]; then
    "$cellar" snapshot --name img "$parent" >/dev/null
else
    tar --create --file="$work/empty.tar" --files-from=/dev/null
    "$cellar" snapshot --name empty "$work/empty.tar" >/dev/null
fi
"$cellar" serve --listen "127.0.0.1:$port" --compression "$compression" ${pulled_parent:+--layers incremental} 2>/dev/null &
pids+=($!)
wait_http "127.0.0.1:$port"
if [[ -n $pulled_parent ]]; then pull "127.0.0.1:$port/img:latest" "$work/cellar-pulled:parent"; fi
sync
t0=$(now)
"$cellar" snapshot --name img "$work/stream.tar" >/dev/null
t1=$(now)
pull "127.0.0.1:$port/img:latest" "$work/cellar-pulled:t"
t2=$(now)

# Conventional: a layout with the stream as a layer, pushed to a registry, pulled back.
rport=$(free_port)
mkdir -p "$work/registry"
cat >"$work/registry.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$rport}
YML
/usr/bin/docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
pids+=($!)
wait_http "127.0.0.1:$rport"
conventional_push() { # TAG STREAM
    umoci new --image "$work/layout:$1"
    umoci raw add-layer --image "$work/layout:$1" "$2"
    skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$work/layout:$1" "docker://127.0.0.1:$rport/img:$1"
}
umoci init --layout "$work/layout"
if [[ -n $pulled_parent ]]; then
    conventional_push parent "$parent"
    pull "127.0.0.1:$rport/img:parent" "$work/conventional-pulled:parent"
fi
sync
c0=$(now)
conventional_push t "$work/stream.tar"
c1=$(now)
pull "127.0.0.1:$rport/img:t" "$work/conventional-pulled:t"
c2=$(now)

row() { printf '%-28s %10.2f %12.2f %8.1fx\n' "$1" "$2" "$3" "$(awk "BEGIN{print $3 / ($2 + 1e-9)}")"; }
echo "stream: $tree, $((size >> 20)) MiB${parent:+, the cellar snapshot incremental on $parent}${pulled_parent:+, the client holding its image}, cellar serving $compression layers"
printf '%-28s %10s %12s %9s\n' step cellar conventional ratio
row "stream to registry" "$(awk "BEGIN{print $t1 - $t0}")" "$(awk "BEGIN{print $c1 - $c0}")"
row "registry to pulled image" "$(awk "BEGIN{print $t2 - $t1}")" "$(awk "BEGIN{print $c2 - $c1}")"
row "stream to pulled image" "$(awk "BEGIN{print $t2 - $t0}")" "$(awk "BEGIN{print $c2 - $c0}")"
