#!/usr/bin/env bash
# Benchmark (not a test): cellar beside restic, rustic, borg and casync on one real
# root-filesystem series, in one run, on identical tar streams.
#
#   benches/compare.sh [--series-only] [WORKDIR]     WORKDIR defaults to /var/tmp/cellar-compare
#
# --series-only builds the three tar files and stops (no tools are run).
#
# The series (built once, kept in WORKDIR and reused by later runs; delete it to rebuild):
#   step1.tar  debootstrap --variant=minbase bookworm (Debian, from deb.debian.org)
#   step2.tar  the same machine after `apt-get install python3-minimal curl`
#   step3.tar  the same machine after `apt-get install less`
# Each step is tarred once (`tar --create --numeric-owner --directory=ROOT .`), and every tool
# ingests the same three files in order into its own fresh repository:
#   cellar  snapshot FILE                   (release build of this checkout)
#   restic  backup --stdin                  (repository v2, compression auto; restic always
#                                            encrypts: RESTIC_PASSWORD is set to a fixed value)
#   rustic  backup --force -  (stdin)       (`cargo install rustic-rs` when missing; skipped with a
#                                            note when that fails or takes longer than
#                                            RUSTIC_INSTALL_TIMEOUT seconds, default 1500;
#                                            rustic also always encrypts: RUSTIC_PASSWORD)
#   borg    import-tar -C zstd,3            (--encryption none)
#   casync  make --compression=zstd          (one .caibx per step over a shared chunk store)
# Then `cellar mount` beside `borg mount` of step 3: mount time, `find`, and a full read
# (`tar -c | cat`), as benches/mount.sh does.
#
# The ingests run COMPARE_ROUNDS times (default 3), each round into fresh repositories, tool
# after tool, so a slow moment of the machine is not one tool's alone; times are medians.
#
# Printed (and written to WORKDIR/results.md): ingest wall time cold (step 1) and incremental
# (steps 2 and 3), their CPU time (user + system), store size after each step, what steps 2 and 3 added, peak RSS of the
# ingests (GNU time %M), the mount rows, and for each row cellar's ratio to the best other tool
# (time: best other / cellar, higher is better for cellar; size and memory: cellar / best
# other, lower is better). Store size is the sum of the repository's file sizes (apparent
# bytes, no directory or block overhead).
#
# Installs what it needs with apt-get when missing: restic, borgbackup, casync, debootstrap,
# GNU time, fuse3. Must run as root (debootstrap, chroot, FUSE).
set -euo pipefail
series_only=
if [[ ${1:-} == --series-only ]]; then series_only=1 && shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/var/tmp/cellar-compare}
mkdir -p "$work"
work=$(cd "$work" && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# ---------------------------------------------------------------- the series
command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
root=$work/root
cleanup_chroot() {
    umount "$root/proc" 2>/dev/null || true
    rm -f "$root/usr/sbin/policy-rc.d" 2>/dev/null || true
}
trap cleanup_chroot EXIT
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
add_packages() {
    mount -t proc proc "$root/proc"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" # start no services
    chmod +x "$root/usr/sbin/policy-rc.d"
    in_root apt-get update -qq
    in_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    in_root apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* # as an image build would
    cleanup_chroot
}
tar_step() {
    tar --create --numeric-owner --file="$work/$1.tar.part" --directory="$root" .
    mv "$work/$1.tar.part" "$work/$1.tar"
}
if [[ ! -s $work/step3.tar ]]; then
    rm -rf "$root" "$work"/step*.tar
    log "step 1: debootstrap --variant=minbase $suite"
    debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    in_root apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* # every step is cleaned as an image build would
    tar_step step1
    log "step 2: + python3-minimal curl"
    add_packages python3-minimal curl
    tar_step step2
    log "step 3: + less"
    add_packages less
    tar_step step3
    rm -rf "$root"
else
    log "reusing the series in $work (delete step*.tar to rebuild)"
fi
[[ -n $series_only ]] && exit 0

# ---------------------------------------------------------------- tools
need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
command -v casync >/dev/null || need+=(casync)
command -v debootstrap >/dev/null || need+=(debootstrap)
[[ -x /usr/bin/time ]] || need+=(time)
command -v fusermount3 >/dev/null || need+=(fuse3)
if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

rustic=$(command -v rustic || true)
rustic_note=
if [[ -z $rustic && -x $HOME/.cargo/bin/rustic ]]; then rustic=$HOME/.cargo/bin/rustic; fi
if [[ -z $rustic && ${RUSTIC_INSTALL_TIMEOUT:-} == 0 ]]; then
    rustic_note="rustic skipped: not installed and RUSTIC_INSTALL_TIMEOUT=0"
elif [[ -z $rustic ]]; then
    log "cargo install rustic-rs (at most ${RUSTIC_INSTALL_TIMEOUT:-1500}s)"
    if timeout "${RUSTIC_INSTALL_TIMEOUT:-1500}" cargo install --locked rustic-rs >"$work/rustic-install.log" 2>&1; then
        rustic=$HOME/.cargo/bin/rustic
    else
        rustic_note="rustic skipped: cargo install rustic-rs failed or timed out (see $work/rustic-install.log)"
        log "$rustic_note"
        rustic=
    fi
fi

log "building cellar (release)"
(cd "$here" && cargo build --release -q)
cellar=${CARGO_TARGET_DIR:-$here/target}/release/cellar
[[ -x $cellar ]] || { echo "no cellar binary at $cellar" >&2; exit 1; }

steps=(step1 step2 step3)
stream_bytes=()
for s in "${steps[@]}"; do stream_bytes+=("$(stat -c %s "$work/$s.tar")"); done
# Every tool reads the streams from the page cache, the first one of the first round included.
for s in "${steps[@]}"; do cat "$work/$s.tar" >/dev/null; done

# ---------------------------------------------------------------- ingest
repos=$work/repos
rm -rf "$repos" && mkdir -p "$repos"
export XDG_CACHE_HOME=$repos/cache          # restic's and rustic's caches, out of $HOME
export BORG_BASE_DIR=$repos/borg-base        # borg's cache and keys
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export RESTIC_PASSWORD=cellar-bench RUSTIC_PASSWORD=cellar-bench
export CELLAR_STORE=$repos/cellar

tools=(cellar restic)
[[ -n $rustic ]] && tools+=(rustic)
tools+=(borg casync)

init() {
    case $1 in
    restic) restic init --repo "$repos/restic" --repository-version 2 -q ;;
    rustic) "$rustic" -r "$repos/rustic" init >/dev/null 2>&1 ;;
    borg) borg init --encryption none "$repos/borg" ;;
    cellar | casync) mkdir -p "$repos/$1" ;;
    esac
}
ingest() { # TOOL STEP
    local f=$work/$2.tar
    case $1 in
    cellar) "$cellar" snapshot --name deb "$f" ;;
    restic) restic --repo "$repos/restic" backup -q --stdin --stdin-filename root.tar <"$f" ;;
    # --force: without it rustic 0.11 takes stdin for unchanged against the parent snapshot
    # of the same name (a stream has no mtime or size to compare) and records the parent's
    # content again without storing the new stream.
    rustic) "$rustic" -r "$repos/rustic" backup --force --stdin-filename root.tar - <"$f" ;;
    borg) borg import-tar --compression zstd,3 "$repos/borg::$2" "$f" ;;
    casync) casync make --compression=zstd --store="$repos/casync/default.castr" "$repos/casync/$2.caibx" "$f" ;;
    esac
}
export -f ingest
export repos work cellar rustic
store_bytes() { find "$repos/$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }

# Each round ingests the series into fresh repositories, tool after tool; times are the median
# of the rounds, peak RSS the highest, sizes the last round's.
rounds=${COMPARE_ROUNDS:-3}
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A secs cpu rss size
for r in $(seq "$rounds"); do
    for t in "${tools[@]}"; do
        rm -rf "${repos:?}/$t"
        init "$t" || { echo "$t: init failed" >&2; exit 1; }
        for s in "${steps[@]}"; do
            sync
            log "round $r/$rounds, $t: $s"
            /usr/bin/time -f '%e %M %U %S' -o "$work/time.out" bash -c 'ingest "$0" "$1"' "$t" "$s" \
                >"$work/$t-$s.log" 2>&1 || { cat "$work/$t-$s.log" >&2; echo "$t failed on $s" >&2; exit 1; }
            read -r e m u k <"$work/time.out"
            secs[$t,$s]+="$e " size[$t,$s]=$(store_bytes "$t")
            if ((m > ${rss[$t,$s]:-0})); then rss[$t,$s]=$m; fi
            cpu[$t,$s]+="$(awk -v u="$u" -v k="$k" 'BEGIN{printf "%.2f", u + k}') "
        done
    done
done
declare -A rounds_secs
for key in "${!secs[@]}"; do
    rounds_secs[$key]=${secs[$key]}
    secs[$key]=$(median <<<"${secs[$key]}") cpu[$key]=$(median <<<"${cpu[$key]}")
done

# ---------------------------------------------------------------- mount
cmnt=$work/cellar-mnt bmnt=$work/borg-mnt
mkdir -p "$cmnt" "$bmnt"
unmount_all() {
    fusermount3 -u "$cmnt" 2>/dev/null || umount -l "$cmnt" 2>/dev/null || true
    borg umount "$bmnt" 2>/dev/null || umount -l "$bmnt" 2>/dev/null || true
}
trap 'unmount_all; cleanup_chroot' EXIT
stamp() { date +%s.%N; }
timed() { local s; s=$(stamp); "$@" >/dev/null 2>&1 || true; awk -v a="$s" -v b="$(stamp)" 'BEGIN{printf "%.3f", b - a}'; }
read_all() { tar -cf - -C "$1" . | cat >/dev/null; } # tar skips reading data when writing to /dev/null
sync
declare -A mnt
log "mount: cellar"
mnt[cellar,mount]=$(timed "$cellar" mount --daemon "$cmnt" deb)
mnt[cellar,find]=$(timed find "$cmnt")
mnt[cellar,read]=$(timed read_all "$cmnt")
log "mount: borg"
# import-tar keeps the stream's `./` prefix, so the tree would hide under a directory named `.`.
mnt[borg,mount]=$(timed borg mount --strip-components 1 "$repos/borg::step3" "$bmnt")
mnt[borg,find]=$(timed find "$bmnt")
mnt[borg,read]=$(timed read_all "$bmnt")
# Both mounts must show the same tree, or the times mean nothing.
c_n=$(find "$cmnt" | wc -l) b_n=$(find "$bmnt" | wc -l)
unmount_all

# ---------------------------------------------------------------- table
mib() { awk -v b="$1" 'BEGIN{ if (b < 10485760 && b > -10485760) printf "%.0f KiB", b / 1024; else printf "%.1f MiB", b / 1048576 }'; }
# ratio KIND CELLAR_VALUE OTHER_VALUES...: KIND "time" -> best_other/cellar, "size" -> cellar/best_other
ratio() {
    local kind=$1 c=$2
    shift 2
    printf '%s\n' "$@" | sort -g | head -1 | awk -v c="$c" -v k="$kind" '{
        if (k == "time") { r = $1 / (c + 1e-9); if (r >= 1) printf "%.1fx faster", r; else printf "%.1fx slower", 1 / r }
        else printf "%.2fx", c / ($1 + 1e-9) }'
}
best_name() { # KIND ROWKEY: name of the best other tool
    local best= bv=
    for t in "${tools[@]}"; do
        [[ $t == cellar ]] && continue
        local v=${vals[$t]}
        if [[ -z $bv ]] || awk -v a="$v" -v b="$bv" 'BEGIN{exit !(a < b)}'; then best=$t bv=$v; fi
    done
    echo "$best"
}
out=$work/results.md
{
    echo "Series: ${steps[*]} = $(mib "${stream_bytes[0]}"), $(mib "${stream_bytes[1]}"), $(mib "${stream_bytes[2]}") of tar ($suite minbase; + python3-minimal curl; + less)"
    echo "Ingest times: the median of $rounds rounds, each into fresh repositories"
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(date -u +%Y-%m-%d); load average $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
    echo "Versions: cellar $(cd "$here" && git rev-parse --short HEAD), $(restic version | cut -d' ' -f1-2)${rustic:+, $("$rustic" --version 2>/dev/null | head -1)}, $(borg --version), casync $(casync --version | head -1 | awk '{print $2}')"
    echo
    printf '| %-26s |' metric
    for t in "${tools[@]}"; do printf ' %-12s |' "$t"; done
    printf ' %-28s |\n' "cellar vs best other"
    printf '|%s|' "$(printf -- '-%.0s' {1..28})"
    for t in "${tools[@]}"; do printf '%s|' "$(printf -- '-%.0s' {1..14})"; done
    printf '%s|\n' "$(printf -- '-%.0s' {1..30})"
    row() { # LABEL KIND FORMAT (vals[] filled)
        local label=$1 kind=$2 others=()
        printf '| %-26s |' "$label"
        for t in "${tools[@]}"; do
            if [[ $kind == time ]]; then printf ' %-12s |' "${vals[$t]} s"; else printf ' %-12s |' "$(mib "${vals[$t]}")"; fi
            [[ $t != cellar ]] && others+=("${vals[$t]}")
        done
        printf ' %-28s |\n' "$(ratio "$kind" "${vals[cellar]}" "${others[@]}") (vs $(best_name))"
    }
    declare -A vals
    for t in "${tools[@]}"; do vals[$t]=${secs[$t,step1]}; done
    row "ingest cold (step 1)" time
    for s in step2 step3; do
        for t in "${tools[@]}"; do vals[$t]=${secs[$t,$s]}; done
        row "ingest incremental ($s)" time
    done
    # CPU seconds (user + system) are steadier than wall time on a busy machine.
    for s in "${steps[@]}"; do
        for t in "${tools[@]}"; do vals[$t]=${cpu[$t,$s]}; done
        row "ingest CPU ($s)" time
    done
    for s in "${steps[@]}"; do
        for t in "${tools[@]}"; do vals[$t]=${size[$t,$s]}; done
        row "store size after $s" size
    done
    for t in "${tools[@]}"; do vals[$t]=$((size[$t,step2] - size[$t,step1])); done
    row "increment step2" size
    for t in "${tools[@]}"; do vals[$t]=$((size[$t,step3] - size[$t,step2])); done
    row "increment step3" size
    for t in "${tools[@]}"; do
        m=0
        for s in "${steps[@]}"; do
            if ((rss[$t,$s] > m)); then m=${rss[$t,$s]}; fi
        done
        vals[$t]=$((m * 1024))
    done
    row "peak RSS (ingest)" size
    echo
    echo "Ingest wall seconds of each round:"
    for t in "${tools[@]}"; do
        printf -- '- %s:' "$t"
        for st in "${steps[@]}"; do printf ' %s %s;' "$st" "$(xargs <<<"${rounds_secs[$t,$st]}")"; done
        echo
    done
    echo
    echo "| mount of step 3 ($c_n vs $b_n entries) | cellar mount | borg mount | borg / cellar |"
    echo "|---|---|---|---|"
    for k in mount find read; do
        label=$k
        [[ $k == find ]] && label="find (every entry)"
        [[ $k == read ]] && label="tar -c (full read)"
        printf '| %s | %s s | %s s | %s |\n' "$label" "${mnt[cellar,$k]}" "${mnt[borg,$k]}" \
            "$(awk -v c="${mnt[cellar,$k]}" -v b="${mnt[borg,$k]}" 'BEGIN{printf "%.1fx", b / (c + 1e-9)}')"
    done
    echo
    # Snapshot to pulled image, beside umoci raw add-layer + skopeo copy (benches/image.sh).
    echo "image of step 3 (snapshot to an image a client pulled), into a fresh store, into one"
    echo "holding step 2 (the machine frozen again), and the same pulled by a client that holds"
    echo "step 2's image:"
    echo '```'
    "$here/benches/image.sh" "$work/step3.tar" | sed 's/^/    /'
    "$here/benches/image.sh" "$work/step3.tar" "$work/step2.tar" | sed 's/^/    /'
    "$here/benches/image.sh" --pulled-parent "$work/step3.tar" "$work/step2.tar" | sed 's/^/    /'
    echo "and the same two without a client's image, cellar serving zstd layers:"
    "$here/benches/image.sh" --compression zstd "$work/step3.tar" | sed 's/^/    /'
    "$here/benches/image.sh" --compression zstd "$work/step3.tar" "$work/step2.tar" | sed 's/^/    /'
    echo '```'
    [[ -n $rustic_note ]] && echo "$rustic_note"
    true
} | tee "$out"
log "results in $out"
