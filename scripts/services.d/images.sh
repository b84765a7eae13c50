# shellcheck shell=bash
# The local images of scripts/services (sourced by it): no registry is reachable, so each is made
# here from the host's packages with `docker import`, and cached by its tag.
#   vardo-test/helper:1     busybox-static with every applet; the engine's helper in the tests
#   vardo-test/postgres:15  bookworm + postgresql-15 with an entrypoint like the official image's
#   vardo-test/redis:7      bookworm + redis-server, for the compose stack's test
#   debian:bookworm-slim    bookworm minbase without docs: the Dockerfile's base

HELPER_IMAGE=vardo-test/helper:1
POSTGRES_IMAGE=vardo-test/postgres:15
REDIS_IMAGE=vardo-test/redis:7
DEBIAN_SLIM_IMAGE=debian:bookworm-slim

image_present() {
    docker image inspect "$1" >/dev/null 2>&1
}

# vardo-test/helper:1 — busybox-static with every applet as a symlink, /tmp, CMD /bin/sh
build_helper_image() {
    local dir path
    [[ -x /bin/busybox ]] || die "/bin/busybox missing (package busybox-static)"
    mkdir -p "$DEV/build"
    dir=$(mktemp -d "$DEV/build/helper.XXXXXX")
    mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" "$dir/root" "$dir/v"
    chmod 1777 "$dir/tmp"
    chmod 700 "$dir/root"
    cp /bin/busybox "$dir/bin/busybox"
    while IFS= read -r path; do
        [[ $path == bin/busybox ]] && continue
        mkdir -p "$dir/$(dirname "$path")"
        ln -sf /bin/busybox "$dir/$path"
    done < <("$dir/bin/busybox" --list-full)
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$dir/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
    tar -C "$dir" --numeric-owner -cf - . | docker import \
        --change 'CMD ["/bin/sh"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$HELPER_IMAGE" >/dev/null || die "docker import $HELPER_IMAGE failed"
    rm -rf "$dir"
    local out
    out=$(docker run --rm --network none "$HELPER_IMAGE" \
        sh -c 'echo hi | sha256sum | cut -c1-8; tar --help >/dev/null 2>&1 && echo tar; sleep 0') ||
        true
    if [[ $out != $'98ea6e4f\ntar' ]]; then
        docker rmi "$HELPER_IMAGE" >/dev/null 2>&1 || true
        die "the freshly built $HELPER_IMAGE does not work (got: $out)"
    fi
}

