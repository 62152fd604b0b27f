# Shared by scripts/run, scripts/test and scripts/bench. Source it; do not run it.
# Installs what is missing (Debian 12), builds, and manages the private
# PostgreSQL cluster.

CM_ROOT=${CM_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

# Debian packages the build, the server and the tests need.
CM_PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git ca-certificates curl openssl
  libcaf-dev libpistache-dev libsodium-dev libyaml-cpp-dev libjwt-dev
  nlohmann-json3-dev libcurl4-openssl-dev libssl-dev libpq-dev libspdlog-dev prometheus-cpp-dev librdkafka-dev
  libgtest-dev libgmock-dev
  postgresql postgresql-client
)

# Test-only Debian packages: promtool (package prometheus) checks what
# GET /metrics serves; chromium is the headless browser puppeteer-core
# drives through the Connect page (tests/e2e/connect_page.test.mjs).
CM_TEST_PACKAGES=(prometheus chromium)

# Node.js runs the OAuth end-to-end test's authorization server
# (oidc-provider). Debian's nodejs is enough; an existing node is kept.
cm_node_packages() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || echo "nodejs npm"
}

# The private PostgreSQL cluster scripts/run keeps for this checkout:
# .data/pg, or under /tmp when that path is too deep for a Unix socket
# (which must stay under ~100 bytes).
cm_local_pg_dir() {
  local pg="$CM_ROOT/.data/pg"
  if [ ${#pg} -gt 80 ]; then
    pg="/tmp/connector-manager-$(id -u)-$(echo "$CM_ROOT" | md5sum | cut -c1-8)"
  fi
  echo "$pg"
}

cm_log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs the packages that are not installed yet (apt-get update only when
# something is missing, so a second run is fast and offline-safe).
cm_install_deps() {
  local missing=() pkg
  for pkg in "${CM_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  cm_log "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  # Packages that ship a daemon (prometheus for promtool, postgresql) must
  # not start it: the scripts run private instances on loopback only. A
  # policy-rc.d answering 101 tells Debian's maintainer scripts so; one the
  # machine already has is left alone.
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    own_policy=1
    # Removed however the install ends (an interrupt included).
    # shellcheck disable=SC2064 # expanded now, while $sudo is in scope
    trap "$sudo rm -f $policy" EXIT
    # shellcheck disable=SC2064
    trap "$sudo rm -f $policy; exit 130" INT TERM
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
  if [ -n "$own_policy" ]; then
    $sudo rm -f "$policy"
    trap - EXIT INT TERM
  fi
  # Nor may such a daemon start at the next boot (promtool is all the tests
  # want of the prometheus package).
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for pkg in "${missing[@]}"; do
      [ "$pkg" = prometheus ] && $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
    done
  fi
  return $rc
}

# Paths under the checkout are hashed relative to it, and the build
# directory is left out of the hash, so a second clone (CI clones afresh)
# reuses what the first compiled. The cost: debug info of a cached object
# may name the other clone's directory.
cm_ccache_share_between_checkouts() {
  export CCACHE_BASEDIR="$CM_ROOT" CCACHE_NOHASHDIR=true
}

# cm_build BUILD_TYPE BUILD_DIR [extra cmake args...]
cm_build() {
  local type=$1 dir=$2
  shift 2
  export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
  cm_ccache_share_between_checkouts
  # The precompiled header is shared; ccache must accept it.
  export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  cm_log "building ($type) in $dir"
  cmake -S "$CM_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null
  cmake --build "$dir" --parallel "$(nproc)"
}

# The newest installed PostgreSQL server binaries.
cm_pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] || { echo "PostgreSQL server binaries not found" >&2; return 1; }
  echo "$bin"
}

# cm_sanitizer_env DIR: exports the sanitizer options for a run whose
# reports go to files under DIR (one per process that found something).
cm_sanitizer_env() {
  local dir=$1 supp="$CM_ROOT/tests/sanitizers"
  mkdir -p "$dir"
  export ASAN_OPTIONS="log_path=$dir/asan:detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=0"
  export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="log_path=$dir/ubsan:print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
  export TSAN_OPTIONS="log_path=$dir/tsan:halt_on_error=0:second_deadlock_stack=1:suppressions=$supp/tsan.supp"
}

# cm_sanitizer_canary BUILD DIR CHECK...: runs the build's sanitizer_canary
# once per CHECK (undefined, address, leak, thread) with the options
# cm_sanitizer_env set for DIR, and fails unless each run left its whole
# report (the headline, not just a summary line) under DIR; then empties
# DIR. Proves the collector below can see a report before a clean run is
# believed.
cm_sanitizer_canary() {
  local build=$1 dir=$2 check headline
  shift 2
  for check in "$@"; do
    case $check in
      undefined) headline="runtime error: signed integer overflow" ;;
      address) headline="ERROR: AddressSanitizer: heap-use-after-free" ;;
      leak) headline="ERROR: LeakSanitizer: detected memory leaks" ;;
      thread) headline="WARNING: ThreadSanitizer: data race" ;;
      *) cm_log "unknown sanitizer canary $check"; return 1 ;;
    esac
    rm -rf "${dir:?}"/*
    "$build/sanitizer_canary" "$check" >/dev/null 2>&1 || true
    if ! grep -qs "$headline" "$dir"/*; then
      cm_log "the $check sanitizer canary left no \"$headline\" under $dir: reports would go unseen"
      return 1
    fi
    cm_log "sanitizer canary ($check): report collected as expected"
  done
  rm -rf "${dir:?}"/*
}

# cm_sanitizer_reports DIR: prints every report written under DIR; fails if
# there is any.
cm_sanitizer_reports() {
  local dir=$1 found=0 report
  for report in "$dir"/*; do
    [ -s "$report" ] || continue
    found=1
    cm_log "sanitizer report: $report"
    head -n 60 "$report" >&2
  done
  [ $found -eq 0 ] && cm_log "no sanitizer reports"
  return $found
}
