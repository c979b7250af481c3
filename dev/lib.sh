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

ensure_redis() {
  ensure_pkg redis-server redis-server
  ensure_pkg redis-cli redis-tools
}
