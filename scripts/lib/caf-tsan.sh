# Sourced by scripts/soak after common.sh. Builds CAF 0.17.6 (core and io)
# with ThreadSanitizer from Debian's own source package, once, into a prefix
# under the repo.
#
# Why: Debian's libcaf_core is not instrumented, so TSan cannot see the
# acquire that pairs with each mailbox push. Every message handed from one
# actor to another then looks like a data race, and the only way to silence
# that with the system library is to suppress every stack through
# libcaf_core.so: every actor report. With CAF itself instrumented, the
# report is real or it is not there.
#
# cm_caf_tsan_prefix DIR: prints the prefix (DIR/prefix) after building it if
# its stamp is missing. Needs the Debian source of actor-framework, fetched
# with apt-get through a private sources list (the machine's own list is
# left alone).

CM_CAF_TSAN_VERSION=0.17.6

cm_caf_tsan_prefix() {
  local dir=$1 prefix="$1/prefix"
  if [ -f "$prefix/.built-$CM_CAF_TSAN_VERSION" ]; then
    echo "$prefix"
    return 0
  fi
  mkdir -p "$dir/apt/lists/partial" "$dir/apt/parts" "$dir/src"
  echo "deb-src http://deb.debian.org/debian bookworm main" >"$dir/apt/sources.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$dir/apt/sources.list"
                  -o "Dir::Etc::SourceParts=$dir/apt/parts"
                  -o "Dir::State::Lists=$dir/apt/lists")
  local tarball="$dir/src/actor-framework_$CM_CAF_TSAN_VERSION.orig.tar.gz"
  if [ ! -s "$tarball" ]; then
    cm_log "fetching the Debian source of CAF $CM_CAF_TSAN_VERSION (for ThreadSanitizer)" >&2
    apt-get "${apt_opts[@]}" update -qq >&2
    # Only the upstream tarball is needed; the mirror may lack the Debian
    # packaging tarball, so apt-get's exit code is not the test.
    (cd "$dir/src" && apt-get "${apt_opts[@]}" source --download-only -qq \
      "actor-framework=$CM_CAF_TSAN_VERSION-2.1" >&2 2>&1) || true
    [ -s "$tarball" ] || { cm_log "could not fetch $tarball" >&2; return 1; }
  fi
  local src="$dir/src/actor-framework-$CM_CAF_TSAN_VERSION"
  rm -rf "$src" "$dir/build" "$prefix"
  tar -xzf "$tarball" -C "$dir/src" || return 1
  # The one change Debian's packaging makes to the headers it installs (the
  # packaging tarball itself may be missing from the mirror): upstream
  # 0.17.6 does not compile with GCC 12 without it. Checked below: every
  # installed header must then equal Debian's, or the TSan build would not
  # be testing the library the service runs with.
  sed -i 's|^#include <cstring>$|#include <cstring>\n#include <limits>|' \
    "$src/libcaf_io/caf/io/network/receive_buffer.hpp"
  cm_log "building CAF $CM_CAF_TSAN_VERSION with ThreadSanitizer in $dir" >&2
  cmake -S "$dir/src/actor-framework-$CM_CAF_TSAN_VERSION" -B "$dir/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Debug -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
    "-DCMAKE_CXX_FLAGS=-fsanitize=thread -O1 -g -fno-omit-frame-pointer" \
    -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread \
    -DCAF_NO_EXAMPLES=yes -DCAF_NO_UNIT_TESTS=yes -DCAF_NO_TOOLS=yes \
    -DCAF_NO_OPENSSL=yes -DCAF_NO_OPENCL=yes -DCAF_NO_PYTHON=yes \
    -DCAF_NO_SUMMARY=yes -DCAF_NO_COMPILER_CHECK=yes >&2 || return 1
  cmake --build "$dir/build" --parallel "$(nproc)" >&2 || return 1
  cmake --install "$dir/build" >/dev/null || return 1
  # (CAF_NO_OPENSSL: the openssl module is not built, nor used by us.)
  if ! diff -r -q -x openssl "$prefix/include/caf" /usr/include/caf >&2; then
    cm_log "CAF headers built for TSan differ from Debian's /usr/include/caf" >&2
    return 1
  fi
  touch "$prefix/.built-$CM_CAF_TSAN_VERSION"
  echo "$prefix"
}
