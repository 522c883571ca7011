#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with an S3 gateway, for Easel's S3 tests and local trials.
#
#   scripts/ceph-rgw.sh start    install Ceph from Debian if missing (root or sudo), then start one
#                                monitor, one OSD (memstore: everything in RAM) and radosgw (beast,
#                                127.0.0.1 only), auth none, and an S3 user; reuses a running one.
#                                Prints `export EASEL_S3_...=...` lines (eval-able) and writes them to
#                                $CEPH_RGW_DIR/env. Logs go to stderr.
#   scripts/ceph-rgw.sh stop     stop the daemons and delete the cluster's folder.
#   scripts/ceph-rgw.sh status   exit 0 (and print the env) when the gateway answers.
#   scripts/ceph-rgw.sh env      print the env of the running gateway.
#
# Environment: CEPH_RGW_DIR (default ${TMPDIR:-/tmp}/easel-ceph-rgw), CEPH_RGW_PORT (default: first
# free from 7480), CEPH_MON_PORT (default: first free from 16789), CEPH_RGW_NO_INSTALL=1 (fail instead
# of installing). Nothing listens beyond 127.0.0.1; the data is lost on stop. Not for production.
set -euo pipefail

DIR=${CEPH_RGW_DIR:-${TMPDIR:-/tmp}/easel-ceph-rgw}
PACKAGES=(ceph-mon ceph-osd radosgw ceph-common)
TOOLS=(ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool uuidgen)
ACCESS_KEY=EASELTESTACCESSKEY01
START_TIMEOUT=${CEPH_RGW_START_TIMEOUT:-180}

