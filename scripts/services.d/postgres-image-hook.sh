#!/bin/sh
# mmdebstrap --customize-hook for the local test image vardo-test/postgres:15 (see scripts/services).
# $1 = the root directory of the image being built.
set -eu
rootfs=$1
here=$(cd "$(dirname "$0")" && pwd)

install -m 755 "$here/postgres-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
# pg_dump, psql, postgres, initdb, ... straight on PATH (no pg_wrapper / cluster config involved)
for f in "$rootfs"/usr/lib/postgresql/15/bin/*; do
    ln -sf "/usr/lib/postgresql/15/bin/${f##*/}" "$rootfs/usr/local/bin/${f##*/}"
done
# no Debian-managed cluster: the entrypoint makes its own in $PGDATA
rm -rf "$rootfs/var/lib/postgresql/15" "$rootfs/etc/postgresql/15"
chroot "$rootfs" /bin/sh -eu -c '
    mkdir -p /var/lib/postgresql/data /var/run/postgresql
    chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql
    chmod 700 /var/lib/postgresql/data
    chmod 2775 /var/run/postgresql
'
