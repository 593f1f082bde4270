#!/usr/bin/env bash
# Provision and run PostgreSQL 17 + TimescaleDB (Apache edition) + PostGIS + h3-pg in a Debian
# trixie chroot. This machine's Debian release has no TimescaleDB package; trixie has.
#
#   scripts/timescaledb.sh up       install if missing, start, create the database; prints DATABASE_URL
#   scripts/timescaledb.sh down     stop the cluster and unmount
#   scripts/timescaledb.sh stop     stop the cluster (fast shutdown), keep the chroot mounted
#   scripts/timescaledb.sh start    start an installed cluster
#   scripts/timescaledb.sh restart  stop then start (tests use it to prove nothing is lost)
#   scripts/timescaledb.sh url     print DATABASE_URL
#   scripts/timescaledb.sh status  exit 0 when the cluster accepts connections
#
# Settings (environment): TSDB_DIR (chroot, default /var/lib/guanlink/timescaledb-trixie),
# TSDB_PORT (default 55432), TSDB_DB (default guanlink), TSDB_CLUSTER (default main; another
# name gives a second, independent server in the same chroot, e.g. on another port). Needs root. A Docker user may run the
# timescale/timescaledb-ha image instead and set DATABASE_URL to it.
set -euo pipefail

DIR=${TSDB_DIR:-/var/lib/guanlink/timescaledb-trixie}
PORT=${TSDB_PORT:-55432}
DB=${TSDB_DB:-guanlink}
PG=17
CLUSTER=${TSDB_CLUSTER:-main}
URL="postgres://postgres@127.0.0.1:${PORT}/${DB}"
PACKAGES="postgresql-${PG} postgresql-${PG}-timescaledb postgresql-${PG}-postgis-3 postgresql-${PG}-h3"

log() { echo "[timescaledb] $*" >&2; }

need_root() {
  [ "$(id -u)" = 0 ] || { log "must run as root (debootstrap, chroot, mount)"; exit 1; }
}

# The host's own Debian mirror, so a machine behind a local mirror uses it; debootstrap's default otherwise.
host_mirror() {
  local uri
  uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | grep -E '/debian/?( |$)' | grep -v security | head -n1 | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/[[:space:]].*$//')
  echo "${uri}"
}

in_chroot() { chroot "$DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"; }

mount_all() {
  mountpoint -q "$DIR/proc" || mount -t proc proc "$DIR/proc"
  mountpoint -q "$DIR/dev" || mount --rbind /dev "$DIR/dev"
  mkdir -p "$DIR/dev/shm"
  mountpoint -q "$DIR/dev/shm" || mount -t tmpfs -o size=2g tmpfs "$DIR/dev/shm" 2>/dev/null || true
}

umount_all() {
  for m in dev/shm dev proc; do
    mountpoint -q "$DIR/$m" && umount -R -l "$DIR/$m" || true
  done
}

install_chroot() {
  if [ -x "$DIR/usr/lib/postgresql/${PG}/bin/postgres" ] && [ -f "$DIR/usr/share/postgresql/${PG}/extension/timescaledb.control" ] \
     && [ -f "$DIR/usr/share/postgresql/${PG}/extension/h3.control" ] && [ -L "$DIR/usr/share/postgresql/${PG}/extension/postgis.control" -o -f "$DIR/usr/share/postgresql/${PG}/extension/postgis.control" ]; then
    return 0
  fi
  command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get install -y -q debootstrap >&2; }
  if [ ! -x "$DIR/usr/bin/apt-get" ]; then
    log "debootstrap trixie into $DIR"
    mkdir -p "$DIR"
    # shellcheck disable=SC2046
    debootstrap --variant=minbase trixie "$DIR" $(host_mirror) >&2
  fi
  mount_all
  # Services must not start while packages install; we start the cluster ourselves.
  printf '#!/bin/sh\nexit 101\n' > "$DIR/usr/sbin/policy-rc.d"; chmod +x "$DIR/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$DIR/etc/resolv.conf" 2>/dev/null || true
  log "apt-get install ${PACKAGES}"
  in_chroot apt-get update -q >&2
  in_chroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${PACKAGES} >&2
}

configure_cluster() {
  local conf="$DIR/etc/postgresql/${PG}/${CLUSTER}"
  [ -d "$conf" ] || in_chroot pg_createcluster "$PG" "$CLUSTER" >&2
  mkdir -p "$conf/conf.d"
  cat > "$conf/conf.d/guanlink.conf" <<CONF
port = ${PORT}
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 200
shared_buffers = 1GB
work_mem = 32MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
CONF
  local hba="$conf/pg_hba.conf"
  if ! grep -q 'guanlink' "$hba"; then
    { echo "# guanlink: trust on loopback (test and development instance)"
      echo "host all all 127.0.0.1/32 trust"
      cat "$hba"; } > "$hba.new" && mv "$hba.new" "$hba"
    chown --reference="$conf/postgresql.conf" "$hba" 2>/dev/null || true
  fi
}

is_up() { pg_isready -q -h 127.0.0.1 -p "$PORT" 2>/dev/null || in_chroot pg_isready -q -h 127.0.0.1 -p "$PORT"; }

start_cluster() {
  mount_all
  if ! is_up; then
    log "starting PostgreSQL ${PG} on 127.0.0.1:${PORT}"
    in_chroot pg_ctlcluster "$PG" "$CLUSTER" start >&2
  fi
  for _ in $(seq 1 60); do is_up && break; sleep 0.5; done
  is_up || { log "cluster did not become ready"; exit 1; }
  local exists
  exists=$(in_chroot psql -h 127.0.0.1 -p "$PORT" -U postgres -tAc "select 1 from pg_database where datname='${DB}'")
  [ "$exists" = 1 ] || in_chroot psql -h 127.0.0.1 -p "$PORT" -U postgres -qc "create database ${DB}" >&2
}

case "${1:-up}" in
  up)
    need_root; install_chroot; configure_cluster; start_cluster
    log "ready: $(in_chroot psql -h 127.0.0.1 -p "$PORT" -U postgres -tAc "select version()" | cut -c1-40)"
    echo "$URL" ;;
  down)
    need_root
    if [ -d "$DIR/etc/postgresql/${PG}/${CLUSTER}" ] && is_up; then in_chroot pg_ctlcluster "$PG" "$CLUSTER" stop -m fast >&2 || true; fi
    umount_all ;;
  stop)
    need_root
    if is_up; then in_chroot pg_ctlcluster "$PG" "$CLUSTER" stop -m fast >&2; fi ;;
  start)
    need_root; start_cluster ;;
  restart)
    need_root
    if is_up; then in_chroot pg_ctlcluster "$PG" "$CLUSTER" stop -m fast >&2; fi
    start_cluster ;;
  url) echo "$URL" ;;
  status) is_up ;;
  *) echo "usage: $0 up|down|stop|start|restart|url|status" >&2; exit 2 ;;
esac
