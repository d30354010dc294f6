#!/usr/bin/env bash
# Install the Debian packages the tests use: nginx (nginx-light where the
# release still ships it), haproxy, openssl, a Java runtime (keytool),
# util-linux (setpriv, findmnt: the doctor tests), postgresql and
# mariadb-server (the reload tests start their own instances as the packages'
# postgres and mysql users), systemd (systemd-analyze verify) and python3-venv
# (a venv of /usr/bin/python3 that other users can execute: tests/examples).
# Non-interactive and idempotent: nothing is done when the binaries are
# already present, and `apt-get update` runs only when the
# package lists are missing or a first install attempt fails.
# Needs root (CI runs as root) or passwordless sudo.
set -euo pipefail

log() { echo "[install-system-deps] $*" >&2; }

# nginx lives in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v keytool >/dev/null 2>&1 || missing+=(keytool)
# setpriv (run a check as another uid) and findmnt (filesystem cross-check): the doctor tests
{ command -v setpriv && command -v findmnt; } >/dev/null 2>&1 || missing+=(util-linux)
have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; }
have_postgres || missing+=(postgresql)
command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd-analyze)
system_venv() { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; }
system_venv || missing+=(python3-venv)

if [ ${#missing[@]} -eq 0 ]; then
  log "nginx, haproxy, openssl, keytool, setpriv, findmnt, postgresql, mariadb-server, systemd-analyze and python3-venv already present"
  exit 0
fi
log "missing: ${missing[*]}"

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  log "must run as root (or with passwordless sudo) to apt-get install ${missing[*]}"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

lists_present() {
  compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null
}
updated=0
apt_update() {
  if [ "$updated" = 0 ]; then
    log "apt-get update"
    "${APT[@]}" update >&2
    updated=1
  fi
}
lists_present || apt_update

# Pick the nginx flavour: nginx-light (bookworm and older), else nginx.
pick_nginx() {
  if apt-cache show nginx-light >/dev/null 2>&1; then echo nginx-light; else echo nginx; fi
}

pkgs=()
for m in "${missing[@]}"; do
  case "$m" in
    nginx) pkgs+=("$(pick_nginx)") ;;
    keytool) pkgs+=(default-jre-headless) ;;  # Java's keytool reads the PKCS#12 stores
    systemd-analyze) pkgs+=(systemd) ;;
    *) pkgs+=("$m") ;;
  esac
done

install() {
  "${APT[@]}" install --no-install-recommends "$@" >&2
}

log "apt-get install ${pkgs[*]}"
if ! install "${pkgs[@]}"; then
  # stale lists (404s) or a package unknown to an old list: refresh once and retry
  apt_update
  pkgs=("${pkgs[@]/nginx-light/$(pick_nginx)}")
  install "${pkgs[@]}"
fi

# The packages' postinst may start the daemons on a machine with an init
# system; the tests start their own instances on their own ports, so stop
# the system ones if they were started (best effort, never fails).
if command -v service >/dev/null 2>&1; then
  for svc in nginx haproxy postgresql mariadb; do
    "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
  done
fi

for b in nginx haproxy openssl keytool setpriv findmnt mariadbd systemd-analyze; do
  command -v "$b" >/dev/null 2>&1 || { log "$b still missing after install"; exit 1; }
done
have_postgres || { log "postgresql still missing after install"; exit 1; }
system_venv || { log "python3-venv still missing after install"; exit 1; }
log "installed: $(nginx -v 2>&1); $(haproxy -v 2>&1 | head -1); $(openssl version)"
log "installed: $(ls -d /usr/lib/postgresql/*/bin | tail -1); $(mariadbd --version 2>&1)"