log() { echo "ceph-rgw: $*" >&2; }
die() {
  echo "ceph-rgw: ERROR: $*" >&2
  if [ -d "$DIR/log" ]; then
    for f in "$DIR"/log/*.log; do
      [ -s "$f" ] && { echo "---- last lines of $f" >&2; tail -n 15 "$f" >&2; }
    done
  fi
  exit 1
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local p=$1
  while port_busy "$p"; do p=$((p + 1)); done
  echo "$p"
}

# GET / on the gateway: RGW answers an anonymous bucket listing (HTTP 200, an x-amz-request-id header).
rgw_answers() {
  local port=$1 reply
  reply=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && \
    printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 && head -c 1000 <&3" \
    2>/dev/null) || return 1
  [[ $reply == HTTP/1.1\ * && ${reply,,} == *x-amz-request-id* ]]
}

print_env() { sed 's/^/export /' "$DIR/env"; }

running() {
  [ -f "$DIR/env" ] || return 1
  local port
  port=$(sed -n 's/^CEPH_RGW_PORT=//p' "$DIR/env")
  [ -n "$port" ] && rgw_answers "$port"
}

install_ceph() {
  local missing=()
  for t in "${TOOLS[@]}"; do command -v "$t" >/dev/null || missing+=("$t"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "${CEPH_RGW_NO_INSTALL:-}" = 1 ] && die "missing ${missing[*]} and CEPH_RGW_NO_INSTALL=1"
  command -v apt-get >/dev/null || die "missing ${missing[*]}; install Ceph (${PACKAGES[*]}) by hand: \
this script installs only with apt-get (Debian/Ubuntu)"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      die "missing ${missing[*]}; installing ${PACKAGES[*]} needs root (or passwordless sudo): \
run 'apt-get install ${PACKAGES[*]} uuid-runtime' as root"
    fi
  fi
  log "installing ${PACKAGES[*]} from apt (missing: ${missing[*]})"
  local t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || die "apt-get update failed"
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
    "${PACKAGES[@]}" uuid-runtime >&2 || die "apt-get install ${PACKAGES[*]} failed"
  for t in "${TOOLS[@]}"; do command -v "$t" >/dev/null || die "$t still missing after installing"; done
  log "installed in $((SECONDS - t0)) s"
}

stop_daemons() {
  local pids=() f pid
  for f in "$DIR"/run/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && pids+=("$pid")
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  # SIGKILL: the cluster is thrown away, and a memstore OSD told to stop would first save its RAM to disk.
  kill -9 "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
}

ceph_() { timeout 60 ceph -c "$DIR/ceph.conf" --connect-timeout 30 "$@"; }

start() {
  if running; then
    log "reusing the gateway in $DIR"
    print_env
    return 0
  fi
  install_ceph
  local t0=$SECONDS
  stop_daemons
  rm -rf "$DIR"
  mkdir -p "$DIR"/{run,log,mon,osd/0,rgw}
  local fsid mon_port rgw_port secret
  fsid=$(uuidgen)
  mon_port=${CEPH_MON_PORT:-$(free_port 16789)}
  rgw_port=${CEPH_RGW_PORT:-$(free_port 7480)}
  port_busy "$rgw_port" && die "port $rgw_port is taken"
  port_busy "$mon_port" && die "port $mon_port is taken"
  secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')

  cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
# auth none cannot do msgr2's "secure" mode, which radosgw otherwise insists on for its monitor link.
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc
auth cluster required = none
auth service required = none
auth client required = none
keyring = $DIR/keyring
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
crash dir = $DIR/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
ms async op threads = 1

[mon]
mon data = $DIR/mon/\$name

[osd]
osd data = $DIR/osd/\$id
osd objectstore = memstore
memstore device bytes = 2147483648
osd op num shards = 1
osd op num threads per shard = 2

[client]
rgw data = $DIR/rgw
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw thread pool size = 16
rgw enable usage log = false
rgw dns name = 127.0.0.1
EOF
  : >"$DIR/keyring"

  log "monitor on 127.0.0.1:$mon_port"
  monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" >/dev/null 2>&1 ||
    die "monmaptool failed"
  ceph-mon -c "$DIR/ceph.conf" --mkfs -i a --monmap "$DIR/monmap" >"$DIR/log/mkfs-mon.out" 2>&1 ||
    die "ceph-mon --mkfs failed: $(cat "$DIR/log/mkfs-mon.out")"
  ceph-mon -c "$DIR/ceph.conf" -i a 9>&- >>"$DIR/log/mon.out" 2>&1 || die "ceph-mon did not start"
  ceph_ mon stat >/dev/null 2>&1 || die "the monitor does not answer"

  log "OSD 0 (memstore)"
  local osd_uuid id
  osd_uuid=$(uuidgen)
  id=$(ceph_ osd new "$osd_uuid" 2>/dev/null) || die "ceph osd new failed"
  [ "$id" = 0 ] || die "unexpected OSD id $id"
  ceph-osd -c "$DIR/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$DIR/log/mkfs-osd.out" 2>&1 ||
    die "ceph-osd --mkfs failed: $(cat "$DIR/log/mkfs-osd.out")"
  ceph-osd -c "$DIR/ceph.conf" -i 0 9>&- >>"$DIR/log/osd.out" 2>&1 || die "ceph-osd did not start"
  local deadline=$((SECONDS + START_TIMEOUT))
  until ceph_ osd dump 2>/dev/null | grep -q '^osd\.0 up'; do
    [ $SECONDS -lt $deadline ] || die "OSD 0 not up after ${START_TIMEOUT} s"
    sleep 1
  done

  log "radosgw on 127.0.0.1:$rgw_port"
  radosgw -c "$DIR/ceph.conf" -n client.rgw.a 9>&- >>"$DIR/log/rgw.out" 2>&1 || die "radosgw did not start"
  until rgw_answers "$rgw_port"; do
    [ $SECONDS -lt $deadline ] || die "radosgw does not answer on 127.0.0.1:$rgw_port after ${START_TIMEOUT} s"
    sleep 1
  done
  timeout 120 radosgw-admin -c "$DIR/ceph.conf" -n client.rgw.a user create --uid=easel \
    --display-name="Easel tests" --access-key="$ACCESS_KEY" --secret-key="$secret" \
    >"$DIR/log/user-create.out" 2>&1 || die "radosgw-admin user create failed: $(cat "$DIR/log/user-create.out")"

  cat >"$DIR/env.tmp" <<EOF
CEPH_RGW_DIR=$DIR
CEPH_RGW_PORT=$rgw_port
EASEL_S3_ENDPOINT_URL=http://127.0.0.1:$rgw_port
EASEL_S3_REGION=us-east-1
EASEL_S3_ADDRESSING_STYLE=path
EASEL_S3_ACCESS_KEY_ID=$ACCESS_KEY
EASEL_S3_SECRET_ACCESS_KEY=$secret
EOF
  mv "$DIR/env.tmp" "$DIR/env"
  log "ready in $((SECONDS - t0)) s: http://127.0.0.1:$rgw_port (env: $DIR/env; stop: $0 stop)"
  print_env
}

cmd=${1:-start}
mkdir -p "$(dirname "$DIR")"
# One start/stop at a time (parallel test sessions share the gateway).
exec 9>"$DIR.lock"
flock -w 600 9 || die "another ceph-rgw.sh holds $DIR.lock"

case "$cmd" in
start) start ;;
stop)
  stop_daemons
  rm -rf "$DIR"
  log "stopped"
  ;;
status | env)
  running || { log "not running"; exit 1; }
  print_env
  ;;
*)
  echo "usage: $0 start|stop|status|env" >&2
  exit 2
  ;;
esac