# the bookworm mirror the host's apt uses
debian_mirror() {
    local m
    m=$(awk '
        FNR == 1 || /^[[:space:]]*$/ { uri = ""; suites = "" }
        /^URIs:/   { uri = $2 }
        /^Suites:/ { suites = $0 " " }
        uri != "" && suites ~ / bookworm / && uri !~ /security/ { print uri; exit }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 || true)
    if [[ -z $m ]]; then
        m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            sed -E 's/\[[^]]*\]//' | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' || true)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

# mmdebstrap_rootfs NAME TARBALL [mmdebstrap options…]: a bookworm minbase rootfs from the host's
# mirror, without manuals, docs or locales (as Debian's -slim images), into TARBALL
mmdebstrap_rootfs() {
    local name=$1 tarball=$2 mirror logfile=$LOG/$1-image.log proxy=
    shift 2
    command -v mmdebstrap >/dev/null || die "mmdebstrap missing"
    mirror=$(debian_mirror)
    mkdir -p "$DEV/build"
    rm -f "$tarball"
    # shellcheck disable=SC2054 # the commas are apt's
    local opts=(
        --variant=minbase
        --aptopt='Acquire::Check-Valid-Until "false"'
        --dpkgopt='path-exclude=/usr/share/man/*'
        --dpkgopt='path-exclude=/usr/share/doc/*'
        --dpkgopt='path-include=/usr/share/doc/*/copyright'
        --dpkgopt='path-exclude=/usr/share/locale/*'
        "$@"
    )
    proxy=$(apt-config dump 2>/dev/null | sed -n 's/^Acquire::http::Proxy "\(.*\)";$/\1/p' | head -n 1)
    if [[ -n $proxy ]]; then opts+=(--aptopt="Acquire::http::Proxy \"$proxy\""); fi
    say "rootfs $name: building with mmdebstrap from $mirror (a few minutes; log: $logfile)"
    mmdebstrap "${opts[@]}" bookworm "$tarball" "$mirror" >>"$logfile" 2>&1 ||
        { log_tail "$logfile"; die "mmdebstrap failed"; }
}

# vardo-test/postgres:15 — bookworm minbase + postgresql-15, our entrypoint
build_postgres_image() {
    local tarball=$DEV/build/postgres-rootfs.tar logfile=$LOG/postgres-image.log
    # shellcheck disable=SC2016 # $1 is the hook's argument
    mmdebstrap_rootfs postgres "$tarball" \
        --include=postgresql-15,gzip \
        --setup-hook='mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.d/vardo.conf"' \
        --customize-hook="$(printf '%q' "$HERE/postgres-image-hook.sh") \"\$1\""
    docker import \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        --change 'ENV PGDATA=/var/lib/postgresql/data' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'EXPOSE 5432' \
        "$tarball" "$POSTGRES_IMAGE" >>"$logfile" 2>&1 ||
        { log_tail "$logfile"; die "docker import $POSTGRES_IMAGE failed"; }
    rm -f "$tarball"
    smoke_test_postgres_image || {
        docker rmi "$POSTGRES_IMAGE" >/dev/null 2>&1 || true
        die "the freshly built $POSTGRES_IMAGE does not work (see above)"
    }
}

# debian:bookworm-slim — the base of the Dockerfile's final stage, made here since no registry is
# reachable; a real one already present is kept
build_debian_slim_image() {
    local tarball=$DEV/build/debian-slim-rootfs.tar logfile=$LOG/debian-slim-image.log
    # the -slim images keep leaving manuals and docs out of what apt installs later; apt is set up
    # as in Debian's own image: the build's options (a proxy, Valid-Until) stay out of it, and
    # security updates reach what the Dockerfile installs
    # shellcheck disable=SC2016 # $1 is the hook's argument
    mmdebstrap_rootfs debian-slim "$tarball" \
        --customize-hook='printf "path-exclude /usr/share/man/*\npath-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/locale/*\n" >"$1/etc/dpkg/dpkg.cfg.d/docker"' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        --customize-hook='rm -f "$1"/etc/apt/apt.conf.d/99mmdebstrap "$1"/etc/apt/sources.list.d/*' \
        --customize-hook='printf "deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n" >"$1/etc/apt/sources.list"'
    docker import --change 'CMD ["bash"]' "$tarball" "$DEBIAN_SLIM_IMAGE" >>"$logfile" 2>&1 ||
        { log_tail "$logfile"; die "docker import $DEBIAN_SLIM_IMAGE failed"; }
    rm -f "$tarball"
}

# vardo-test/redis:7 — bookworm minbase + redis-server, for the compose stack's end-to-end test
build_redis_image() {
    local tarball=$DEV/build/redis-rootfs.tar logfile=$LOG/redis-image.log
    mmdebstrap_rootfs redis "$tarball" --include=redis-server
    docker import \
        --change 'CMD ["redis-server", "--protected-mode", "no"]' \
        --change 'EXPOSE 6379' \
        "$tarball" "$REDIS_IMAGE" >>"$logfile" 2>&1 ||
        { log_tail "$logfile"; die "docker import $REDIS_IMAGE failed"; }
    rm -f "$tarball"
    local out
    out=$(docker run --rm --network none "$REDIS_IMAGE" sh -c \
        'redis-server --daemonize yes >/dev/null && sleep 0.5 && redis-cli ping') || true
    if [[ $out != PONG ]]; then
        docker rmi "$REDIS_IMAGE" >/dev/null 2>&1 || true
        die "the freshly built $REDIS_IMAGE does not work (got: $out)"
    fi
}

# first start on an empty volume: initdb, role, database; a psql query through the socket
smoke_test_postgres_image() {
    local name=vardo-services-smoke-$$ ok=1 deadline
    docker run -d --name "$name" --network none -e POSTGRES_USER=smoke -e POSTGRES_PASSWORD=smoke \
        -e POSTGRES_DB=smokedb -v "$name:/var/lib/postgresql/data" "$POSTGRES_IMAGE" >/dev/null || ok=
    deadline=$((SECONDS + WAIT_SECONDS))
    until [[ -z $ok ]] || [[ $(docker exec "$name" psql -X -t -A -U smoke -d smokedb -c 'SELECT 40 + 2' \
        2>/dev/null) == 42 ]]; do
        if ((SECONDS >= deadline)); then ok=; fi
        sleep 0.5
    done
    if [[ -z $ok ]]; then docker logs --tail 30 "$name" >&2 || true; fi
    docker rm -f -v "$name" >/dev/null 2>&1 || true
    docker volume rm "$name" >/dev/null 2>&1 || true
    [[ -n $ok ]]
}

# the images missing, the mmdebstrap ones side by side (each waits mostly on the mirror)
service_images() {
    if image_present "$HELPER_IMAGE"; then
        say "image $HELPER_IMAGE: present"
    else
        build_helper_image
        say "image $HELPER_IMAGE: built"
    fi
    local i image builder pids=() names=() failed=
    for image in "$POSTGRES_IMAGE:build_postgres_image" "$DEBIAN_SLIM_IMAGE:build_debian_slim_image" \
        "$REDIS_IMAGE:build_redis_image"; do
        builder=${image##*:} image=${image%:*}
        if image_present "$image"; then
            say "image $image: present"
            continue
        fi
        ("$builder" && say "image $image: built") &
        pids+=($!) names+=("$image")
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed+=" ${names[$i]}"
    done
    [[ -z $failed ]] || die "could not build the image(s)$failed (see above)"
    rmdir "$DEV/build" 2>/dev/null || true
}
