# Shared by dev/up, dev/down and dev/test. Sourced, not run.

# Installs the Debian packages given when their command is missing.
# usage: ensure_pkg <command> <package>
ensure_pkg() {
  command -v "$1" >/dev/null 2>&1 && return 0
  install_pkg "$2"
}

# Installs Debian packages unconditionally.
install_pkg() {
  echo "==> installing $*"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# nginx for the edge (dev/up, the edge tests), without starting the system's
# own nginx: a package's post-install would start it on port 80, so a
# policy-rc.d that says no stands for the install (and goes after).
ensure_nginx() {
  { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } && return 0
  local sudo="" policy=/usr/sbin/policy-rc.d created=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    created=1
  fi
  install_pkg nginx
  if [ -n "$created" ]; then $sudo rm -f "$policy"; fi
}

# The browser client (web/): its npm packages from the lockfile (npm ci,
# again only when the lockfile changed), then the bundle in web/dist.
# Node.js 20 comes with the machine (or Debian's nodejs package).
build_web() {
  ensure_pkg node nodejs
  ensure_pkg npm npm
  local stamp=web/node_modules/.lock-installed
  if [ ! -f "$stamp" ] || ! cmp -s web/package-lock.json "$stamp"; then
    echo "==> installing the web client's packages (npm ci)"
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
    cp web/package-lock.json "$stamp"
  fi
  echo "==> building the web client (web/dist)"
  (cd web && npm run --silent build)
}

# Debian's Chromium for the browser tests (playwright-core drives it; no
# browser is downloaded).
ensure_chromium() {
  { command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; } && return 0
  install_pkg chromium
}

ensure_redis() {
  ensure_pkg redis-server redis-server
  ensure_pkg redis-cli redis-tools
}
